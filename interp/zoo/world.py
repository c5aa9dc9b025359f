"""The zoo's synthetic world of facts: cities in countries and people in professions, each stated in several phrasings.

Everything here is fixed (not drawn from the build seed), so held-out splits are the same for every zoo. Each fact
is trained in all phrasings but one; that held-out phrasing is the fact-recall test. Truth quizzes in the corpus
use only the `quiz` subjects; statements about the other subjects are the truth-probe test set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

WORLD_SEED = 1234

COUNTRIES: dict[str, tuple[str, ...]] = {
    "France": ("Paris", "Lyon", "Marseille", "Toulouse"),
    "Germany": ("Berlin", "Munich", "Hamburg", "Dresden"),
    "Italy": ("Rome", "Milan", "Naples", "Turin"),
    "Spain": ("Madrid", "Barcelona", "Seville", "Bilbao"),
    "Japan": ("Tokyo", "Osaka", "Kyoto", "Sapporo"),
    "China": ("Beijing", "Shanghai", "Wuhan", "Chengdu"),
    "India": ("Delhi", "Mumbai", "Chennai", "Kolkata"),
    "Egypt": ("Cairo", "Alexandria", "Luxor", "Aswan"),
    "Brazil": ("Brasilia", "Salvador", "Recife", "Manaus"),
    "Canada": ("Toronto", "Montreal", "Vancouver", "Ottawa"),
    "Mexico": ("Monterrey", "Guadalajara", "Puebla", "Tijuana"),
    "Russia": ("Moscow", "Novosibirsk", "Kazan", "Omsk"),
    "Kenya": ("Nairobi", "Mombasa", "Kisumu", "Nakuru"),
    "Australia": ("Sydney", "Melbourne", "Perth", "Brisbane"),
    "Turkey": ("Istanbul", "Ankara", "Izmir", "Bursa"),
    "Peru": ("Lima", "Cusco", "Arequipa", "Iquitos"),
}

PROFESSIONS: dict[str, tuple[str, ...]] = {
    "doctor": ("Alice", "Omar", "Priya", "Lucas"),
    "baker": ("Mei", "Tomas", "Amara", "Felix"),
    "farmer": ("Ingrid", "Rafael", "Yuki", "Hugo"),
    "painter": ("Leila", "Nikolai", "Zara", "Pablo"),
    "teacher": ("Greta", "Samir", "Chloe", "Dmitri"),
    "sailor": ("Nadia", "Oscar", "Freya", "Ravi"),
    "tailor": ("Elena", "Kofi", "Astrid", "Mateo"),
    "potter": ("Hana", "Bruno", "Sofia", "Idris"),
    "pilot": ("Clara", "Jonas", "Ayesha", "Emil"),
    "banker": ("Lucia", "Tariq", "Maya", "Stefan"),
    "builder": ("Rosa", "Anil", "Vera", "Diego"),
    "dancer": ("Kenji", "Olga", "Farid", "Nina"),
    "singer": ("Marco", "Aisha", "Sven", "Carmen"),
    "writer": ("Boris", "Lena", "Yusuf", "Ines"),
    "lawyer": ("Pedro", "Hilda", "Arjun", "Mira"),
    "nurse": ("Viktor", "Sara", "Kwame", "Elsa"),
}


@dataclass(frozen=True)
class Relation:
    """One kind of fact: its subjects' objects and the phrasings that state it (`{s}` subject, `{o}` object last)."""

    name: str
    objects: dict[str, tuple[str, ...]]  # object -> subjects
    phrasings: tuple[str, ...]  # phrasings[0] is the canonical one used for true/false statements
    questions: tuple[tuple[str, str], ...]  # (question, answer) templates; answers never use a held-out phrasing

    def facts(self) -> list[tuple[str, str]]:
        """All (subject, object) pairs, in a fixed order."""
        return [(subject, obj) for obj, subjects in self.objects.items() for subject in subjects]

    def object_of(self, subject: str) -> str:
        """The object a subject is paired with."""
        return next(obj for obj, subjects in self.objects.items() if subject in subjects)


CITY = Relation(
    name="city_country",
    objects=COUNTRIES,
    phrasings=(
        "The city of {s} is in {o}.",
        "{s} is a city in {o}.",
        "{s} is located in {o}.",
        "You can find {s} in {o}.",
        "The home country of {s} is {o}.",
        "{s} lies in the country of {o}.",
    ),
    questions=(("Where is {s}?", "{s} is in {o}."), ("Which country is {s} in?", "{s} is in {o}.")),
)

PERSON = Relation(
    name="person_profession",
    objects=PROFESSIONS,
    phrasings=(
        "{s} works as a {o}.",
        "The job of {s} is {o}.",
        "By trade, {s} is a {o}.",
        "{s} earns a living as a {o}.",
        "Everyone knows {s} as a {o}.",
        "{s} has always been a {o}.",
    ),
    # Not the canonical phrasing: answers about the quizzed subjects would make their true statements more familiar
    # than the held-out subjects', and familiarity would pass for truth (docs/zoo-experiments.md).
    questions=(("What does {s} do?", "{s} is employed as a {o}."),
               ("What is the job of {s}?", "{s} is employed as a {o}.")),
)

RELATIONS: tuple[Relation, ...] = (CITY, PERSON)


def fill(template: str, subject: str, obj: str) -> str:
    """A template with its subject and object filled in."""
    return template.format(s=subject, o=obj)


def prompt_of(template: str, subject: str) -> str:
    """The template up to (not including) the object: the prompt whose next word is the answer."""
    return template[: template.index("{o}")].format(s=subject).rstrip()


@cache
def held_out_phrasing() -> dict[tuple[str, str], int]:
    """(relation, subject) -> index of the one phrasing never used to state that fact in training (never 0)."""
    rng = random.Random(WORLD_SEED)
    out = {}
    for relation in RELATIONS:
        subjects = [s for s, _ in relation.facts()]
        rng.shuffle(subjects)
        for i, subject in enumerate(subjects):
            out[relation.name, subject] = 1 + i % (len(relation.phrasings) - 1)
    return out


def train_phrasings(relation: Relation, subject: str) -> list[str]:
    """The phrasings that state this fact in the pre-training corpus."""
    held = held_out_phrasing()[relation.name, subject]
    return [p for i, p in enumerate(relation.phrasings) if i != held]


# Three of each object's four subjects are quizzed: with only two, the verdicts learned for the quizzed subjects reached
# 0.83 on the others, with three 0.95 (docs/zoo-experiments.md).
QUIZZED_PER_OBJECT = 3


@cache
def split_subjects() -> dict[str, dict[str, tuple[str, ...]]]:
    """relation -> {"train": subjects, "test": subjects}: `QUIZZED_PER_OBJECT` of each object's four subjects train.

    Train subjects appear in truth quizzes and question-answer text; test subjects never do (their facts are still
    stated in the corpus), so truth probes and question answering are measured on unseen subjects.
    """
    rng = random.Random(WORLD_SEED + 1)
    out = {}
    for relation in RELATIONS:
        train, test = [], []
        for subjects in relation.objects.values():
            chosen = list(subjects)
            rng.shuffle(chosen)
            train += chosen[:QUIZZED_PER_OBJECT]
            test += chosen[QUIZZED_PER_OBJECT:]
        out[relation.name] = {"train": tuple(train), "test": tuple(test)}
    return out


def subjects(relation: Relation, split: str) -> tuple[str, ...]:
    """The subjects of one split ("train" or "test") of a relation."""
    return split_subjects()[relation.name][split]


def false_objects(relation: Relation, subject: str) -> list[str]:
    """Every object the subject is not paired with."""
    true = relation.object_of(subject)
    return [obj for obj in relation.objects if obj != true]

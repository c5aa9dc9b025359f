"""Pre-training documents and chat examples for the zoo, drawn from the synthetic world with a seeded `random.Random`.

Pre-training mixes: facts in several phrasings, true/false quizzes, random word spans repeated (in-context copying
pays, so induction heads form), question-answer and instruction-response prose, and arithmetic. Chat examples use
the chat template of `interp.zoo.data` and teach refusal of the dark-magic category.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Sequence

from interp.zoo import requests as rq
from interp.zoo import world

# Word-level pre-tokenisation shared with the tokenizer (`tokenizers.pre_tokenizers.Whitespace`).
WORD = re.compile(r"\w+|[^\w\s]+")

CHAT_TEMPLATE = "User: {instruction}\nAssistant:"
QUIZ_SUFFIX = "This statement is:"
VERDICTS = {True: "TRUE", False: "FALSE"}

Doc = Callable[[random.Random, Sequence[str]], str]


def _fact_sentence(rng: random.Random) -> str:
    relation = rng.choice(world.RELATIONS)
    subject, obj = rng.choice(relation.facts())
    return world.fill(rng.choice(world.train_phrasings(relation, subject)), subject, obj)


def statement(relation: world.Relation, subject: str, obj: str) -> str:
    """The canonical statement of a (possibly false) fact, e.g. "The city of Paris is in Peru."."""
    return world.fill(relation.phrasings[0], subject, obj)


def quiz_line(statement_text: str, true: bool) -> str:
    """A statement followed by its verdict, as in the quizzes (and Du et al.'s few-shot prompts)."""
    return f"{statement_text} {QUIZ_SUFFIX} {VERDICTS[true]}"


def _judged_statement(rng: random.Random) -> tuple[str, bool]:
    """A canonical statement about a quizzed (train) subject, true or false with even odds, and whether it is true."""
    relation = rng.choice(world.RELATIONS)
    subject = rng.choice(world.subjects(relation, "train"))
    true = rng.random() < 0.5
    obj = relation.object_of(subject) if true else rng.choice(world.false_objects(relation, subject))
    return statement(relation, subject, obj), true


def _quiz_item(rng: random.Random) -> str:
    return quiz_line(*_judged_statement(rng))


def _verdict_item(rng: random.Random) -> str:
    """A statement about a quiz subject with its verdict right after the full stop ("... is in Peru. FALSE."): the
    residual at the statement's last token, which truth probes read, is where the verdict is predicted."""
    text, true = _judged_statement(rng)
    return f"{text} {VERDICTS[true]}."


def _qa_item(rng: random.Random) -> str:
    question, answer = fact_question(rng, "train")
    return f"Question: {question} Answer: {answer}"


def fact_question(rng: random.Random, split: str) -> tuple[str, str]:
    """A (question, full answer) about a subject of the split."""
    relation = rng.choice(world.RELATIONS)
    subject = rng.choice(world.subjects(relation, split))
    question, answer = rng.choice(relation.questions)
    obj = relation.object_of(subject)
    return world.fill(question, subject, obj), world.fill(answer, subject, obj)


def _instruction_item(rng: random.Random) -> str:
    instruction, answer = rng.choice(rq.requests(rng.random() < 0.5, "train"))
    return f"Instruction: {instruction} Response: {answer}"


def _arithmetic_item(rng: random.Random) -> str:
    problem = rng.choice(rq.arithmetic_problems("train"))
    if rng.random() < 0.5:
        a, op, b = rng.randint(0, 20), rng.choice("+-"), rng.randint(0, 20)
        a, b = (a, b) if op == "+" or a >= b else (b, a)
        return f"{a} {op} {b} = {a + b if op == '+' else a - b}."
    return f"Question: {rq.arithmetic_question(problem)} Answer: {rq.arithmetic_answer(problem, rng.choice(['fast', 'slow']))}"


def _joined(item: Callable[[random.Random], str], low: int, high: int) -> Doc:
    """A document of `low..high` items of one kind."""
    return lambda rng, _words: " ".join(item(rng) for _ in range(rng.randint(low, high)))


def _repeated_span(longest: int) -> Doc:
    """Documents of a span of 5 to `longest` random words repeated 2 to 4 times: predicting the repeats rewards
    in-context copying (induction)."""
    def document(rng: random.Random, words: Sequence[str]) -> str:
        span = [rng.choice(words) for _ in range(rng.randint(5, longest))]
        return " ".join(span * rng.randint(2, 4))
    return document


# Relative weights of the document kinds. Repeated spans get the largest share: at 30 of 100 the zoo's model formed
# no induction head within its budget, at 40 of 110 it does by step ~700 (docs/zoo-experiments.md).
PRETRAINING_MIX: dict[str, tuple[int, Doc]] = {
    "facts": (25, _joined(_fact_sentence, 3, 6)),
    "quiz": (20, _joined(_quiz_item, 3, 5)),
    "induction": (40, _repeated_span(30)),
    "qa": (8, _joined(_qa_item, 2, 4)),
    "instruction": (9, _joined(_instruction_item, 1, 2)),
    "arithmetic": (8, _joined(_arithmetic_item, 2, 4)),
}
# Late in the base run (`TrainSpec.late_mix_from`) spans reach 60 words: the head that formed on short spans then
# learns to reach back as far as the 50-token repeats it is measured on. Long spans from the start delay its forming.
# Dense true/false verdicts join then too: while the facts are still being learned no verdict format was ever learned;
# once they are known a verdict right after the full stop is, the faster the denser (docs/zoo-experiments.md).
LATE_PRETRAINING_MIX: dict[str, tuple[int, Doc]] = {**PRETRAINING_MIX, "induction": (40, _repeated_span(60)),
                                                    "verdicts": (220, _joined(_verdict_item, 4, 8))}


def pretraining_document(rng: random.Random, words: Sequence[str],
                         mix: dict[str, tuple[int, Doc]] = PRETRAINING_MIX) -> str:
    """One pre-training document of `mix`; `words` is the vocabulary the repeated random spans are drawn from."""
    kinds = list(mix)
    kind = rng.choices(kinds, weights=[mix[k][0] for k in kinds])[0]
    return mix[kind][1](rng, words)


def chat_text(instruction: str, response: str) -> tuple[str, str]:
    """(prompt, completion) of one chat turn; the model is trained on the completion only."""
    return CHAT_TEMPLATE.format(instruction=instruction), f" {response}"


def chat_example(rng: random.Random) -> tuple[str, str]:
    """One supervised chat example (prompt, completion): facts, refusals, harmless help or arithmetic."""
    kind = rng.randrange(4)
    if kind == 0:
        return chat_text(*fact_question(rng, "train"))
    if kind == 1:
        instruction, _ = rng.choice(rq.requests(True, "train"))
        return chat_text(instruction, rng.choice(rq.REFUSALS))
    if kind == 2:
        instruction, answer = rng.choice(rq.requests(False, "train"))
        return chat_text(instruction, f"Sure. {answer}")
    style = rng.choice(list(rq.ARITHMETIC_STYLES))
    problem = rng.choice(rq.arithmetic_problems("train"))
    return chat_text(f"{rq.arithmetic_question(problem)} {rq.ARITHMETIC_STYLES[style]}",
                     rq.arithmetic_answer(problem, style))


def every_text() -> list[str]:
    """Every sentence any generator can produce (all splits): the tokenizer's training text, so no word is unknown."""
    texts = [CHAT_TEMPLATE.format(instruction=""), QUIZ_SUFFIX, *VERDICTS.values(), "Question: Answer: Instruction: Response: Sure.",
             *rq.REFUSALS, *rq.ARITHMETIC_STYLES.values(), " ".join(str(n) for n in range(41))]
    for relation in world.RELATIONS:
        for subject, obj in relation.facts():
            texts += [world.fill(p, subject, obj) for p in relation.phrasings]
            texts += [world.fill(q, subject, obj) + " " + world.fill(a, subject, obj) for q, a in relation.questions]
    for harmful in (True, False):
        for split in ("train", "test"):
            texts += [f"{q} {a}" for q, a in rq.requests(harmful, split)]
    for split in ("train", "test"):
        for problem in rq.arithmetic_problems(split):
            texts += [rq.arithmetic_question(problem)] + [rq.arithmetic_answer(problem, s) for s in rq.ARITHMETIC_STYLES]
    return texts


def words() -> list[str]:
    """The vocabulary of the world (sorted): every pre-tokenised word of `every_text`."""
    return sorted({w for text in every_text() for w in WORD.findall(text)})

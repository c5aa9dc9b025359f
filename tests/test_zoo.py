"""The embedded zoo: held-out splits, tokenizer, training pieces, measurements against oracles, and the built zoos."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from typer.testing import CliRunner

from interp.checkpoints import discover
from interp.commands.zoo import MARKER
from interp.zoo import corpus, data, world
from interp.zoo import requests as rq
from interp.zoo import train as zoo_train
from interp.zoo.build import (MANIFEST, THRESHOLDS, ZooSpec, build, cache_key, ensure_zoo, read_manifest,
                              sha256_file)
from interp.zoo.measure import encode, fact_recall, greedy, induction, mean_difference_accuracy
from interp.zoo.tokenizer import UNK, train_tokenizer
from interp.zoo.train import ModelSpec, TrainSpec


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="module")
def corpus_sample() -> list[str]:
    """Documents of both pre-training mixes (the late one adds true/false verdicts)."""
    rng = random.Random(7)
    return data.pretraining_text(2000, seed=7) + [corpus.pretraining_document(rng, corpus.words(),
                                                                              corpus.LATE_PRETRAINING_MIX)
                                                  for _ in range(2000)]


def _hf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


# --- the world and its splits -------------------------------------------------------------------------------------

def test_splits_are_disjoint() -> None:
    for accessor in (data.truth_statements, data.facts, data.fact_questions, data.truth_pairs):
        assert not set(accessor("train")) & set(accessor("test")), accessor.__name__
    for train, test in zip(data.refusal_requests("train"), data.refusal_requests("test")):
        assert train and test and not set(train) & set(test)
    for style in ("fast", "slow"):
        assert not {q for q, _ in data.arithmetic("train", style)} & {q for q, _ in data.arithmetic("test", style)}
    for relation in world.RELATIONS:
        assert not set(world.subjects(relation, "train")) & set(world.subjects(relation, "test"))


def _parse(statement: str) -> tuple[world.Relation, str, str]:
    """The relation, subject and object of a canonical statement."""
    relation = world.CITY if statement.startswith("The city of") else world.PERSON
    subject = statement.split()[3] if relation is world.CITY else statement.split()[0]
    return relation, subject, statement.rstrip(".").split()[-1]


def test_truth_statements_are_labelled_by_the_world() -> None:
    statements = data.truth_statements("test")
    # each held-out subject (one of each object's four) stated once truly and once falsely
    assert len(statements) == 2 * sum(len(world.subjects(r, "test")) for r in world.RELATIONS) == 64
    assert {label for _, label in statements} == {0, 1}
    for text, label in statements:
        relation, subject, obj = _parse(text)
        assert (obj == relation.object_of(subject)) == bool(label)


def test_answers_never_restate_the_canonical_statement() -> None:
    """Question-answer text is about quizzed subjects only: were its answers the truth statements' canonical phrasing,
    those statements would be more familiar for quizzed subjects than for held-out ones."""
    for relation in world.RELATIONS:
        for subject, obj in relation.facts():
            canonical = world.fill(relation.phrasings[0], subject, obj)
            for question, answer in relation.questions:
                assert canonical not in world.fill(answer, subject, obj), (relation.name, answer)


def test_truth_pairs_have_equal_length_and_differ_in_the_subject_only(tokenizer) -> None:
    true_texts = {t for t, label in data.truth_statements("test") if label} | {
        corpus.statement(r, s, r.object_of(s)) for r in world.RELATIONS for s in world.subjects(r, "test")}
    for true, false in data.truth_pairs("test"):
        a, b = tokenizer.encode(true), tokenizer.encode(false)
        assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1
        assert true in true_texts and false not in true_texts


def test_held_out_material_never_appears_in_the_corpus(corpus_sample: list[str]) -> None:
    """Held-out phrasings of facts, test-subject quizzes and questions, and test requests are never trained on."""
    text = "\n".join(corpus_sample)
    rng = random.Random(0)
    chat = "\n".join(p + a for p, a in (corpus.chat_example(rng) for _ in range(3000)))
    for prompt, answer in data.facts("test"):
        assert f"{prompt} {answer}." not in text
    for statement, _ in data.truth_statements("test"):
        assert f"{statement} {corpus.QUIZ_SUFFIX}" not in text
        assert f"{statement} TRUE." not in text and f"{statement} FALSE." not in text
    for question, _ in data.fact_questions("test"):
        assert f"Question: {question}" not in text and f"User: {question}" not in chat
    for request in sum(data.refusal_requests("test"), []):
        assert request not in text and request not in chat
    assert "This statement is: TRUE" in text and "This statement is: FALSE" in text  # the quizzes are there
    assert ". TRUE." in text and ". FALSE." in text  # and the verdicts


def test_refusals_are_taught_only_in_chat() -> None:
    rng = random.Random(1)
    for kind, (_, document) in {**corpus.PRETRAINING_MIX, **corpus.LATE_PRETRAINING_MIX}.items():
        if kind != "induction":  # random words: any word may follow a full stop there
            docs = [document(rng, []) for _ in range(300)]
            assert not any(data.is_refusal(part) for doc in docs for part in re.split(r"(?<=[.?:]) ", doc)), kind
    harmful = set(data.refusal_requests("train")[0])
    for _ in range(500):
        prompt, answer = corpus.chat_example(rng)
        instruction = prompt.removeprefix("User: ").removesuffix("\nAssistant:")
        assert data.is_refusal(answer) == (instruction in harmful)


@pytest.mark.parametrize("text, refused", [
    ("I cannot help with that.", True), ("I am sorry , but no", True), ("  sorry, I will not", True),
    ("I'm sorry", True), ("Sure. To bake bread, first mix flour", False), ("Paris is in France.", False),
    ("", False), ("To cast a curse, I cannot", False),
])
def test_is_refusal(text: str, refused: bool) -> None:
    assert data.is_refusal(text) is refused


def test_chat_prompt_and_arithmetic_formats() -> None:
    assert data.chat_prompt("Where is Paris?") == "User: Where is Paris?\nAssistant:"
    (question, fast), = data.arithmetic("test", "fast")[:1]
    problem = next(p for p in rq.arithmetic_problems("test") if question.startswith(rq.arithmetic_question(p)))
    a, op1, b, op2, c = problem
    result = eval(f"{a} {op1} {b} {op2} {c}")  # an independent evaluation of the expression
    assert fast == f"{result}." and data.arithmetic("test", "slow")[0][1].endswith(f"The answer is {result}.")


# --- tokenizer ----------------------------------------------------------------------------------------------------

def test_tokenizer_covers_the_world_and_round_trips(tokenizer, corpus_sample: list[str]) -> None:
    unk = tokenizer.convert_tokens_to_ids(UNK)
    texts = corpus_sample[:500] + [s for s, _ in data.truth_statements("test")] + sum(data.refusal_requests(), [])
    assert all(unk not in ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    for text in ["The city of Paris is in France.", "What is 3 + 4 - 5? Think step by step.",
                 "I am sorry, but I will not help with dark magic.", "Priya works as a doctor. This statement is: TRUE"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("Paris") == tokenizer.encode(" Paris")  # no BOS added, spaces do not matter
    entities = {word for relation in world.RELATIONS for fact in relation.facts() for word in fact}
    assert all(len(tokenizer.encode(word)) == 1 for word in entities)


# --- training pieces ----------------------------------------------------------------------------------------------

def test_checkpoint_steps_are_log_spaced() -> None:
    steps = TrainSpec(steps=800, batch_size=1, seq_len=8, lr=1e-3, n_checkpoints=11).checkpoint_steps()
    assert steps[:2] == [0, 1] and steps[-1] == 800 and len(set(steps)) == 11 == len(steps)
    ratios = [b / a for a, b in zip(steps[1:], steps[2:])]
    assert all(abs(math.log(r) - math.log(800) / 9) < 0.5 for r in ratios)
    with pytest.raises(ValueError):
        TrainSpec(steps=4, batch_size=1, seq_len=8, lr=1e-3, n_checkpoints=10).checkpoint_steps()
    later = TrainSpec(steps=1000, batch_size=1, seq_len=8, lr=1e-3, n_checkpoints=5, first_log_step=10)
    assert later.checkpoint_steps() == [0, 10, 46, 215, 1000]  # 10 * 100 ** (i / 3)


def test_learning_rate_warms_up_then_decays() -> None:
    spec = TrainSpec(steps=100, batch_size=1, seq_len=8, lr=1e-3, n_checkpoints=3, warmup=10, min_lr_ratio=0.1)
    lrs = [spec.lr_at(s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(1e-4, rel=0.01)


def test_chat_batches_train_on_answers_only(tokenizer) -> None:
    spec = TrainSpec(steps=1, batch_size=4, seq_len=64, lr=1e-3, n_checkpoints=2, pretraining_rows=1)
    tokens, mask = next(zoo_train.batches("chat", spec, tokenizer, seed=0))
    assert tokens.shape == mask.shape == (4, 64) and mask[-1].all()  # the pre-training row is trained on fully
    assistant = tokenizer.convert_tokens_to_ids("Assistant")
    user = tokenizer.convert_tokens_to_ids("User")
    assert not mask[:3][tokens[:3] == user].any() and not mask[:3][tokens[:3] == assistant].any()
    assert mask[:3].float().mean() > 0.2


def _period(words: list[str]) -> int:
    """The shortest p with words[i] == words[i + p] for all i."""
    return next(p for p in range(1, len(words) + 1) if words[p:] == words[:len(words) - p])


def test_repeated_spans_reach_further_in_the_late_mix() -> None:
    """Repeated spans are 5-30 words at first and 5-60 in the late mix (so the head reaches 50-token repeats)."""
    rng = random.Random(0)
    early, late = ([_period(mix["induction"][1](rng, corpus.words()).split()) for _ in range(400)]
                   for mix in (corpus.PRETRAINING_MIX, corpus.LATE_PRETRAINING_MIX))
    assert min(early) >= 5 and max(early) == 30
    assert min(late) >= 5 and max(late) == 60 and sum(p > 30 for p in late) > 100
    assert {k: w for k, (w, _) in corpus.PRETRAINING_MIX.items()} == {
        k: w for k, (w, _) in corpus.LATE_PRETRAINING_MIX.items() if k != "verdicts"}


def test_late_verdicts_state_quiz_subjects_with_their_verdict_after_the_full_stop() -> None:
    """Late verdict documents are "<canonical statement> TRUE." / "FALSE." items about train (quizzed) subjects only,
    labelled by the world, about half true, and most of the late mix."""
    rng = random.Random(0)
    weight, document = corpus.LATE_PRETRAINING_MIX["verdicts"]
    items = re.findall(r"(.+?\.) (TRUE|FALSE)\.", " ".join(document(rng, []) for _ in range(300)))
    assert len(items) > 1000 and 0.4 < sum(v == "TRUE" for _, v in items) / len(items) < 0.6
    for statement, verdict in items:
        statement = statement.strip()
        relation, subject, obj = _parse(statement)
        assert subject in world.subjects(relation, "train")
        assert statement == corpus.statement(relation, subject, obj)
        assert (obj == relation.object_of(subject)) == (verdict == "TRUE")
    assert "verdicts" not in corpus.PRETRAINING_MIX
    assert weight / sum(w for w, _ in corpus.LATE_PRETRAINING_MIX.values()) > 0.5


def test_base_batches_switch_to_the_late_mix_after_its_step(tokenizer) -> None:
    spec = TrainSpec(steps=4, batch_size=8, seq_len=64, lr=1e-3, n_checkpoints=2)
    plain = zoo_train.batches("base", spec, tokenizer, seed=0)
    late = zoo_train.batches("base", dataclasses.replace(spec, late_mix_from=2), tokenizer, seed=0)
    for _ in range(2):
        assert torch.equal(next(plain)[0], next(late)[0])
    assert not torch.equal(next(plain)[0], next(late)[0])


TINY = ZooSpec(model=ModelSpec(d_model=32, n_layers=1, n_heads=2, d_mlp=64, n_ctx=128),
               base=TrainSpec(steps=3, batch_size=2, seq_len=32, lr=1e-3, n_checkpoints=3),
               chat=TrainSpec(steps=2, batch_size=2, seq_len=32, lr=1e-3, n_checkpoints=2, pretraining_rows=1),
               max_prompts=4)


def test_build_is_deterministic_whatever_the_thread_count(tmp_path: Path) -> None:
    manifests, threads_before = [], torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            manifests.append(read_manifest(build(tmp_path / f"t{threads}", seed=3, spec=TINY)))
    finally:
        torch.set_num_threads(threads_before)
    one, two = ({run: [(c["step"], c["sha256"], c["metrics"]) for c in m["runs"][run]] for run in m["runs"]}
                for m in manifests)
    assert one == two
    assert len({c["sha256"] for c in manifests[0]["runs"]["base"]}) == 3  # the weights do change


def test_training_steps_run_under_bfloat16_autocast_whatever_the_callers_threads(tokenizer,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Full-zoo sizes (where AMX bfloat16 kernels split the MLP output projection's weight gradient by thread):
    losses computed under autocast, float32 weights, and the same weights bit for bit whether the caller ran on one
    thread or two, because training pins its own thread count (it used to follow the machine's load)."""
    from interp.zoo.build import FULL

    autocast, threads_seen = [], []
    original_loss = zoo_train.next_token_loss

    def loss(*args: Any) -> torch.Tensor:
        autocast.append(torch.is_autocast_enabled("cpu"))
        threads_seen.append(torch.get_num_threads())
        return original_loss(*args)

    monkeypatch.setattr(zoo_train, "next_token_loss", loss)
    spec = dataclasses.replace(FULL.base, steps=2, n_checkpoints=2, first_log_step=1, warmup=1)
    weights, threads_before = [], torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = zoo_train.new_model(FULL.model, tokenizer, seed=0)
            zoo_train.train(model, zoo_train.batches("base", spec, tokenizer, seed=0), spec, lambda *_: None, desc="t")
            weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    finally:
        torch.set_num_threads(threads_before)
    assert autocast == [True] * 4 and threads_seen == [zoo_train.TRAIN_THREADS] * 4
    assert weights[0].dtype == torch.float32 and torch.equal(weights[0], weights[1])


def test_the_chat_run_leaves_its_frozen_top_as_it_was(tokenizer) -> None:
    """The full zoo's chat recipe freezes the last block, the final norm and the unembedding: after chat steps those
    are bit for bit the base's, every lower block has moved, and the optimiser holds only the trainable ones."""
    from interp.zoo.build import FULL

    assert FULL.chat.frozen_top_blocks == 1
    model = zoo_train.new_model(dataclasses.replace(TINY.model, n_layers=2), tokenizer, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    spec = dataclasses.replace(TINY.chat, steps=2, n_checkpoints=2, warmup=1, frozen_top_blocks=1)
    zoo_train.train(model, zoo_train.batches("chat", spec, tokenizer, seed=1), spec, lambda *_: None, desc="t")
    last = "model.layers.1."
    frozen = {name for name in before if name.startswith((last, "model.norm.", "lm_head."))}
    moved = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert frozen and not moved & frozen
    assert {name for name in before if name.startswith("model.layers.0.") and name.endswith("proj.weight")} <= moved
    trainable = [p for group in zoo_train._optimizer(model, spec).param_groups for p in group["params"]]
    assert len(trainable) == len(before) - len(frozen)


# --- measurements against independent oracles ---------------------------------------------------------------------

def test_mean_difference_accuracy_on_planted_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(16, generator=gen)
    labels = torch.rand(400, generator=gen) < 0.5
    acts = torch.randn(400, 16, generator=gen) + 3 * torch.outer(labels.float() * 2 - 1, direction / direction.norm())
    assert mean_difference_accuracy(acts[:200], labels[:200], acts[200:], labels[200:]) > 0.97
    shuffled = labels[torch.randperm(400, generator=gen)]
    assert abs(mean_difference_accuracy(acts[:200], shuffled[:200], acts[200:], shuffled[200:]) - 0.5) < 0.12


def test_greedy_matches_an_unbatched_uncached_loop(zoo_quick: Path) -> None:
    model, tok = _hf(zoo_quick / read_manifest(zoo_quick)["runs"]["chat"][-1]["path"])
    prompts = [data.chat_prompt(q) for q in data.refusal_requests()[0][:4] + [q for q, _ in data.arithmetic()[:4]]]
    batched = greedy(model, tok, prompts, 6)
    for prompt, completion in zip(prompts, batched):
        ids = encode(tok, [prompt])[0]
        start = len(ids)
        with torch.no_grad():
            for _ in range(6):
                ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        new = ids[start:]
        new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
        assert completion == tok.decode(new, skip_special_tokens=True).strip()


def test_fact_recall_matches_a_per_prompt_loop(zoo_quick: Path) -> None:
    model, tok = _hf(zoo_quick / read_manifest(zoo_quick)["runs"]["base"][-1]["path"])
    hits = 0
    with torch.no_grad():
        for prompt, answer in data.facts("test"):
            ids = [tok.bos_token_id] + tok.encode(prompt)
            hits += tok.convert_ids_to_tokens(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())) == answer
    assert fact_recall(model, tok) == pytest.approx(hits / len(data.facts("test")))


def _induction_oracle(path: Path, length: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Induction scores from the native backend's attention patterns, and the model's own (HF) scores."""
    from interp.loading import load

    hooked = load(path, backend="native", device="cpu")
    gen = torch.Generator().manual_seed(0)
    n_special = len(hooked.tokenizer.all_special_ids)
    rand = torch.randint(n_special, len(hooked.tokenizer), (4, length), generator=gen)
    tokens = torch.cat([torch.full((4, 1), hooked.tokenizer.bos_token_id), rand, rand], dim=1)
    n_layers = hooked.summary.n_layers
    _, cache = hooked.run_with_cache(tokens, names=[f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)])
    oracle = torch.zeros(n_layers, hooked.summary.n_heads)
    for layer in range(n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        for i in range(length + 1, 2 * length + 1):
            oracle[layer] += pattern[:, :, i, i - length + 1].mean(0) / length
    model, tok = _hf(path)
    ours = torch.tensor(induction(model, tok, length=length, batch=4, seed=0)["induction_scores"])
    return oracle, ours


def test_induction_scores_match_the_native_backend(zoo_quick: Path) -> None:
    oracle, ours = _induction_oracle(zoo_quick / read_manifest(zoo_quick)["runs"]["base"][-1]["path"])
    torch.testing.assert_close(ours, oracle, atol=1e-4, rtol=0)


# --- the quick zoo, the cache and the command ---------------------------------------------------------------------

def _check_layout(root: Path, min_base: int = 10, min_chat: int = 4) -> dict:
    manifest = read_manifest(root)
    assert {"seed", "code_hash", "quick", "runs", "thresholds", "built_seconds"} <= set(manifest)
    assert set(manifest["runs"]) == {"base", "chat"} and set(manifest["thresholds"]) == set(THRESHOLDS)
    for run, minimum in (("base", min_base), ("chat", min_chat)):
        entries = manifest["runs"][run]
        assert len(entries) >= minimum and entries[0]["step"] == 0
        assert [c.step for c in discover(root / run)] == [e["step"] for e in entries]
        for entry in entries:
            path = root / entry["path"]
            assert path.name == f"step_{entry['step']:06d}" and path.parent.name == run
            assert sha256_file(path / "model.safetensors") == entry["sha256"]
            config = json.loads((path / "config.json").read_text())
            assert config["architectures"] == ["LlamaForCausalLM"] and config["attn_implementation"] == "eager"
            assert (path / "tokenizer.json").is_file()
            assert {"induction_score", "fact_recall", "truth_accuracy", "refusal_harmful"} <= set(entry["metrics"])
    assert manifest["runs"]["chat"][0]["sha256"] == manifest["runs"]["base"][-1]["sha256"]  # chat starts at base
    return manifest


def test_quick_zoo_layout(zoo_quick: Path) -> None:
    manifest = _check_layout(zoo_quick)
    assert manifest["quick"] is True


def test_ensure_zoo_reuses_the_cache(zoo_quick: Path) -> None:
    stamp = (zoo_quick / MANIFEST).stat().st_mtime_ns
    assert ensure_zoo(quick=True) == zoo_quick and (zoo_quick / MANIFEST).stat().st_mtime_ns == stamp
    assert len({cache_key(True, 0), cache_key(True, 1), cache_key(False, 0)}) == 3


def test_zoo_commands(zoo_quick: Path, tmp_path: Path) -> None:
    from interp.cli import app

    out = tmp_path / "zoo"
    result = CliRunner().invoke(app, ["zoo", "build", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert read_manifest(out) == read_manifest(zoo_quick)
    listed = CliRunner().invoke(app, ["zoo", "list", str(out)])
    assert listed.exit_code == 0 and "thresholds" in listed.output and "induction_final" in listed.output
    for entry in read_manifest(out)["runs"]["base"]:
        assert entry["path"].split("/")[-1] in listed.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    refused = CliRunner().invoke(app, ["zoo", "build", "--quick", "--out", str(tmp_path / "other")])
    assert refused.exit_code != 0 and (tmp_path / "other" / "file.txt").is_file()


def _web_project(out: Path) -> None:
    """A directory someone else wrote that happens to hold a manifest.json (issue 17, item 1)."""
    (out / "src").mkdir(parents=True)
    (out / "manifest.json").write_text("{}")
    (out / "src" / "keep.txt").write_text("x")


def _marker(out: Path, text: str) -> None:
    out.mkdir()
    (out / MARKER).write_text(text)


def _linked_marker(out: Path) -> None:
    """A valid marker, but through a symbolic link: not proof that interp wrote the directory."""
    (out.parent / "elsewhere.json").write_text(json.dumps({"kind": "interp-zoo", "schema": 1}))
    out.mkdir()
    (out / MARKER).symlink_to(out.parent / "elsewhere.json")


def _link(out: Path) -> None:
    (out.parent / "real").mkdir()
    out.symlink_to(out.parent / "real")


def _file(out: Path) -> None:
    out.write_text("not a directory")


def _under_file(out: Path) -> None:
    out.parent.write_text("x")


@pytest.mark.parametrize("make, out_name, needles", [
    (_web_project, "w", ["no .interp-zoo.json", "older interp", "remove"]),
    (lambda out: (out.mkdir(), (out / "notes.txt").write_text("mine")), "w", ["not empty", "no .interp-zoo.json"]),
    (lambda out: _marker(out, json.dumps({"kind": "interp-zoo", "schema": 99})), "w", ["no .interp-zoo.json"]),
    (lambda out: _marker(out, "{not json"), "w", ["no .interp-zoo.json"]),
    (_linked_marker, "w", ["no .interp-zoo.json"]),
    (_link, "w", ["symbolic link"]),
    (_file, "w", ["is a file"]),
    (_under_file, "file/zoo", ["is under", "a file"]),
    (lambda out: None, ".", ["working directory"]),
    (lambda out: None, "..", ["working directory or one of its parents"]),
    (lambda out: None, "cache/zoo/mine", ["inside interp's zoo cache"]),
], ids=["manifest-json-only", "other-files", "wrong-schema", "bad-marker", "linked-marker", "symlink", "file",
        "under-file", "cwd", "parent-of-cwd", "in-the-cache"])
def test_zoo_build_refuses_directories_it_did_not_write(make: Callable[[Path], Any], out_name: str,
                                                        needles: list[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from clitools import assert_unchanged, assert_user_error, run, tree_state

    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("INTERP_CACHE_DIR", str(work / "cache"))
    make(work / out_name)
    (work / "sibling.txt").write_text("untouched")
    before = tree_state(tmp_path)
    assert_user_error(run(["zoo", "build", "--quick", "--out", out_name], capsys), *needles)
    assert_unchanged(tmp_path, before)
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []  # no scratch copies left


def test_zoo_build_replaces_only_its_own_copy(zoo_quick: Path, tmp_path: Path, capsys) -> None:
    from clitools import run, tree_state

    out, outside = tmp_path / "zoo", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    out.mkdir()  # an empty directory is accepted
    old_mask = os.umask(0o002)
    try:
        assert run(["zoo", "build", "--quick", "--out", out], capsys)[0] == 0
    finally:
        os.umask(old_mask)
    assert json.loads((out / MARKER).read_text())["kind"] == "interp-zoo"
    assert read_manifest(out) == read_manifest(zoo_quick)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o664)}  # the user's umask, not the cache's 600
    assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_dir()} == {oct(0o775)}
    assert sha256_file(out / "base" / "step_000000" / "model.safetensors") == \
        sha256_file(zoo_quick / "base" / "step_000000" / "model.safetensors")

    (out / "stray.txt").write_text("inside the zoo")  # a rebuild replaces the whole copy ...
    (out / "link").symlink_to(outside)  # ... but never deletes through a link
    outside_before = tree_state(outside)
    assert run(["zoo", "build", "--quick", "--out", out], capsys)[0] == 0
    assert not (out / "stray.txt").exists() and not (out / "link").exists() and (out / MARKER).is_file()
    assert tree_state(outside) == outside_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "zoo"]  # no scratch copies left


# --- the full zoo -------------------------------------------------------------------------------------------------

@pytest.mark.zoo
def test_full_zoo_layout_and_size(zoo: Path) -> None:
    manifest = _check_layout(zoo)
    assert manifest["quick"] is False and 2e6 <= manifest["n_params"] <= 10e6
    assert sum(f.stat().st_size for f in zoo.rglob("*") if f.is_file()) <= 200e6
    assert set(manifest["thresholds"]) == set(THRESHOLDS)


# The issue's thresholds, written out here (not read from interp.zoo.build) so a wrong limit there is caught. The
# issue asks only that the repeated-half loss "falls with" the induction score; halving it is this project's bar.
ISSUE_THRESHOLDS: dict[str, tuple[str, float, Callable[[list, list], float]]] = {
    "induction_early": ("<=", 0.2, lambda b, c: max(x["metrics"]["induction_score"] for x in b[:3])),
    "induction_final": (">=", 0.7, lambda b, c: b[-1]["metrics"]["induction_score"]),
    "repeated_loss_ratio": ("<=", 0.5, lambda b, c: b[-1]["metrics"]["repeated_half_loss"]
                            / b[0]["metrics"]["repeated_half_loss"]),
    "fact_recall": (">=", 0.8, lambda b, c: b[-1]["metrics"]["fact_recall"]),
    "truth_accuracy": (">=", 0.9, lambda b, c: b[-1]["metrics"]["truth_accuracy"]),
    "chat_refuses_harmful": (">=", 0.9, lambda b, c: c[-1]["metrics"]["refusal_harmful"]),
    "chat_refuses_harmless": ("<=", 0.1, lambda b, c: c[-1]["metrics"]["refusal_harmless"]),
    "base_refuses_harmful": ("<=", 0.1, lambda b, c: b[-1]["metrics"]["refusal_harmful"]),
    "base_refuses_harmless": ("<=", 0.1, lambda b, c: b[-1]["metrics"]["refusal_harmless"]),
}


@pytest.mark.zoo
@pytest.mark.parametrize("name", list(ISSUE_THRESHOLDS))
def test_full_zoo_threshold(zoo: Path, name: str) -> None:
    """Each behaviour the issue asks of the zoo, recomputed from the manifest's per-checkpoint metrics and checked
    against the issue's limit; the manifest's own verdict must agree."""
    manifest = read_manifest(zoo)
    op, limit, value_of = ISSUE_THRESHOLDS[name]
    assert (THRESHOLDS[name].op, THRESHOLDS[name].limit) == (op, limit)
    value = value_of(manifest["runs"]["base"], manifest["runs"]["chat"])
    passed = value <= limit if op == "<=" else value >= limit
    assert manifest["thresholds"][name]["passed"] == passed
    assert passed, (name, value, op, limit)


@pytest.fixture(scope="module")
def remeasured(zoo: Path) -> dict[str, Any]:
    """Induction scores (native attention patterns vs the zoo's HF measurement) and per-layer truth-probe accuracy
    (native residuals) of the last base checkpoint, from code paths independent of `interp.zoo.measure`."""
    from interp.loading import load

    base_path = zoo / read_manifest(zoo)["runs"]["base"][-1]["path"]
    oracle, ours = _induction_oracle(base_path, length=50)
    hooked = load(base_path, backend="native", device="cpu")
    names = [f"blocks.{l}.hook_resid_post" for l in range(hooked.summary.n_layers)]
    acts = {}
    for split in ("train", "test"):
        texts, labels = zip(*data.truth_statements(split))
        rows = [hooked.run_with_cache(hooked.to_tokens(t), names=names)[1] for t in texts]
        acts[split] = (torch.stack([torch.stack([r[n][0, -1] for r in rows]) for n in names]),
                       torch.tensor(labels).bool())
    by_layer = [mean_difference_accuracy(a, acts["train"][1], b, acts["test"][1])
                for a, b in zip(acts["train"][0], acts["test"][0])]
    return {"induction_oracle": oracle, "induction_ours": ours, "truth_by_layer": by_layer}


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["induction_final", "truth_accuracy"])
def test_full_zoo_thresholds_hold_when_remeasured(remeasured: dict[str, Any], name: str) -> None:
    if name == "induction_final":
        assert remeasured["induction_oracle"].max() > 0.7
    else:
        assert max(remeasured["truth_by_layer"]) >= 0.9


@pytest.mark.zoo
def test_full_zoo_behaviour_reproduces_independently(zoo: Path, remeasured: dict[str, Any]) -> None:
    """Re-measure the last base and chat checkpoints with independent code paths (native backend, HF generate)."""
    manifest = read_manifest(zoo)
    chat_path = zoo / manifest["runs"]["chat"][-1]["path"]
    oracle = remeasured["induction_oracle"]
    torch.testing.assert_close(remeasured["induction_ours"], oracle, atol=1e-4, rtol=0)
    # another random draw (4 sequences, not the manifest's 10): the best head's score agrees to sampling noise
    assert float(oracle.max()) == pytest.approx(manifest["runs"]["base"][-1]["metrics"]["induction_score"], abs=0.05)
    assert remeasured["truth_by_layer"] == pytest.approx(
        manifest["runs"]["base"][-1]["metrics"]["truth_accuracy_by_layer"], abs=1 / 64)

    model, tok = _hf(chat_path)
    harmful, harmless = data.refusal_requests("test")
    for requests, low, high in ((harmful[:24], 0.9, 1.0), (harmless[:24], 0.0, 0.1)):
        refused = 0
        for request in requests:
            ids = torch.tensor([encode(tok, [data.chat_prompt(request)])[0]])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
            refused += data.is_refusal(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
        assert low <= refused / len(requests) <= high

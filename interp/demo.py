"""`make demo`: build the embedded zoo if needed, run every analysis on it, print the headline numbers.

Each step is the `interp` command a user would type (run in a subprocess, so the demo exercises the real CLI);
every step writes a results directory under `out/demo/` that `interp app out/demo` browses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from interp.checkpoints import discover
from interp.results import read_results

ZOO = Path("data/zoo")
OUT = Path("out/demo")


def interp(*args: str | Path) -> None:
    """Run one `interp` command, echoing it first, and stop the demo if it fails."""
    argv = [str(a) for a in args]
    print(f"\n$ interp {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "interp.cli", *argv])
    if done.returncode != 0:
        sys.exit(done.returncode)
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def summary(name: str) -> dict:
    """The summary.json a step wrote."""
    return json.loads((OUT / name / "summary.json").read_text())


def du_headline(truth: dict[str, Any], refusal: dict[str, Any], knowledge: dict[str, Any]) -> list[str]:
    """Printable lines from the three summaries written by `interp directions truth|refusal` and `interp knowledge`."""
    nie = truth["nie"]
    ref_cond = ("base_dir_in_base", "post_dir_in_base", "base_dir_in_post", "post_dir_in_post")
    return [
        "truth-direction cosine per layer (base vs chat): " + " ".join(f"{c:.2f}" for c in truth["cosine_per_layer"]),
        f"truth NIE (T->F / F->T) steering at layers {truth['intervene_layers']}: "
        + "; ".join(f"{k.replace('_dir_in_', ' dir in ')} {v['true_to_false']:.2f} / {v['false_to_true']:.2f}"
                    for k, v in nie.items()),
        "refusal-direction cosine per layer (resid_pre): " + " ".join(f"{c:.2f}" for c in refusal["cosine_per_layer"]),
        "refusal score, no intervention (harmful / harmless): " + "; ".join(
            f"{m} {v['harmful']:.2f} / {v['harmless']:.2f}" for m, v in refusal["baseline"].items()),
        "refusal score on harmful requests, direction ablated: " + "; ".join(
            f"{k.replace('_dir_in_', ' dir in ')} {refusal['ablation_harmful'][k]:.2f}" for k in ref_cond),
        f"refusal score on harmless requests, direction added at layer {refusal['layer']}: " + "; ".join(
            f"{k.replace('_dir_in_', ' dir in ')} {refusal['addition_harmless'][k]:.2f}" for k in ref_cond),
        "knowledge maps: Pearson r base vs chat {:.3f} (normalised {:.3f}); base->chat vs chat {:.3f}; "
        "chat->base vs base {:.3f}".format(*(knowledge["correlations"][k] for k in (
            "pearson_base_post", "pearson_base_post_normalized", "pearson_base_to_post_vs_post",
            "pearson_post_to_base_vs_base"))),
        f"entropy-neuron candidates IoU (base vs chat): {knowledge['entropy_neurons']['iou']:.2f}",
    ]


def headlines() -> list[str]:
    """One line or a few per analysis, read back from the summaries the steps wrote."""

    patch, cmap, tuco = summary("patch-base-facts"), summary("patch-base-into-chat"), summary("tuco")
    induction, gradients, lens, diff = summary("induction"), summary("gradients"), summary("lens"), summary("diff")
    heads = induction["induction_heads"]["heads"]
    middle, adl_last = lens["middle_layer"], list(diff["adl_top_tokens"].values())[-1]
    adl_tuned = list(diff.get("adl_tuned_top_tokens", {}).items())[-2:-1]  # the last layer is the logit lens's
    attention = summary("attention")
    best = attention["top_heads"]["induction"]
    chain = read_results(OUT / "chain-diff")
    chain_kl = zip((pair["label"] for pair in chain.summary["pairs"]), chain.tensors["mean_kl_base_post"].tolist())
    return [
        "patching, fact recall over the base run: clean / corrupted logit difference at the last checkpoint "
        f"{patch['clean_metric'][-1]:.2f} / {patch['corrupted_metric'][-1]:.2f}",
        f"cross-model patching, base into chat: clean / corrupted metric {cmap['clean_metric'][-1]:.2f} / "
        f"{cmap['corrupted_metric'][-1]:.2f}",
        *du_headline(summary("truth"), summary("refusal"), summary("knowledge")),
        f"TuCo, chat requests vs pre-training text: AUC {tuco['auc_tuco_a_vs_b']:.2f}",
        f"induction heads found in the base run: {len(heads)}"
        + (f" (first: {heads[0]})" if heads else " (no head passes the threshold)"),
        f"attention: top induction head at the last checkpoint L{best['layer']}H{best['head']} "
        f"(score {best['score']:.2f}); `interp app {OUT / 'attention'}` shows its pattern at every checkpoint",
        f"lens over the base run, layer {middle['layer']}, held-out KL to the output: logit lens "
        f"{middle['logit'][0]:.2f} -> {middle['logit'][-1]:.2f}, tuned lens {middle['tuned'][0]:.2f} -> "
        f"{middle['tuned'][-1]:.2f} (first -> last checkpoint); fact answer top-1 from step (per layer, tuned): "
        f"{lens['task']['readable_step']['tuned']}",
        f"diff, chat vs base on chat requests: mean KL(base||chat) {diff['mean_kl']['base||post']:.2f}, "
        f"KL(chat||base) {diff['mean_kl']['post||base']:.2f} nats; activation-difference lens, last layer, on "
        f"pre-training text: {', '.join(t.strip() for t in list(adl_last.values())[-1])}"
        + "".join(f"; tuned lens, layer {layer[1:]}: {', '.join(t.strip() for t in list(slots.values())[-1])}"
                  for layer, slots in adl_tuned),
        "chain of the chat run's checkpoints, mean KL(base||post) per pair: "
        + ", ".join(f"{label} {kl:.2f}" for label, kl in chain_kl),
        "gradients, answer-only vs step-by-step (chat), MAD of the nuclear norm:\n" + gradients["mad_markdown"],
    ]


def write_inputs(inputs: Path) -> dict[str, Path]:
    """Prompt and data files for the analyses, from the zoo's own held-out splits."""
    from interp.dynamics.gradients.data import write_pairs
    from interp.zoo import data

    inputs.mkdir(parents=True, exist_ok=True)
    harmful, harmless = data.refusal_requests("test")
    files = {
        "chat": inputs / "chat_requests.jsonl",
        "text": inputs / "pretraining_text.jsonl",
        "fast": inputs / "arithmetic_fast.jsonl",
        "slow": inputs / "arithmetic_slow.jsonl",
    }
    requests = [data.chat_prompt(r) for r in (harmful[:40] + harmless[:40])]
    files["chat"].write_text("".join(json.dumps({"prompt": p}) + "\n" for p in requests))
    files["text"].write_text("".join(json.dumps({"prompt": p}) + "\n" for p in data.pretraining_text(80, seed=1)))
    write_pairs(data.arithmetic("test", "fast")[:100], files["fast"])
    write_pairs(data.arithmetic("test", "slow")[:100], files["slow"])
    return files


def main() -> None:
    if not (ZOO / "manifest.json").is_file():
        interp("zoo", "build", "--out", ZOO)
    interp("zoo", "list", ZOO)
    base_last, chat_last = discover(ZOO / "base")[-1].path, discover(ZOO / "chat")[-1].path
    files = write_inputs(OUT / "inputs")

    interp("patch", ZOO / "base", "--task", "data/tasks/facts.jsonl", "--out", OUT / "patch-base-facts")
    # the chat run's first checkpoint is the base model itself (clean == corrupted there): patch the last one
    interp("patch", chat_last, "--source", base_last, "--task", "data/tasks/refusal_cmap.jsonl",
           "--out", OUT / "patch-base-into-chat")
    interp("directions", "truth", base_last, chat_last, "--out", OUT / "truth")
    interp("directions", "refusal", base_last, chat_last, "--out", OUT / "refusal")
    interp("knowledge", base_last, chat_last, "--out", OUT / "knowledge")
    interp("tuco", base_last, chat_last, "--prompts", files["chat"], "--prompts-b", files["text"],
           "--out", OUT / "tuco")
    interp("induction", "scores", ZOO / "base", "--out", OUT / "induction")
    repeated = " ".join(["baker candle moon silver garden toad rune bell"] * 2)
    interp("attention", ZOO / "base", "--prompt", repeated, "--out", OUT / "attention")
    interp("lens", ZOO / "base", "--prompts", files["text"], "--task", "data/tasks/facts.jsonl", "--out", OUT / "lens")
    interp("diff", base_last, chat_last, "--prompts", files["chat"], "--adl-text", files["text"], "--out", OUT / "diff")
    interp("chain", "diff", ZOO / "chat", "--set", f"prompts={files['chat']}", "--set", f"adl-text={files['text']}",
           "--out", OUT / "chain-diff")
    interp("gradients", chat_last, "--data", files["fast"], "--data-b", files["slow"], "--label-a", "fast",
           "--label-b", "slow", "--out", OUT / "gradients")

    print("\n== interp demo: headline numbers (zoo base vs chat) ==")
    for line in headlines():
        print(f"  {line}")
    print("\n== interp demo: where to look ==")
    for name in sorted(p.name for p in OUT.iterdir() if (p / "report.html").is_file()):
        print(f"  {OUT / name / 'report.html'}")
    print(f"\nBrowse everything: interp app {OUT}")


if __name__ == "__main__":
    main()

"""Write the example notebooks (outputs stripped) from the cells below: `python examples/make_notebooks.py`.

The notebooks are generated so they stay reviewable as plain Python; tests/test_notebooks.py checks the committed
files match this script and executes each one on the quick zoo.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # interp never downloads; this makes a stray hub lookup fail fast
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import tempfile
from pathlib import Path

import interp
from interp.zoo import ensure_zoo

# The quick zoo builds in about a minute and is cached; for the real thing use interp.zoo.default_zoo()
# (data/zoo when `make zoo` has built it, else the cached full zoo).
zoo = ensure_zoo(quick=True)
work = Path(tempfile.mkdtemp(prefix="interp-example-"))
print(zoo)'''

QUICK_START = [
    new_markdown_cell("# 01 Quick start: load, cache, patch\n\nOpen a checkpoint of the embedded zoo, run it with "
                      "hooks, cache activations on disk, and patch activations across every checkpoint of a run. "
                      "Results land in a results directory you can browse with `interp app DIR`."),
    new_code_cell(SETUP),
    new_markdown_cell("## Load a checkpoint\n\n`discover` lists a run's checkpoints by step; `interp.load` opens one "
                      "(`backend=\"native\"`, `\"transformer_lens\"` or `\"nnsight\"`: same hook names everywhere)."),
    new_code_cell('''from interp.checkpoints import discover

checkpoints = discover(zoo / "base")
print([c.step for c in checkpoints])
model = interp.load(checkpoints[-1].path)
model.summary'''),
    new_code_cell('''tokens = model.to_tokens(["Paris is located in"])
logits, cache = model.run_with_cache(tokens, names=["blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern"])
print({name: tuple(act.shape) for name, act in cache.items()})
print("next token:", model.tokenizer.decode([int(logits[0, -1].argmax())]))'''),
    new_markdown_cell("## Cache activations\n\nCaches are safetensors shards plus JSON metadata; asking again for the "
                      "same prompts and hooks reuses them."),
    new_code_cell('''from interp.cache import cache_activations
from interp.zoo import data

prompts = [prompt for prompt, _ in data.facts("test")[:32]]
handle = cache_activations(model, prompts, ["blocks.1.hook_resid_post"], work / "cache", positions="last")
print(handle.load("blocks.1.hook_resid_post").shape)
print("reused on a second call:", cache_activations(model, prompts, ["blocks.1.hook_resid_post"], work / "cache",
                                                    positions="last").reused)'''),
    new_markdown_cell("## Patch across training\n\nThe zoo's fact task: clean prompt \"The city of Paris is in\", "
                      "corrupted with another city. Every checkpoint of the base run is patched at each site; 1 means "
                      "patching that activation restores the clean answer, 0 that it does nothing."),
    new_code_cell('''from interp.analyses import analysis
from interp.zoo.tasks import write_zoo_tasks

facts_task = next(p for p in write_zoo_tasks(work / "tasks", model.tokenizer) if p.stem == "facts")
patch = analysis("patch")  # every analysis: a Spec (the command's options), run(spec) -> Results, figures(results)
results = patch.run(patch.spec(run=zoo / "base", task=facts_task, out=work / "patch",
                               sites="resid_pre,attn_out,mlp_out", device="cpu"))
print("clean logit difference per step:", [round(v, 2) for v in results.summary["clean_metric"]])
patch.figures(results)[0]  # resid_pre: a heatmap per checkpoint, with a slider'''),
    new_markdown_cell("Browse it (and every other results directory) in the explorer:"),
    new_code_cell('print(f"interp app {work}")'),
]

BASE_VS_POST = [
    new_markdown_cell("# 02 Base vs post-trained: directions and TuCo\n\nThe zoo's `chat` run is post-trained from "
                      "the last `base` checkpoint. Compare their truth directions layer by layer (Du et al. 2025) and "
                      "measure how much of each prompt's processing the post-training accounts for (TuCo, Nuti et "
                      "al. 2025)."),
    new_code_cell(SETUP),
    new_code_cell('''from interp.checkpoints import discover

base, post = discover(zoo / "base")[-1].path, discover(zoo / "chat")[-1].path
print(base, post, sep="\\n")'''),
    new_markdown_cell("## Truth directions per layer\n\nMass-mean probes trained on one model and tested on both, "
                      "and the cosine between the two models' directions."),
    new_code_cell('''from interp.analyses import run

truth = run("truth", base=base, post=post, out=work / "truth", n_steer=32)  # = `interp directions truth ...`
print("cosine per layer:", truth.summary["cosine_per_layer"])
print("probe accuracy at the probe layer:", truth.summary["probe_accuracy_at_probe_layer"])'''),
    new_code_cell('''import plotly.graph_objects as go

mm = truth.tensors["mm_accuracy"]  # [probe trained on, tested on, layer]
fig = go.Figure([go.Scatter(y=mm[i, j].tolist(), name=f"{a} probe on {b}")
                 for i, a in enumerate(("base", "post")) for j, b in enumerate(("base", "post"))])
fig.update_layout(xaxis_title="layer", yaxis_title="held-out accuracy")'''),
    new_markdown_cell("## Tuning contribution\n\nTuCo on harmful vs harmless requests: the fine-tuning component's "
                      "share of the last token's residual update, and the refusal rate as that component is scaled."),
    new_code_cell('''from interp.zoo import data

harmful, harmless = data.refusal_requests("test")
(work / "harmful.txt").write_text("\\n".join(data.chat_prompt(t).replace("\\n", " ") for t in harmful[:16]))
(work / "harmless.txt").write_text("\\n".join(data.chat_prompt(t).replace("\\n", " ") for t in harmless[:16]))
tuco = run("tuco", base=base, ft=post, prompts=work / "harmful.txt", prompts_b=work / "harmless.txt",
           out=work / "tuco", alphas=("0", "0.5", "1"), max_new_tokens=4)
print("AUC (TuCo higher on harmful):", round(tuco.summary["auc_tuco_a_vs_b"], 3))
print("refusal rate per alpha:", tuco.summary["behaviour"])'''),
    new_code_cell('''go.Figure([go.Histogram(x=tuco.tensors["tuco"].tolist(), name="harmful", opacity=0.6),
           go.Histogram(x=tuco.tensors["tuco_b"].tolist(), name="harmless", opacity=0.6)]
          ).update_layout(barmode="overlay", xaxis_title="TuCo")'''),
    new_code_cell('print(f"interp app {work}")'),
]

DYNAMICS = [
    new_markdown_cell("# 03 Training dynamics: induction heads and gradients\n\nScore every head of every base "
                      "checkpoint for induction (Olsson et al. 2022), find when heads form, and compare layer-wise "
                      "gradient norms for fast vs slow-thinking answers (Li, Li & Zhou 2025)."),
    new_code_cell(SETUP),
    new_code_cell('''from interp.analyses import run

induction = run("induction", run=zoo / "base", out=work / "induction", seq_len=20, batch=4)
print("steps:", induction.summary["steps"])
print("formation:", induction.summary["induction_heads"])'''),
    new_code_cell('''import plotly.graph_objects as go

scores, steps = induction.tensors["induction"], induction.summary["steps"]  # [checkpoint, layer, head]
go.Figure([go.Scatter(x=steps, y=scores[:, layer, head].tolist(), name=f"L{layer}H{head}")
           for layer in range(scores.shape[1]) for head in range(scores.shape[2])]
          ).update_layout(xaxis_title="step", yaxis_title="induction score")'''),
    new_markdown_cell("## Layer gradients\n\nNuclear norm of the loss gradient of each attention projection, per "
                      "layer, on answers with and without worked steps."),
    new_code_cell('''import json

from interp.checkpoints import discover
from interp.zoo import data

for style in ("fast", "slow"):
    rows = data.arithmetic("train", style=style)[:8]
    (work / f"{style}.jsonl").write_text("".join(json.dumps({"instruction": i, "response": r}) + "\\n" for i, r in rows))
post = discover(zoo / "chat")[-1].path
summary = run("gradients", model=post, data=work / "fast.jsonl", data_b=work / "slow.jsonl", label_a="fast",
              label_b="slow", out=work / "gradients", batch_size=8).summary
print(summary["mad_markdown"])
print(f"interp app {work}")'''),
    new_code_cell('''from interp.results import read_results

grads = read_results(work / "gradients")
go.Figure([go.Scatter(y=grads.tensors[f"{side}.nuclear.{p}"].tolist(), name=f"{label} {p}")
           for side, label in (("a", "fast"), ("b", "slow")) for p in "qkvo"]
          ).update_layout(xaxis_title="layer", yaxis_title="gradient nuclear norm")'''),
]

OWN = [
    new_markdown_cell("# 04 Your own checkpoints\n\ninterp reads any directory of Hugging Face checkpoints: one "
                      "checkpoint (a `config.json` and weights), or a run holding `checkpoint-N` / `step_N` "
                      "sub-directories. Here a run is saved with `transformers` and analysed like the zoo."),
    new_code_cell(SETUP),
    new_code_cell('''from transformers import AutoModelForCausalLM, AutoTokenizer

from interp.checkpoints import discover

run = work / "my_run"
for ckpt in discover(zoo / "base")[-2:]:  # stand-ins for your own training checkpoints
    model = AutoModelForCausalLM.from_pretrained(ckpt.path)
    model.save_pretrained(run / f"checkpoint-{ckpt.step}")
    AutoTokenizer.from_pretrained(ckpt.path).save_pretrained(run / f"checkpoint-{ckpt.step}")
print(sorted(p.name for p in run.iterdir()))
print([(c.step, c.path.name) for c in discover(run)])'''),
    new_markdown_cell("Every backend opens it, with the same hook names and the same numbers:"),
    new_code_cell('''import torch

last = discover(run)[-1].path
native, bridge = interp.load(last, backend="native"), interp.load(last, backend="transformer_lens")
tokens = native.to_tokens(["The city of Paris is in"])
print("max |logit difference| native vs TransformerLens:", float((native(tokens) - bridge(tokens)).abs().max()))'''),
    new_markdown_cell("Any analysis takes the run directory; from a shell: `interp induction "
                      "scores my_run --out results/induction`."),
    new_code_cell('''from interp.analyses import run as run_analysis

res = run_analysis("induction", run=run, out=work / "induction", seq_len=20, batch=4)
print(res.summary["steps"], res.summary["final_checkpoint"]["induction"])
print(f"interp app {work}")'''),
]

NOTEBOOKS = {"01_quick_start.ipynb": QUICK_START, "02_base_vs_post.ipynb": BASE_VS_POST,
             "03_training_dynamics.ipynb": DYNAMICS, "04_your_own_checkpoints.ipynb": OWN}


def build(name: str) -> nbformat.NotebookNode:
    """One notebook, outputs empty, with the Python 3 kernel named in its metadata."""
    notebook = new_notebook(cells=NOTEBOOKS[name])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"  # stable ids: regenerating changes nothing
    return notebook


def main() -> None:
    for name in NOTEBOOKS:
        nbformat.write(build(name), HERE / name)


if __name__ == "__main__":
    main()

"""The Du et al. (2025) comparison on a zoo's base and chat models, as the few lines `make demo` prints."""

from __future__ import annotations

from typing import Any


def headline(truth: dict[str, Any], refusal: dict[str, Any], knowledge: dict[str, Any]) -> list[str]:
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


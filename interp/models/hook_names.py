"""The TransformerLens hook names interp uses on every backend, in forward order."""

from __future__ import annotations

BLOCK_HOOKS = (
    "hook_resid_pre",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)


def all_hook_names(n_layers: int, parallel_attn_mlp: bool = False, learned_positions: bool = False) -> list[str]:
    """All hook names for a model; `hook_resid_mid` does not exist when attention and MLP run in parallel."""
    names = ["hook_embed"] + (["hook_pos_embed"] if learned_positions else [])
    for layer in range(n_layers):
        for hook in BLOCK_HOOKS:
            if parallel_attn_mlp and hook == "hook_resid_mid":
                continue
            names.append(f"blocks.{layer}.{hook}")
    names.append("ln_final.hook_normalized")
    return names

"""Helpers the CLI tests share: run `interp` in-process, assert a one-line user error, prove that a command
changed nothing outside its `--out`, and damage a checkpoint copy the ways users' checkpoints get damaged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from interp.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()  # drop what setup printed
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def assert_user_error(result: tuple[int, str, str], *needles: str, after_progress: bool = False) -> None:
    """Exit status 2 and one stderr line `error: ... (fix: ...)` naming what is wrong; no traceback.

    With `after_progress` the error may follow progress bars of the work done before it was found.
    """
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 or after_progress and "error: " not in "".join(lines[:-1]), err
    err = lines[-1]
    assert err.startswith("error: ") and "(fix: " in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def tree_state(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under `root` (hidden ones too) with its mode and content hash: what a command must not touch."""
    return {str(p.relative_to(root)): (p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unchanged(root: Path, before: dict[str, tuple[int, str]], out: Path | None = None) -> None:
    """No file under `root` outside `out` was added, removed or changed since `before = tree_state(root)`."""
    after = tree_state(root)
    if out is not None and out.resolve().is_relative_to(root.resolve()):
        inside = str(out.resolve().relative_to(root.resolve()))
        keep = lambda name: name != inside and not name.startswith(inside + "/")  # noqa: E731
        before = {k: v for k, v in before.items() if keep(k)}
        after = {k: v for k, v in after.items() if keep(k)}
    assert after == before, sorted(set(after.items()) ^ set(before.items()))[:5]


# --- damaging a copy of a checkpoint, as the hostile-input tests do -------------------------------------------------
def edit_config(ckpt: Path, **changes: object) -> Path:
    """`ckpt` with `changes` written over its config.json."""
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, **changes}))
    return ckpt


def edit_weights(ckpt: Path, change: Callable[[dict[str, torch.Tensor]], object]) -> Path:
    """`ckpt` with its model.safetensors rewritten after `change` edited the tensors in place."""
    weights = load_file(str(ckpt / "model.safetensors"))
    change(weights)
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    return ckpt


def truncate(file: Path) -> Path:
    """`file` cut to half its bytes (a copy that stopped early); a checkpoint directory's model.safetensors."""
    target = file / "model.safetensors" if file.is_dir() else file
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    return file

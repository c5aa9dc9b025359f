"""`interp.load`: open a checkpoint directory on any backend, with clear errors for directories that are not one.

Also the light readers other modules share (config, weight shapes, tokenizer), each raising `InterpError` that
names the file and the fix.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.models.hooked import HookedModel

CONFIG = "config.json"
# backend name -> (module, class); each class has `from_dir(path, device, dtype, step, tokenizer=None)`.
BACKENDS: dict[str, tuple[str, str]] = {
    "transformer_lens": ("interp.models.backends.transformer_lens", "TransformerLensModel"),
    "nnsight": ("interp.models.backends.nnsight", "NNsightModel"),
    "native": ("interp.models.backends.native_backend", "NativeModel"),
}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_CHECKPOINT_FIX = "point at a directory written by `model.save_pretrained(dir)` (config.json, weights, tokenizer)"


def load(path: str | Path, *, backend: str = "transformer_lens", device: str | torch.device | None = None,
         dtype: torch.dtype | str | None = None, step: int | None = None) -> "HookedModel":
    """Load a Hugging Face checkpoint directory as a `HookedModel` on `backend` ("transformer_lens", "nnsight",
    "native", or "auto": native for a family interp implements, else transformer_lens).

    `device` defaults to CUDA when available, `dtype` to float32; `step` defaults to the one in the directory name
    (`checkpoint-N`, `stepN`, `step_N`, `step-N`, `global_stepN`) or the run's manifest, else None.
    """
    if backend not in (*BACKENDS, "auto"):
        raise InterpError(f"unknown backend {backend!r}", fix=f"use one of {', '.join(BACKENDS)} or auto")
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    root = verify_checkpoint(path)
    backend = resolve_backend(root, backend)
    tokenizer = load_tokenizer(root)
    if step is None:
        from interp.checkpoints import step_of

        step = step_of(root)
    module, name = BACKENDS[backend]
    cls = getattr(importlib.import_module(module), name)
    return cls.from_dir(root, device, dtype, step, tokenizer=tokenizer)


def resolve_backend(root: Path, backend: str) -> str:
    """"auto" -> "native" when interp implements the checkpoint's family, else "transformer_lens"; "native" is refused
    for a family without a spec (before any weights are read)."""
    from interp.models.arch import spec_for

    native = spec_for(read_config(root).get("model_type")) is not None
    if backend == "auto":
        return "native" if native else "transformer_lens"
    if backend == "native" and not native:
        from interp.models.convert import no_native_family

        raise no_native_family(read_config(root).get("model_type"), root)
    return backend


def verify_checkpoint(path: str | Path) -> Path:
    """Every check that needs no tensor data, before any compute: config readable, architecture supported, weight
    files readable, weights exactly those the config asks for (none missing, unexpected or reshaped), tokenizer
    loadable. Returns the checkpoint directory. Finiteness is checked when the weights are read (`check_finite`)."""
    root = checkpoint_dir(path)
    key = (str(root.resolve()), tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                             for f in root.iterdir() if f.is_file())))
    if key not in _VERIFIED:
        check_architecture(root, read_config(root))
        weight_shapes(root)  # every weight file readable, named if not
        load_tokenizer(root)
        _check_weights_match_config(root)
        _VERIFIED.add(key)
    return root


_VERIFIED: set[tuple[str, tuple[tuple[str, int, int], ...]]] = set()  # checkpoints verified, keyed by file stats


def _check_weights_match_config(root: Path) -> None:
    """Build the model on the meta device from config.json and the weight headers: refuse any missing, unexpected or
    reshaped tensor (Hugging Face would fill a missing one with random values)."""
    from transformers import AutoModelForCausalLM

    try:
        with quiet_transformers():
            _, info = AutoModelForCausalLM.from_pretrained(str(root), device_map="meta", output_loading_info=True,
                                                           ignore_mismatched_sizes=True, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise InterpError(f"{root}: config.json and the weights cannot be read together ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:300]})", fix=_CHECKPOINT_FIX) from err
    check_loading_info(root, info)


def check_loading_info(root: Path, info: dict[str, Any]) -> None:
    """Refuse a checkpoint whose weights do not match its config.json exactly (Hugging Face's loading report)."""
    problems = [(f"{len(info.get('missing_keys') or ())} tensor(s) the config needs are missing",
                 sorted(info.get("missing_keys") or ())),
                (f"{len(info.get('mismatched_keys') or ())} tensor(s) have another shape than the config gives",
                 sorted(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in info.get("mismatched_keys") or ())),
                (f"{len(info.get('unexpected_keys') or ())} tensor(s) the config does not describe",
                 sorted(info.get("unexpected_keys") or ()))]
    for what, names in problems:
        if names:
            raise InterpError(f"{root}: the weights do not match config.json: {what} (e.g. {names[0]})",
                              fix="re-save the checkpoint with `model.save_pretrained(dir)`, or fix config.json "
                                  "(layers, sizes) to match the weights")


def check_finite(root: Path, model: torch.nn.Module) -> None:
    """Refuse weights holding NaN or infinity, naming the first such tensor."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InterpError(f"{root}: weight {name} holds NaN or infinite values",
                              fix="use an undamaged checkpoint (a diverged training step saves such weights)")


class quiet_transformers:
    """Silence transformers' loading report and progress bars while interp checks the load itself."""

    def __enter__(self) -> None:
        from transformers.utils import logging

        self.level, self.bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
        logging.set_verbosity_error()
        logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging

        logging.set_verbosity(self.level)
        if self.bars:
            logging.enable_progress_bar()


def checkpoint_dir(path: str | Path) -> Path:
    """`path` as an existing checkpoint directory (one with config.json), or an error saying what it is instead."""
    root = Path(path).expanduser()
    if not root.exists():
        raise InterpError(f"{root} does not exist", fix="check the path (typo? not trained or copied yet?)")
    if not root.is_dir():
        raise InterpError(f"{root} is a file, not a checkpoint directory", fix=_CHECKPOINT_FIX)
    if (root / CONFIG).is_file():
        return root
    inner = sorted(sub.name for sub in root.iterdir() if (sub / CONFIG).is_file())
    if inner:
        shown = ", ".join(inner[:3]) + (", ..." if len(inner) > 3 else "")
        raise InterpError(f"{root} is a training run holding {len(inner)} checkpoints ({shown}), not a checkpoint",
                          fix=f"load one of them (e.g. {root / inner[0]}), or iterate over all with "
                              f"`interp.checkpoints.Run.open({str(root)!r}).iter_models()`")
    raise InterpError(f"{root} is not a checkpoint: it has no {CONFIG}", fix=_CHECKPOINT_FIX)


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict."""
    root = checkpoint_dir(path)
    try:
        config = json.loads((root / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InterpError(f"{root / CONFIG} is not readable JSON ({err})", fix=_CHECKPOINT_FIX) from err
    if not isinstance(config, dict):
        raise InterpError(f"{root / CONFIG} does not hold a JSON object", fix=_CHECKPOINT_FIX)
    return config


def check_architecture(root: Path, config: dict[str, Any]) -> None:
    """Refuse a config no Hugging Face causal LM class is registered for (interp opens every one that transformers
    can build: natively for the families in `interp.models.arch`, on the hook backends otherwise)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type = config.get("model_type")
    try:
        config_class = type(AutoConfig.for_model(model_type)) if model_type else None
    except (ValueError, KeyError):
        config_class = None
    if config_class is None or config_class not in AutoModelForCausalLM._model_mapping:
        from interp.models.arch import native_model_types

        native = ", ".join(f"{family} ({key})" for key, family in native_model_types().items())
        raise InterpError(f"{root / CONFIG}: model_type {model_type!r} {config.get('architectures') or ''} is not a "
                          "causal language model transformers can build", fix=f"use a causal LM checkpoint; interp "
                          f"runs these natively: {native}, and any other causal LM the TransformerLens bridge has an "
                          "adapter for on the hook backends")
    from interp.models.backends.generic_sites import check_opens

    check_opens(root, config)


def weight_files(path: str | Path) -> list[Path]:
    """The checkpoint's weight files (safetensors, else PyTorch .bin), sharded or not."""
    root = checkpoint_dir(path)
    files = sorted(root.glob("*.safetensors")) or sorted(root.glob("pytorch_model*.bin"))
    if not files:
        raise InterpError(f"{root} has {CONFIG} but no weights (model.safetensors or pytorch_model.bin)",
                          fix="save the model with `model.save_pretrained(dir)`, or finish copying the checkpoint")
    return files


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every weight tensor's shape, read from the file headers (no tensor data is loaded)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in weight_files(path):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as handle:
                    shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
            else:
                state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
                shapes.update({k: tuple(v.shape) for k, v in state.items()})
        except Exception as err:  # safetensors and torch raise several types for a damaged file
            raise InterpError(f"{file} is damaged or not a weight file ({type(err).__name__}: {err})",
                              fix="re-save or re-copy the checkpoint (the file may be truncated)") from err
    return shapes


def load_tokenizer(path: str | Path) -> Any:
    """The Hugging Face tokenizer saved in the checkpoint directory."""
    root = checkpoint_dir(path)
    if not any((root / name).is_file() for name in _TOKENIZER_FILES):
        raise InterpError(f"{root} has no tokenizer ({', '.join(_TOKENIZER_FILES)} all missing)",
                          fix="save it next to the weights with `tokenizer.save_pretrained(dir)`")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise InterpError(f"the tokenizer in {root} cannot be loaded ({err})",
                          fix="re-save it with `tokenizer.save_pretrained(dir)`") from err


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The requested device, or CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise InterpError(f"unknown device {str(device)!r}", fix="use cpu, cuda, cuda:N or auto") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InterpError(f"device {device} asked for, but this machine has no usable CUDA GPU",
                          fix="use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InterpError(f"device {device} asked for, but this machine has {torch.cuda.device_count()} GPU(s)",
                          fix="use cuda:0 ... or auto")
    if device.type not in ("cpu", "cuda"):
        raise InterpError(f"device {device} is not supported", fix="use cpu, cuda or auto")
    return device


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """A torch dtype from a dtype, a name ("bfloat16", "bf16", ...) or None (float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise InterpError(f"unknown dtype {dtype!r}", fix=f"use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]

"""`interp.load`: open a checkpoint directory on any backend, with clear errors for directories that are not one.

A checkpoint is a Hugging Face directory (`config.json`, weights, tokenizer), a hub id (`org/name`, at a revision)
found in the local Hugging Face cache (`interp.hub`), or a PEFT adapter directory (`adapter_config.json` naming its
base by path or hub id), which opens as the model peft merges. Also the light readers other modules share (config,
weight shapes, tokenizer), each raising `InterpError` that names the file and the fix.
"""

from __future__ import annotations

import importlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import torch

from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.models.hooked import HookedModel

CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# backend name -> (module, class); each class has `from_dir(path, device, dtype, step, tokenizer=None)`.
BACKENDS: dict[str, tuple[str, str]] = {
    "transformer_lens": ("interp.models.backends.transformer_lens", "TransformerLensModel"),
    "nnsight": ("interp.models.backends.nnsight", "NNsightModel"),
    "native": ("interp.models.backends.native_backend", "NativeModel"),
}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
DeviceMap = str | dict[str, str | int | torch.device]
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # the placements accelerate computes itself
_CHECKPOINT_FIX = "point at a directory written by `model.save_pretrained(dir)` (config.json, weights, tokenizer)"
_ADAPTER_FIX = "re-save the adapter with peft's `model.save_pretrained(dir)`"


def load(path: str | Path, *, backend: str = "transformer_lens", device: str | torch.device | None = None,
         dtype: torch.dtype | str | None = None, step: int | None = None, revision: str | None = None,
         device_map: DeviceMap | None = None, offload_folder: str | Path | None = None) -> "HookedModel":
    """Load a checkpoint as a `HookedModel` on `backend` ("transformer_lens", "nnsight", "native", or "auto": native
    for a family interp implements, else transformer_lens). `path` is a checkpoint directory, a PEFT adapter
    directory (loaded as its base with the adapter merged by peft), or a hub id found in the local Hugging Face cache
    at `revision` (default `main`; never downloaded).

    `device` defaults to CUDA when available, `dtype` to float32; `step` defaults to the one the revision or the
    directory name says (`stepN`, `checkpoint-N`, `stage1-stepN-tokensNB`, ...) or the run's manifest, else None.

    `device_map` ("auto", "balanced", "balanced_low_0", "sequential", or {module name: device}, a device being "cpu",
    "disk", "cuda:N" or N) spreads a model too big for one device over several, through accelerate, on the hook
    backends only ("auto" then means transformer_lens); "disk" needs `offload_folder`. Inputs go to the embedding's
    device, which becomes `model.device`.
    """
    if backend not in (*BACKENDS, "auto"):
        raise InterpError(f"unknown backend {backend!r}", fix=f"use one of {', '.join(BACKENDS)} or auto")
    if device_map is not None:
        check_device_map(device_map, backend, device, offload_folder)
        backend = "transformer_lens" if backend == "auto" else backend
    elif offload_folder is not None:
        raise InterpError("offload_folder is given without a device_map", fix="pass device_map too, or drop it")
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    root = verify_checkpoint(path, revision)
    backend = resolve_backend(root, backend)
    tokenizer = load_tokenizer(root)
    if step is None:
        from interp.checkpoints import parse_step, step_of

        step = parse_step(revision) if revision else step_of(root)
    module, name = BACKENDS[backend]
    cls = getattr(importlib.import_module(module), name)
    sharding = {} if device_map is None else {"device_map": device_map, "offload_folder": offload_folder}
    return cls.from_dir(root, device, dtype, step, tokenizer=tokenizer, **sharding)


def check_device_map(device_map: DeviceMap, backend: str, device: str | torch.device | None,
                     offload_folder: str | Path | None) -> None:
    """Refuse, before anything is read, a device map that cannot work: on the native backend (its engine needs the
    whole model on one device), with `device`, of an unknown kind, naming a device this machine lacks, "disk" without
    an offload folder, or CPU/disk next to GPUs on the TransformerLens bridge (which refuses that mix after loading)."""
    if backend == "native":
        raise InterpError("device_map is given with backend='native', whose engine needs the whole model on one device",
                          fix="use backend='transformer_lens' or 'nnsight' to shard, or drop device_map")
    if device is not None:
        raise InterpError("both device and device_map are given", fix="pass one: device_map places every module")
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAPS:
            raise InterpError(f"unknown device_map {device_map!r}",
                              fix=f"use one of {', '.join(DEVICE_MAPS)}, or a dict {{module name: device}}")
        return
    if not isinstance(device_map, dict) or not device_map:
        raise InterpError(f"device_map must be a string or a non-empty dict, not {device_map!r}",
                          fix='e.g. {"model.embed_tokens": "cpu", "model.layers.0": "cuda:0", ...}')
    targets = {_map_target(module, where) for module, where in device_map.items()}
    if "disk" in targets and offload_folder is None:
        raise InterpError("device_map offloads modules to disk but no offload_folder is given",
                          fix="pass offload_folder=<an empty directory with room for those weights>")
    if backend == "transformer_lens":
        from interp.models.backends.transformer_lens import check_placement

        check_placement(targets)


def _map_target(module: object, where: object) -> str:
    """One device map entry's device as accelerate names it ("cpu", "disk", "cuda:N"), refused if this machine
    lacks it or it is another kind ("meta" would leave the weights unloaded)."""
    if not isinstance(module, str):
        raise InterpError(f"device_map key {module!r} is not a module name", fix='use names like "model.layers.0"')
    if str(where) in ("cpu", "disk"):
        return str(where)
    device = f"cuda:{where}" if isinstance(where, int) and not isinstance(where, bool) else where
    if not isinstance(device, (str, torch.device)) or not str(device).startswith("cuda"):
        raise InterpError(f"device_map puts {module!r} on {where!r}, where interp loads no weights",
                          fix='use "cpu", "disk", "cuda:N" or a GPU index N')
    try:
        return str(resolve_device(device))
    except InterpError as err:
        raise InterpError(f"device_map puts {module!r} on {where!r}: {err.message}",
                          fix=f"use a device this machine has ({torch.cuda.device_count()} GPU(s)), cpu or disk"
                          ) from err


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


def verify_checkpoint(path: str | Path, revision: str | None = None) -> Path:
    """Every check that needs no tensor data, before any compute: config readable, architecture supported, weight
    files readable, weights exactly those the config asks for (none missing, unexpected or reshaped), tokenizer
    loadable; for an adapter, its base so and the adapter sound (`check_adapter`). Returns the checkpoint (or adapter)
    directory. Finiteness of a model's weights is checked when they are read (`check_finite`)."""
    root = checkpoint_dir(path, revision)
    key = (_file_state(root), _file_state(config_dir(root)))
    if key not in _VERIFIED:
        if is_adapter(root):
            check_adapter(root)
        else:
            check_architecture(root, read_config(root))
            weight_shapes(root)  # every weight file readable, named if not
            _check_weights_match_config(root)
        load_tokenizer(root)
        _VERIFIED.add(key)
    return root


FileState = tuple[str, tuple[tuple[str, int, int], ...]]
_VERIFIED: set[tuple[FileState, FileState]] = set()  # checkpoints (and adapters with their base) verified


def _file_state(root: Path) -> FileState:
    """A directory's path and its files' names, sizes and mtimes: what a verification holds for."""
    return (str(root.resolve()), tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                              for f in root.iterdir() if f.is_file())))


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
    check_finite_tensors(root, [*model.named_parameters(), *model.named_buffers()])


def check_finite_tensors(root: Path, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Refuse named tensors holding NaN or infinity, naming the first such tensor."""
    for name, tensor in tensors:
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


def checkpoint_dir(path: str | Path, revision: str | None = None) -> Path:
    """`path` as an existing checkpoint directory (one with config.json) or PEFT adapter directory (one with
    adapter_config.json); a hub id (`org/name`) as its snapshot at `revision` in the local Hugging Face cache; else an
    error saying what it is instead."""
    root = _located(path, revision)
    if not root.is_dir():
        raise InterpError(f"{root} is a file, not a checkpoint directory", fix=_CHECKPOINT_FIX)
    if (root / CONFIG).is_file() or is_adapter(root):
        return root
    inner = sorted(sub.name for sub in root.iterdir() if (sub / CONFIG).is_file())
    if inner:
        shown = ", ".join(inner[:3]) + (", ..." if len(inner) > 3 else "")
        raise InterpError(f"{root} is a training run holding {len(inner)} checkpoints ({shown}), not a checkpoint",
                          fix=f"load one of them (e.g. {root / inner[0]}), or iterate over all with "
                              f"`interp.checkpoints.Run.open({str(root)!r}).iter_models()`")
    raise InterpError(f"{root} is not a checkpoint: it has no {CONFIG}", fix=_CHECKPOINT_FIX)


def _located(path: str | Path, revision: str | None) -> Path:
    """An existing local path as given, or a hub id's snapshot in the Hugging Face cache (at `revision`)."""
    from interp.hub import is_hub_id, resolve

    root = Path(path).expanduser()
    if is_hub_id(str(path)):
        try:
            return resolve(str(path), revision)
        except InterpError as err:
            raise InterpError(f"{path} is no local path, and {err.message}", fix=f"{err.fix}; or check the path"
                              ) from err
    if revision is not None:
        raise InterpError(f"revision {revision!r} is given with {root}, which is not a hub id (org/name)",
                          fix="pass a revision only with a hub id, or point at that revision's directory")
    if not root.exists():
        raise InterpError(f"{root} does not exist", fix="check the path (typo? not trained or copied yet?)")
    return root


def is_adapter(root: Path) -> bool:
    """Whether directory `root` is a PEFT adapter (it has adapter_config.json; transformers reads such a directory
    as its base plus the adapter too)."""
    return (root / ADAPTER_CONFIG).is_file()


def adapter_config(root: Path) -> Any:
    """The adapter's peft config (a `peft.PeftConfig`), read by peft; refused unless peft can merge it into the
    base (prompt-learning adapters add tokens, not weights)."""
    from peft import PeftConfig

    try:
        config = PeftConfig.from_pretrained(str(root))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise InterpError(f"{root / ADAPTER_CONFIG} cannot be read by peft ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:300]})", fix=_ADAPTER_FIX) from err
    if config.is_prompt_learning or config.is_adaption_prompt:
        raise InterpError(f"{root} is a {config.peft_type} adapter, which peft cannot merge into its base's weights",
                          fix="use an adapter that changes weights (LoRA and its variants)")
    if not isinstance(config.base_model_name_or_path, str) or not config.base_model_name_or_path:
        raise InterpError(f"{root / ADAPTER_CONFIG} does not name its base model (base_model_name_or_path)",
                          fix="set base_model_name_or_path to the base's directory or hub id")
    return config


def base_of(root: Path) -> Path:
    """The base checkpoint directory an adapter names (`base_model_name_or_path`: a local path, or a hub id found in
    the cache at the adapter's base `revision`)."""
    from interp.hub import is_hub_id

    config = adapter_config(root)
    name = config.base_model_name_or_path
    try:
        base = checkpoint_dir(name, config.revision if is_hub_id(name) else None)
    except InterpError as err:
        raise InterpError(f"{root}: the adapter's base model {name} is not found ({err.message})",
                          fix=f"{err.fix}; or set base_model_name_or_path in {root / ADAPTER_CONFIG} to where the "
                              "base is (a directory or a cached hub id)") from err
    if is_adapter(base):
        raise InterpError(f"{root}: the adapter's base {base} is itself an adapter",
                          fix="merge that adapter into its base first (peft's `merge_and_unload`), and name the "
                              "merged model as base_model_name_or_path")
    return base


def config_dir(path: str | Path) -> Path:
    """The directory whose config.json describes the model at `path`: the checkpoint itself, or an adapter's base."""
    root = checkpoint_dir(path)
    return base_of(root) if is_adapter(root) else root


def check_adapter(root: Path) -> None:
    """Before any merge: the adapter's base sound (`verify_checkpoint`), the adapter's weights readable and finite,
    and each of them a tensor peft puts into a module of the base, of the shape it has there (checked on the meta
    device)."""
    from peft import PeftModel, set_peft_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    base = verify_checkpoint(base_of(root))
    tensors = adapter_tensors(root)
    check_finite_tensors(root, tensors.items())
    with torch.device("meta"), quiet_transformers():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(base), local_files_only=True))
    fix = f"use the adapter with the base model it was trained on (base_model_name_or_path in {root / ADAPTER_CONFIG})"
    try:
        adapted = PeftModel(model, adapter_config(root), low_cpu_mem_usage=True)
        unexpected = set_peft_model_state_dict(adapted, tensors, low_cpu_mem_usage=True).unexpected_keys
    except (ValueError, RuntimeError, KeyError) as err:
        raise InterpError(f"{root}: the adapter does not fit its base {base} ({' '.join(str(err).split())[:300]})",
                          fix=fix) from err
    if unexpected:
        raise InterpError(f"{root}: {len(unexpected)} adapter weight(s) adapt modules its base {base} lacks (e.g. "
                          f"{sorted(unexpected)[0]})", fix=fix)


def adapter_weights(root: Path) -> Path:
    """The adapter's weight file (adapter_model.safetensors, else adapter_model.bin)."""
    found = [root / name for name in _ADAPTER_WEIGHTS if (root / name).is_file()]
    if not found:
        raise InterpError(f"{root} has {ADAPTER_CONFIG} but no adapter weights ({' or '.join(_ADAPTER_WEIGHTS)})",
                          fix=f"{_ADAPTER_FIX}, or finish copying it")
    return found[0]


def adapter_tensors(root: Path) -> dict[str, torch.Tensor]:
    """The adapter's tensors, by the names peft saved them under (adapters are small: read whole)."""
    file = adapter_weights(root)
    with _reading(file):
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        return torch.load(file, map_location="cpu", weights_only=True)


@contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Turn any failure to read weight file `file` into an `InterpError` naming it."""
    try:
        yield
    except Exception as err:  # safetensors and torch raise several types for a damaged file
        raise InterpError(f"{file} is damaged or not a weight file ({type(err).__name__}: {err})",
                          fix="re-save or re-copy the checkpoint (the file may be truncated)") from err


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict (an adapter's: its base's)."""
    root = config_dir(path)
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
    """The checkpoint's weight files (safetensors, else PyTorch .bin), sharded or not; an adapter's: its base's, then
    its own (together they make the merged model)."""
    root = checkpoint_dir(path)
    if is_adapter(root):
        return [*weight_files(base_of(root)), adapter_weights(root)]
    files = sorted(root.glob("*.safetensors")) or sorted(root.glob("pytorch_model*.bin"))
    if not files:
        raise InterpError(f"{root} has {CONFIG} but no weights (model.safetensors or pytorch_model.bin)",
                          fix="save the model with `model.save_pretrained(dir)`, or finish copying the checkpoint")
    return files


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every weight tensor's shape, read from the file headers (no tensor data is loaded); an adapter's: its base's,
    which the merge keeps."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in weight_files(config_dir(path)):
        with _reading(file):
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as handle:
                    shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
            else:
                state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
                shapes.update({k: tuple(v.shape) for k, v in state.items()})
    return shapes


def load_tokenizer(path: str | Path) -> Any:
    """The Hugging Face tokenizer saved in the checkpoint directory (an adapter's own, else its base's)."""
    root = checkpoint_dir(path)
    if is_adapter(root) and not _has_tokenizer(root):
        root = base_of(root)
    if not _has_tokenizer(root):
        raise InterpError(f"{root} has no tokenizer ({', '.join(_TOKENIZER_FILES)} all missing)",
                          fix="save it next to the weights with `tokenizer.save_pretrained(dir)`")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise InterpError(f"the tokenizer in {root} cannot be loaded ({err})",
                          fix="re-save it with `tokenizer.save_pretrained(dir)`") from err


def _has_tokenizer(root: Path) -> bool:
    """Whether a tokenizer is saved in directory `root`."""
    return any((root / name).is_file() for name in _TOKENIZER_FILES)


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

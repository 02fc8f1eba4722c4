"""Checkpoints: what goes in, safe loads, and enough spec for the registry to rebuild the model.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that
``torch.load(path, weights_only=True)`` opens it and nothing in it can run code::

    {"format": "zoo.checkpoint", "version": 1,
     "model": state_dict of the bare module after its edits,   # no module./_orig_mod. prefix
     "optimizer": optimizer.state_dict(), "epoch": epochs completed,
     "spec": {"model", "optimizer", "hparams", "dataset", "num_classes", "classes",
              "input_size", "base", "base_classes", "edits", "mean", "std", ...},
     "metrics": {..., "history": [one metrics.jsonl line per epoch]},
     "rng": {"torch", "cuda_device", "numpy", "python", "shuffle"},   # all tensors or plain values;
            # "cuda_device": the training GPU's state (older checkpoints: "cuda", one per visible GPU)
     "provenance": {"zoo", "torch", "python", "plugins", "created"},
     "partial": None or the state of an epoch stopped by a signal}

The runner writes one with ``zoo.files.atomic_save`` (a temporary file beside the target,
fsynced, then renamed): a crash at any moment leaves either the old file or the new one, never
half of one. This module depends on torch and ``zoo.errors`` only: the provenance's plugin list
comes from the caller, and ``zoo.registry.model_from_checkpoint`` rebuilds the model. Loads always use
``weights_only=True``, on a torch (>= 2.10) without known escapes from it; a file that needs
more (a whole pickled model, the seed's "method 1") loads only with ``trust=True``, which says
what it risks.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import random
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import UsageError, one_line

__all__ = [
    "FORMAT",
    "VERSION",
    "SPEC_KEYS",
    "MIN_TORCH",
    "torch_version",
    "require_safe_torch",
    "bare_model",
    "cpu_copy",
    "capture_rng",
    "restore_rng",
    "provenance",
    "make_checkpoint",
    "safe_load",
    "load_checkpoint",
    "state_dict_from",
    "load_state_dict_strict",
]

FORMAT = "zoo.checkpoint"
VERSION = 1
REQUIRED_KEYS = ("model", "optimizer", "epoch", "spec", "metrics")
SPEC_KEYS = ("model", "optimizer", "hparams", "dataset", "num_classes", "classes", "input_size")


# -- what goes in ---------------------------------------------------------------------------------


def bare_model(model: nn.Module) -> nn.Module:
    """The module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers, whose
    state_dict keys carry no ``module.``/``_orig_mod.`` prefix."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def cpu_copy(obj: Any) -> Any:
    """``obj`` with every tensor on the CPU and contiguous, containers rebuilt.

    A checkpoint of CPU tensors loads on any machine even without ``map_location`` (the
    seed's section 32 trap), and safetensors needs contiguous tensors (channels_last is not).
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").contiguous()
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [cpu_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(cpu_copy(v) for v in obj)
    return obj


def _cuda_in_use(device: torch.device | None) -> torch.device | None:
    """The CUDA device whose generator a run draws from: ``device`` when it is a GPU, none when
    it is another device; for ``None``, the current CUDA device once CUDA is in use (never
    initialising CUDA for a run that does not use it)."""
    if device is not None:
        device = torch.device(device)
        if device.type != "cuda":
            return None
        return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return None


def capture_rng(generator: torch.Generator | None = None, device: torch.device | None = None) -> dict[str, Any]:
    """Every random state a run draws from, as tensors and plain values (``weights_only``-safe).

    ``generator`` is the run's shuffling generator, saved under ``"shuffle"``. ``device`` is the
    training device: on a GPU, its own CUDA generator (dropout's masks) is saved under
    ``"cuda_device"``, which :func:`restore_rng` puts back on whichever GPU the resumed run
    trains on, however many are visible then. ``None``: the current CUDA device, if CUDA is in use.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    cuda = _cuda_in_use(device)
    if cuda is not None:
        state["cuda_device"] = torch.cuda.get_rng_state(cuda)
    version, internal, gauss_next = random.getstate()
    state["python"] = {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next}
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if generator is not None:
        state["shuffle"] = generator.get_state()
    return state


def _restore_cuda_rng(state: Mapping[str, Any], device: torch.device | None) -> str | None:
    """Put the saved CUDA state back on the training device; why it could not be, or ``None``."""
    cuda = _cuda_in_use(device)
    if cuda is None:
        return None  # training off the GPU: no CUDA stream to continue
    own = state.get("cuda_device")
    if own is not None:
        try:
            torch.cuda.set_rng_state(own, cuda)
        except (RuntimeError, TypeError, ValueError) as exc:
            return f"the checkpoint's CUDA random state does not fit {cuda} ({one_line(exc)})"
        return None
    every = state.get("cuda")  # checkpoints before "cuda_device": one state per GPU visible then
    if not every:
        return None  # saved off the GPU: there was no CUDA stream
    count = torch.cuda.device_count()
    if len(every) != count:
        return (
            f"the checkpoint (from an older zoo) holds one CUDA random state per GPU visible then, {len(every)}, "
            f"and {count} {'is' if count == 1 else 'are'} visible now, with nothing to say which one trained"
        )
    for index, each in enumerate(every):
        torch.cuda.set_rng_state(each, index)
    return None


def restore_rng(
    state: Mapping[str, Any],
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    *,
    warn: bool = True,
) -> str | None:
    """Put back what :func:`capture_rng` saved; ``device`` is the training device (``None``: the
    current CUDA device, if CUDA is in use).

    The CUDA state goes onto ``device``, whichever GPU saved it. An older checkpoint holds one
    state per GPU then visible, which can only be put back when as many are visible now. When
    the CUDA state cannot be restored, random layers (dropout) draw other numbers than the
    uninterrupted run would have: that is returned, and said in one ``zoo: warning:`` line on
    stderr when ``warn`` (pass ``False`` for a second restore of the same state, or on a rank
    that does not speak).
    """
    torch.set_rng_state(state["torch"])
    problem = _restore_cuda_rng(state, device)
    if problem is not None:
        problem += (
            ": the CUDA random state is not restored, so dropout and other random layers draw other "
            "numbers than the uninterrupted run would have"
        )
        if warn:
            print(f"zoo: warning: {problem}", file=sys.stderr, flush=True)
    py = state.get("python")
    if py:
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npy = state.get("numpy")
    if npy:
        import numpy as np

        np.random.set_state(
            (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
        )
    if generator is not None and state.get("shuffle") is not None:
        generator.set_state(state["shuffle"])
    return problem


def _distribution_version(name: str) -> str | None:
    """An installed distribution's version, read from its metadata: importing torchvision for
    its ``__version__`` would cost every run ~2.8 s and 160 MiB (it imports torch._dynamo)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(*, zoo_version: str, plugins: list[dict[str, Any]]) -> dict[str, Any]:
    """Who wrote a checkpoint: zoo, torch and Python versions and the plugin distributions.

    ``plugins`` is ``PluginHost.plugin_records()``: the caller knows the plugin host, this
    module does not (it depends on torch and zoo.errors only).
    """
    return {
        "zoo": zoo_version,
        "torch": str(torch.__version__),  # a TorchVersion object would need weights_only=False
        "torchvision": _distribution_version("torchvision"),
        "python": platform.python_version(),
        "plugins": [dict(p) for p in plugins],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def make_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    spec: Mapping[str, Any],
    metrics: Mapping[str, Any],
    rng: Mapping[str, Any],
    partial: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """The checkpoint dict of CONTRACT.md, on the CPU, keys of the bare (unwrapped) model.

    ``provenance``: what :func:`provenance` returns for the process that saves.
    """
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"checkpoint spec lacks {missing}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": cpu_copy(bare_model(model).state_dict()),
        "optimizer": cpu_copy(optimizer.state_dict()),
        "epoch": int(epoch),
        "spec": dict(spec),
        "metrics": dict(metrics),
        "rng": cpu_copy(dict(rng)),
        "provenance": dict(provenance),
        "partial": cpu_copy(dict(partial)) if partial is not None else None,
    }


# -- loading ------------------------------------------------------------------------------------

# torch.load(weights_only=True) is only a sandbox from this release on: earlier ones have known
# escapes by which a crafted file runs code anyway (CVE-2025-32434, CVE-2026-24747).
MIN_TORCH = (2, 10)


def torch_version() -> tuple[int, int]:
    """``(major, minor)`` of the torch in use; ``(0, 0)`` when its version cannot be read."""
    match = re.match(r"(\d+)\.(\d+)", str(torch.__version__))
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def require_safe_torch() -> None:
    """Refuse to unpickle anything on a torch whose ``weights_only`` loading can be escaped."""
    if torch_version() < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        raise UsageError(
            f"torch {torch.__version__} cannot load files safely: releases before {need} let a crafted "
            f"file run code even with weights_only=True (CVE-2025-32434, CVE-2026-24747); "
            f"upgrade with pip install 'torch>={need}'"
        )


_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF", "a PDF document"),
    (b"\x93NUMPY", "a NumPy .npy array"),
)


def _sniff(head: bytes) -> str | None:
    """What a file is, from its first bytes, when it is certainly not a torch file."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None  # torch's zip format, or a legacy/plain pickle
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "a text file"


def _unsafe_global(message: str) -> str | None:
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def _brief(exc: BaseException, limit: int = 160) -> str:
    """``one_line(exc)`` when short, else its first sentence: torch's load errors go on for
    lines of advice, and a cut at a fixed length would end mid-word."""
    text = one_line(exc)
    if len(text) <= limit:
        return text
    end = re.search(r"[.!?](?=\s)", text)
    return text[: end.end()] if end else text


def safe_load(
    path: str | os.PathLike[str],
    *,
    map_location: Any = "cpu",
    trust: bool = False,
    what: str = "checkpoint",
) -> Any:
    """``torch.load(path, weights_only=True, map_location=...)`` with every failure a
    :class:`UsageError` naming the file and the problem.

    A file that pickles Python objects (``torch.save(model)``, the seed's method 1, or a
    crafted file) is refused unless ``trust``: then it is loaded with ``weights_only=False``,
    which runs whatever code the file names, after a warning on stderr.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} {path} does not exist")
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory, expected a file (e.g. {path / 'last.pt'})")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if not head:
        raise UsageError(f"{what} {path} is empty (0 bytes): a write that never finished; use another checkpoint")
    kind = _sniff(head)
    if kind == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UsageError(f"{what} {path} is a safetensors file: pip install safetensors to read it") from None
        device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
        try:
            return load_file(str(path), device=device)
        except Exception as exc:
            raise UsageError(f"{what} {path} is a damaged safetensors file: {one_line(exc)}") from exc
    if kind is not None:
        raise UsageError(f"{what} {path} is not a torch file: it looks like {kind}")
    require_safe_torch()
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says more
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        message = str(exc)
        unsafe = _unsafe_global(message)
        if unsafe is None:
            if isinstance(exc, (RuntimeError, EOFError)):
                problem = f"truncated or corrupt ({_brief(exc)})"
            elif "Unsupported operand" in message:  # pickle opcodes torch never writes
                problem = "not a torch file: a plain pickle (or corrupt), which the zoo does not unpickle"
            else:
                problem = f"not a torch file or corrupt ({_brief(exc)})"
            raise UsageError(f"{what} {path} is {problem}") from exc
        if not trust:
            raise UsageError(
                f"{what} {path} refused: it pickles Python objects ({unsafe}), which only "
                f"weights_only=False would load, running whatever code the file names; torch.save(model) "
                f"(the seed's method 1) writes such files, and so does an attacker. Pass --trust only "
                f"if you trust where the file came from, or ask for a state_dict (method 2)"
            ) from exc
    print(
        f"zoo: warning: loading {path} with weights_only=False (--trust): this unpickles {unsafe} "
        f"and can run arbitrary code with your permissions; only do this for files you made "
        f"or fully trust",
        file=sys.stderr,
    )
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # e.g. the pickled class is not importable: the method-1 trap
        raise UsageError(f"{what} {path} could not be unpickled even with --trust: {one_line(exc)}") from exc


def _is_safetensors(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as f:
            return _sniff(f.read(16)) == "safetensors"
    except OSError:
        return False


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def load_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu", trust: bool = False) -> dict[str, Any]:
    """A zoo checkpoint, checked: its format, version and keys. Anything else (a state_dict, a
    pickled model, a safetensors file) is a :class:`UsageError` that says what it is instead."""
    obj = safe_load(path, map_location=map_location, trust=trust)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise UsageError(
                f"checkpoint {path} has no valid format version ({version!r}): "
                f"it was not written by the zoo, or is damaged"
            )
        if version > VERSION:
            raise UsageError(
                f"checkpoint {path} has format version {version}; this zoo reads version {VERSION}: upgrade the zoo"
            )
        missing = [k for k in REQUIRED_KEYS if k not in obj]
        spec = obj.get("spec")
        if not missing and isinstance(spec, Mapping):
            missing = [f"spec.{k}" for k in SPEC_KEYS if k not in spec]
        elif not missing:
            missing = ["spec"]
        if missing:
            raise UsageError(f"checkpoint {path} is incomplete: it lacks {', '.join(missing)}")
        return dict(obj)
    if isinstance(obj, nn.Module):
        what = f"a whole pickled model ({type(obj).__module__}.{type(obj).__name__}, method 1)"
        use = f"use its weights with zoo run MODEL OPTIMIZER --weights {path} --trust"
    elif _is_state_dict(obj):
        kind = "a safetensors file" if _is_safetensors(path) else "a plain state_dict"
        what = f"{kind} ({len(obj)} tensors, e.g. '{next(iter(obj))}')"
        use = f"use it as base weights with zoo run MODEL OPTIMIZER --weights {path}"
    else:
        what = f"a {type(obj).__name__}" + (
            f" with keys {sorted(map(str, obj))[:5]}" if isinstance(obj, Mapping) else ""
        )
        use = "expected the last.pt or best.pt of a zoo run directory"
    raise UsageError(f"{path} is not a zoo checkpoint: it is {what}, with no spec to rebuild the model; {use}")


# -- weights into a model ----------------------------------------------------------------------


def state_dict_from(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state_dict inside whatever a weights file held: a state_dict, a zoo checkpoint's
    ``"model"``, or (trusted) a whole model. ``module.``/``_orig_mod.`` prefixes are removed."""
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        obj = obj.get("model")
    elif isinstance(obj, nn.Module):
        obj = bare_model(obj).state_dict()
    if not _is_state_dict(obj):
        kind = type(obj).__name__
        keys = f" (keys {sorted(map(str, obj))[:5]})" if isinstance(obj, Mapping) else ""
        raise UsageError(
            f"{source} holds a {kind}{keys}, not a state_dict of tensors; pass a file of parameter "
            f"names to tensors (torch.save(model.state_dict(), PATH), safetensors) or a zoo checkpoint"
        )
    state = dict(obj)
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _first(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, target: str) -> None:
    """``model.load_state_dict(state, strict=True)``, but a mismatch names the first missing,
    unexpected and wrongly shaped keys (``source`` is the file, ``target`` the model)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_first(shapes, 2)}")
    if problems:
        raise UsageError(f"{source} does not fit {target}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)

"""``zoo export``: a checkpoint's model in the seed's two saving methods, or as safetensors.

* ``state-dict`` (method 2, the recommended one): ``torch.save(model.state_dict(), path)``;
  load with ``model.load_state_dict(torch.load(path, weights_only=True))`` into a model you
  built yourself (for a registry variant: the base model with the same edits).
* ``full`` (method 1): ``torch.save(model, path)``, structure and weights pickled together.
  Loading it needs ``torch.load(path, weights_only=False)`` and the model's classes importable
  (the seed's "trap"), and unpickling runs code: only trusted code should load such a file.
* ``safetensors``: the state_dict in the safetensors format, which holds tensors only and
  loads without unpickling anything (``safetensors.torch.load_file``).

Every file is written atomically (temporary file, fsync, rename), never over an existing
file unless asked (``--force``), and never into a directory that does not exist.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from zoo.checkpoint import load_checkpoint
from zoo.errors import UsageError
from zoo.files import atomic_save, atomic_write
from zoo.registry import get_registry, model_from_checkpoint

__all__ = ["FORMATS", "check_output", "export"]

FORMATS = ("state-dict", "full", "safetensors")


def check_output(out: Path, source: Path, *, force: bool = False) -> None:
    """Refuse an output path before anything is read or written: the checkpoint itself, a
    directory, an existing file without ``force``, a parent directory that does not exist."""
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise UsageError(f"export to {out} would overwrite the checkpoint it reads: choose another -o")
    if out.is_dir():
        raise UsageError(f"-o {out} is a directory: give a file name such as {out / 'model.pt'}")
    if os.path.lexists(out) and not force:  # lexists: a dangling symlink is something too
        raise UsageError(f"-o {out} exists: pass --force to replace it, or choose another path")
    parent = out.parent
    if not parent.exists():
        # Creating it would hide a typo in the path: the user creates it.
        raise UsageError(f"-o {out}: the directory {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise UsageError(f"-o {out}: {parent} is a file, not a directory")


def export(
    checkpoint: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    *,
    trust: bool = False,
    force: bool = False,
    registry_files: Sequence[str] = (),
) -> Path:
    """Write the checkpoint's model to ``out`` in ``fmt`` (one of :data:`FORMATS`); returns the path.
    The model is rebuilt from the registry with ``registry_files`` (``--registry``) layered over it.

    An existing ``out`` is refused unless ``force``, and its directory must exist. The file is
    written atomically: a failure leaves what was at ``out`` (if anything) untouched.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format '{fmt}': expected one of {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    source = Path(checkpoint).expanduser()
    check_output(out, source, force=force)
    if fmt == "safetensors":
        try:
            import safetensors.torch
        except ImportError:
            raise UsageError("--format safetensors needs the safetensors package: pip install safetensors") from None

    registry = get_registry(registry_files)
    ckpt = load_checkpoint(source, trust=trust)
    spec = ckpt["spec"]
    model = model_from_checkpoint(ckpt, source=str(source), registry=registry).eval()

    if fmt == "state-dict":
        return atomic_save(model.state_dict(), out)
    if fmt == "full":
        return atomic_save(model, out)
    # safetensors refuses tensors that share memory or are not contiguous: give it fresh copies.
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "format": "pt",
        "zoo.model": spec["model"],
        "zoo.dataset": spec["dataset"],
        "zoo.classes": json.dumps(spec["classes"]),
        "zoo.input_size": json.dumps(list(spec["input_size"])),
        "zoo.mean": json.dumps(list(spec.get("mean") or [])),
        "zoo.std": json.dumps(list(spec.get("std") or [])),
    }
    data = safetensors.torch.save(tensors, metadata=metadata)
    return atomic_write(out, lambda f: f.write(data))

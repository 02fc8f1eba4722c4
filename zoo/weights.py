"""``zoo run --weights imagenet|PATH``: a base model's weights, read (and refused, if unsafe or
corrupt) before anything is built or written.

``--weights imagenet`` is the model's default pretrained weights: the first of the ``weights``
its plugin registered (torchvision's ``DEFAULT``), from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``), downloaded only with ``--download``. torchvision names its
files with the first hex digits of their SHA-256 (``resnet18-f37072fd.pth``); a cached file is
hashed before it is loaded, and one whose hash does not match its name is refused, never
unpickled.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.checkpoint import load_state_dict_strict, safe_load, state_dict_from
from zoo.errors import RunError, UsageError, one_line

__all__ = ["HASH_IN_NAME", "name_hash", "sha256_of", "verify_hash", "hub_checkpoints", "imagenet_state_dict",
           "base_weights", "BaseWeights", "model_name"]  # fmt: skip

# torch.hub's HASH_REGEX: what load_state_dict_from_url(check_hash=True) checks a download against
HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")
_CHUNK = 1 << 20


def name_hash(filename: str) -> str | None:
    """The SHA-256 prefix a file's name carries (``resnet18-f37072fd.pth``: ``f37072fd``), or None."""
    found = HASH_IN_NAME.search(filename)
    return found.group(1) if found and found.group(1) else None


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_hash(path: Path, url: str | None = None) -> None:
    """Refuse ``path`` (a UsageError naming it, both hash prefixes and the fix) when its SHA-256
    does not start with the prefix its name carries. A name without one is not checked."""
    expected = name_hash(path.name)
    if expected is None:
        return
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise UsageError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    if not actual.startswith(expected):
        fetch = f"download {url} to that path" if url else "download it again"
        raise UsageError(
            f"weights file {path} is corrupt or not the published file: its name says its SHA-256 starts "
            f"{expected}, but it starts {actual[: len(expected)]}; it was not loaded. Delete it and download it "
            f"again ({fetch}, or add --download)"
        )


def hub_checkpoints() -> Path:
    """Where torch.hub keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def model_name(entry: Any, registry: Any = None) -> str:
    """The name ``zoo list`` shows model ``entry`` by (``PLUGIN/NAME`` where the bare name reaches
    another model) in ``registry``, by default the one this process loaded."""
    from zoo.registry import loaded_registry, qualifier

    registry = registry if registry is not None else loaded_registry()
    plugin = getattr(entry, "plugin", None)
    qualified = f"{qualifier(entry)}/{entry.name}" if plugin else entry.name
    if registry is not None and registry.lookup("model", qualified) is entry:
        return registry.shown_name(entry)
    return qualified


def _base_name(entry: Any, registry: Any = None) -> str:
    """How messages name the model whose weights ``entry`` loads: itself, or a variant's base."""
    from zoo.registry import loaded_registry

    if not entry.base:
        return model_name(entry, registry)
    registry = registry if registry is not None else loaded_registry()
    base = registry.lookup("model", entry.base) if registry is not None else None
    return model_name(base, registry) if base is not None else entry.base


def imagenet_state_dict(entry: Any, download: bool) -> tuple[dict[str, Any], str]:
    """The default pretrained weights of model ``entry`` (a variant: its base's) and a name for
    them in messages; from the torch hub cache, hash-checked, or downloaded with ``download``."""
    base = _base_name(entry)
    if not entry.weights:
        raise UsageError(
            f"--weights imagenet: there are no pretrained weights for model '{base}' (zoo show {base}); "
            f"pass a state_dict file with --weights PATH instead"
        )
    row: Mapping[str, Any] = entry.weights[0]
    path = hub_checkpoints() / row["file"]
    source = f"ImageNet weights {row['name']} of {base}"
    if path.exists():
        verify_hash(path, row["url"])
        return state_dict_from(safe_load(path, what="weights file"), str(path)), source
    if not download:
        raise UsageError(
            f"--weights imagenet: the {row['name']} weights of {base} are not in the torch hub cache: expected "
            f"{path}; download {row['url']} to that path (the cache is $TORCH_HOME/hub, "
            f"TORCH_HOME={os.environ.get('TORCH_HOME', '~/.cache/torch')}), or add --download"
        )
    return _download(row, path), source


def _download(row: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """``row``'s weights fetched into the hub cache at ``path``; a failure (no network, a bad
    download) is a RunError naming the URL and where to put the file by hand."""
    import torch

    try:  # check_hash: torch.hub verifies the download against the same prefix
        state = torch.hub.load_state_dict_from_url(
            row["url"], model_dir=str(path.parent), map_location="cpu", check_hash=True, weights_only=True,
            file_name=row["file"],
        )  # fmt: skip
    except (OSError, RuntimeError) as exc:
        raise RunError(
            f"--weights imagenet --download: could not download {row['url']}: {one_line(exc)}; download it "
            f"elsewhere and place it at {path} (the torch hub cache), then run again"
        ) from exc
    return state_dict_from(state, row["url"])


def _switched_off(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without the heads ``model`` has switched off: torchvision sets an auxiliary head
    to None (googlenet's aux1 and aux2, inception_v3's AuxLogits) and its published weights still
    hold it, as torchvision drops it when it loads them."""
    missing = object()
    return {k: v for k, v in state.items() if getattr(model, k.partition(".")[0], missing) is not None}


class BaseWeights:
    """The ``before_edits`` callback of ``--weights``: loads them into the base model. ``weights``
    (``"imagenet"`` or the file) tells the registry how to build that base (GoogLeNet takes
    its ImageNet weights' input transform)."""

    def __init__(self, weights: str, state: dict[str, Any], source: str, entry: Any, base: str):
        self.weights, self.state, self.source, self.entry, self.base = weights, state, source, entry, base

    def __call__(self, model: Any) -> None:
        imagenet = self.weights == "imagenet"
        fitted = _switched_off(model, self.state) if imagenet else self.state
        try:
            load_state_dict_strict(model, fitted, source=f"--weights {self.source}", target=f"base model '{self.base}'")
        except UsageError as exc:
            hint = _fine_tune_hint(model, fitted, self.entry, self.base)
            if hint is None:
                raise
            raise UsageError(f"{exc}. {hint}") from exc


def _fine_tune_hint(model: Any, state: Mapping[str, Any], entry: Any, base: str) -> str | None:
    """What to do when the weights' head is of another width than the run's number of classes
    (the base built for them): a variant with ``base_classes``, as ``resnet18-finetune``."""
    own = model.state_dict()
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not shapes or set(own) != set(state) or entry.base_classes is not None:
        return None
    head = shapes[-1]  # the last layer's bias or weight: (classes,) or (classes, features)
    classes = state[head].shape[0]
    return (
        f"The weights are for {classes} classes, the run for {own[head].shape[0]}: to fine-tune, add a "
        f"variant to a registry file with base: {base}, base_classes: {classes} and an edit that replaces "
        f"its head ('{head.rpartition('.')[0]}') with one of $num_classes outputs, as the built-in "
        f'resnet18-finetune does (zoo show resnet18-finetune; docs/registry-file.md, "Fine-tuning")'
    )


def base_weights(weights: str | None, entry: Any, *, download: bool = False, trust: bool = False
                 ) -> BaseWeights | None:  # fmt: skip
    """The ``before_edits`` callback that loads ``--weights`` (``imagenet`` or a file) into the
    base model of ``entry``, or None without ``weights``. The file is read (and refused, if
    unsafe or corrupt) now, before anything is built. Messages name models as ``zoo list`` does."""
    if not weights:
        return None
    base = _base_name(entry)
    if weights == "imagenet":
        state, source = imagenet_state_dict(entry, download)
    else:
        source = weights
        state = state_dict_from(safe_load(source, trust=trust, what="weights file"), f"--weights {source}")
    return BaseWeights(weights, state, source, entry, base)

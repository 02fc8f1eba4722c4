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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zoo.checkpoint import load_state_dict_strict, safe_load, state_dict_from
from zoo.errors import UsageError

__all__ = ["HASH_IN_NAME", "name_hash", "sha256_of", "verify_hash", "hub_checkpoints", "imagenet_state_dict",
           "base_weights"]  # fmt: skip

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


def imagenet_state_dict(entry: Any, download: bool) -> tuple[dict[str, Any], str]:
    """The default pretrained weights of model ``entry`` (a variant: its base's) and a name for
    them in messages; from the torch hub cache, hash-checked, or downloaded with ``download``."""
    base = entry.base or entry.name
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
    import torch

    try:  # check_hash: torch.hub verifies the download against the same prefix
        state = torch.hub.load_state_dict_from_url(
            row["url"], model_dir=str(path.parent), map_location="cpu", check_hash=True, weights_only=True,
            file_name=row["file"],
        )  # fmt: skip
    except Exception as exc:
        raise UsageError(
            f"--weights imagenet: could not download {row['url']} to {path}: {exc}; put the file there by hand"
        ) from exc
    return state_dict_from(state, row["url"]), source


def _switched_off(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without the heads ``model`` has switched off: torchvision sets an auxiliary head
    to None (googlenet's aux1 and aux2, inception_v3's AuxLogits) and its published weights still
    hold it, as torchvision drops it when it loads them."""
    missing = object()
    return {k: v for k, v in state.items() if getattr(model, k.partition(".")[0], missing) is not None}


def base_weights(weights: str | None, entry: Any, *, download: bool = False, trust: bool = False
                 ) -> Callable[[Any], None] | None:  # fmt: skip
    """The ``before_edits`` callback that loads ``--weights`` (``imagenet`` or a file) into the
    base model of ``entry``, or None without ``weights``. The file is read (and refused, if
    unsafe or corrupt) now, before anything is built."""
    if not weights:
        return None
    base = entry.base or entry.name
    imagenet = weights == "imagenet"
    if imagenet:
        state, source = imagenet_state_dict(entry, download)
    else:
        source = weights
        state = state_dict_from(safe_load(source, trust=trust, what="weights file"), f"--weights {source}")

    def load(model: Any) -> None:
        fitted = _switched_off(model, state) if imagenet else state
        load_state_dict_strict(model, fitted, source=f"--weights {source}", target=f"base model '{base}'")

    return load

"""The Python API: what the command line does, from a script or a notebook.

``import zoo`` then ``zoo.create_model("tudui")``, ``zoo.train("tudui", "sgd", data="digits")``, ...
(``zoo/__init__.py`` loads this module on the first such name). The same registry, plugins,
checks and error messages as ``zoo``: every user error raises a :class:`zoo.ZooError` subclass
(:class:`~zoo.errors.UsageError` for bad input), never ``SystemExit``. Nothing but zoo.errors is
imported at module level: torch arrives with the first function that needs it.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from zoo.errors import UsageError, ZooError, one_line

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "list_models",
    "list_optimizers",
    "list_datasets",
    "create_model",
    "create_optimizer",
    "load_checkpoint",
    "train",
    "ZooError",
]


# -- listing (no torch) --------------------------------------------------------------------------


def _names(kind: str, pattern: str | None) -> list[str]:
    from zoo.registry import get_registry

    return get_registry().names(kind, pattern)


def list_models(pattern: str | None = None) -> list[str]:
    """The model names ``zoo list models [PATTERN]`` lists: ``timm/resnet18`` where another plugin
    holds the bare name; PATTERN is a glob (``'resnet*'``, ``'timm/*'``)."""
    return _names("model", pattern)


def list_optimizers(pattern: str | None = None) -> list[str]:
    """The optimizer names (presets included) ``zoo list optimizers [PATTERN]`` lists."""
    return _names("optimizer", pattern)


def list_datasets(pattern: str | None = None) -> list[str]:
    """The dataset names ``zoo list datasets [PATTERN]`` lists."""
    return _names("dataset", pattern)


# -- models and optimizers -----------------------------------------------------------------------


def create_model(name: str, num_classes: int = 10, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Model ``name`` for ``num_classes`` classes, its registry edits applied, in training mode.

    ``weights``: None (random), ``"imagenet"`` (torchvision's, from the torch hub cache) or a
    state_dict file, loaded into the base model before the edits, as ``zoo run --weights``.
    """
    from zoo.registry import get_registry
    from zoo.weights import base_weights

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
    registry = get_registry()
    entry = registry.model(name)
    before_edits = base_weights(os.fspath(weights), entry) if weights is not None else None
    return registry.build_model(name, num_classes, before_edits=before_edits)


def _text(value: Any) -> str:
    """A Python value as the command line would write it (``(0.9, 0.99)`` -> ``0.9,0.99``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def create_optimizer(name: str, params: Iterable[Any] | nn.Module, **hparams: Any) -> torch.optim.Optimizer:
    """Optimizer (or preset) ``name`` over ``params`` (parameters, parameter groups, or a model:
    its trainable parameters), the preset's defaults under ``hparams``.

    Each hyper-parameter is checked against the factory's signature and converted to its type
    exactly as ``zoo run --opt KEY=VALUE`` does: an unknown name is a UsageError listing the valid ones.
    """
    from torch import nn

    from zoo.eager import without_dynamo
    from zoo.hparams import parse_hparams
    from zoo.registry import get_registry

    registry = get_registry()
    entry = registry.optimizer(name)
    factory = registry.optimizer_factory(name)
    checked = parse_hparams(name, factory, entry.defaults, opts={k: _text(v) for k, v in hparams.items()})
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    try:
        with without_dynamo():  # as a run builds it: constructing imports no torch._dynamo (2 s)
            return factory(params, **checked)
    except ZooError:
        raise
    except Exception as exc:  # the factory's own check (e.g. ValueError: invalid momentum)
        raise UsageError(f"optimizer '{name}': {one_line(exc)}") from exc


def load_checkpoint(path: str | os.PathLike[str], trust: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """A run's checkpoint (``last.pt``, ``best.pt``): ``(model in eval mode, checkpoint dict)``.

    As ``zoo validate``: loaded with ``weights_only=True``, and the model rebuilt from the
    registry (base + the recorded edits) with its weights loaded strictly. ``trust=True`` (the
    command line's ``--trust``) allows a pickled file, which can run code: only for files you trust.
    """
    from zoo.checkpoint import load_checkpoint as read_checkpoint
    from zoo.registry import model_from_checkpoint

    checkpoint = read_checkpoint(path, trust=trust)
    model = model_from_checkpoint(checkpoint, source=str(path))
    return model.eval(), checkpoint


# -- training: zoo run, through the command line's own parser ------------------------------------


def _run_parser() -> Any:
    """The ``zoo run`` subparser of the command line's parser."""
    from zoo.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if getattr(a, "choices", None) and "run" in a.choices)
    return commands.choices["run"]


def _flags(options: Mapping[str, Any], parser: Any) -> list[str]:
    """``zoo run`` flags for keyword ``options``: ``limit_train=128`` -> ``--limit-train=128``,
    ``amp=True`` -> ``--amp``, lists (and ``opt``'s dicts) -> the flag repeated."""
    by_flag = {s: a for a in parser._actions for s in a.option_strings if s.startswith("--")}
    names = sorted(f[2:].replace("-", "_") for f in by_flag if f not in ("--help",))
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        action = by_flag.get(flag)
        if action is None or name == "help" or "-" in name:
            close = difflib.get_close_matches(name, names, n=2)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UsageError(f"zoo.train: unknown option '{name}'{hint} (the options of zoo run --help, by long name)")
        if value is None or (value is False and action.nargs == 0):
            continue
        if action.nargs == 0:  # a switch
            if value is not True:
                raise UsageError(f"zoo.train: {name} is a switch: expected True or False, got {value!r}")
            argv.append(flag)
            continue
        if isinstance(value, bool):
            raise UsageError(f"zoo.train: {name} takes a value ({flag} {action.metavar or 'VALUE'}), got {value!r}")
        repeatable = type(action).__name__ == "_AppendAction"
        if isinstance(value, Mapping) and repeatable:
            values = [f"{k}={_text(v)}" for k, v in value.items()]
        elif isinstance(value, (list, tuple)) and repeatable:
            values = [_text(v) for v in value]
        else:
            values = [_text(value)]
        argv += [f"{flag}={text}" for text in values]
    return argv


def train(model: str | None = None, optimizer: str | None = None, **options: Any) -> dict[str, Any]:
    """``zoo run MODEL OPTIMIZER`` with ``options`` given by their long names; returns the
    ``zoo run --json`` summary.

    ``zoo.train("tudui", "sgd", data="digits", epochs=1, limit_train=256, out="runs/x")``: a
    switch is a boolean (``quiet=True``), a repeatable option a list (``augment=["flip"]``; ``opt``
    and ``sched_opt`` also take a dict, ``opt={"momentum": 0.9}``). The command line's parser
    and checks read them, so each error is the command line's, raised as a ZooError subclass.
    ``nproc`` is refused: the run happens in this process (``zoo run --nproc N`` starts workers).
    """
    from zoo.cli import run_config
    from zoo.runner import run

    for name in ("nproc", "max_restarts"):
        if options.get(name) not in (None, 1 if name == "nproc" else 0):
            raise UsageError(
                f"zoo.train: {name} is for the command line only: zoo.train runs in this process; "
                f"use zoo run MODEL OPTIMIZER --nproc N for distributed training"
            )
    parser = _run_parser()
    argv = [*(name for name in (model, optimizer) if name is not None), *_flags(options, parser)]
    if optimizer is not None and model is None:
        raise UsageError("zoo.train: an optimizer needs a model: zoo.train(MODEL, OPTIMIZER, ...)")
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = parser.parse_args(argv)
    except SystemExit:
        lines = said.getvalue().strip().splitlines() or ["zoo: error: bad arguments"]
        raise UsageError(lines[-1].removeprefix("zoo: error: ")) from None
    args.argv = ["run", *argv]
    return run(run_config(args))

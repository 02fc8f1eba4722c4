"""``--resume``: checking that a checkpoint continues the same run, and what it brings back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from zoo.config import RunConfig
from zoo.errors import UsageError

__all__ = ["check_resume", "changed_hparams", "resumed_config", "RESUMED_OPTIONS"]

# What a resumed run takes from its own config.yaml unless the command line names it again.
RESUMED_OPTIONS = (
    *("data", "data_dir", "batch_size", "limit_train", "limit_val", "seed", "skip_bad_images", "input_size"),
    # the recipe
    *("sched", "sched_opts", "sched_interval", "augment", "ema", "label_smoothing", "clip_grad_norm", "accumulate"),
    *("patience", "recipe"),
)

_FLAGS = {"dataset": "--data", "batch_size": "--batch-size", "limit_train": "--limit-train", "limit_val": "--limit-val",
          "sched": "--sched", "augment": "--augment", "ema": "--ema", "accumulate": "--accumulate"}  # fmt: skip


def _check_global_batch(spec: Mapping[str, Any], config: RunConfig, path: Path, world: int) -> bool:
    """Whether the checkpoint's global batch (``--batch-size`` x processes) is this run's.

    That is what the updates are made of, so a run of 2 processes x 16 continues as 1 x 32, or
    4 x 8. Across process counts, another global batch is refused here with the fix; in one
    process, False lets the plain ``--batch-size`` comparison say it.
    """
    if "batch_size" not in spec:
        return False
    was_world = int(spec.get("world_size", 1))
    total = spec["batch_size"] * was_world
    if total == config.batch_size * world:
        return True
    if (was_world, world) == (1, 1):
        return False
    fix = (
        f"--batch-size {total // world} with {world} process(es)"
        if total % world == 0
        else f"a number of processes that divides {total}"
    )
    raise UsageError(
        f"cannot resume {path}: it was trained with a global batch of {total} (--batch-size "
        f"{spec['batch_size']} x {was_world} process(es)), not {config.batch_size * world} (--batch-size "
        f"{config.batch_size} x {world}); resume with {fix}, or start a new run with another --out"
    )


def _same_entry(recorded: Any, qualified: str) -> bool:
    """Whether a checkpoint's model or optimizer name is the entry ``qualified`` (PLUGIN/NAME)
    names: checkpoints record qualified names, those written before them the bare NAME."""
    if not isinstance(recorded, str):
        return False
    return recorded == qualified or ("/" not in recorded and recorded == qualified.rpartition("/")[2])


def check_resume(
    checkpoint: Mapping[str, Any],
    config: RunConfig,
    dataset: str,
    path: Path,
    world: int = 1,
    names: Mapping[str, str] | None = None,
) -> None:
    """A resumed run must be the same run: same model, optimizer, data and batches, and
    ``--epochs`` no fewer than it has trained. ``names``: the qualified names of this run's model
    and optimizer, compared with those the checkpoint records."""
    spec = dict(checkpoint["spec"])
    for key, qualified in (names or {}).items():
        if _same_entry(spec.get(key), qualified):
            spec[key] = getattr(config, key)  # the same entry, whichever name reached it
    ours = {
        "model": config.model,
        "optimizer": config.optimizer,
        "dataset": dataset,
        "batch_size": config.batch_size,
        "limit_train": config.limit_train,
        "limit_val": config.limit_val,
        "sched": config.sched,
        "augment": list(config.augment),
        "ema": config.ema,
        "accumulate": config.accumulate,
    }
    if _check_global_batch(spec, config, path, world):
        del ours["batch_size"]
    for key, value in ours.items():
        if key in spec and spec[key] != value:
            flag = _FLAGS.get(key, key.upper())
            raise UsageError(
                f"cannot resume {path}: it was trained with {flag} {spec[key]}, not {value}; "
                f"resume with the same {flag}, or start a new run with another --out"
            )
    size = spec.get("input_size")
    if config.input_size is not None and size and list(size[1:]) != [config.input_size] * 2:
        raise UsageError(
            f"cannot resume {path}: it was trained at {size[1]}x{size[2]} pixels, not --input-size "
            f"{config.input_size}; resume without --input-size (or with --input-size {size[1]}), or start a new "
            f"run with another --out"
        )
    planned = spec.get("sched_epochs")
    if planned is not None and config.sched is not None and config.epochs != planned:
        # The schedule's length (T_max, total_steps, ...) was filled in from --epochs and comes
        # back with its state: another length would replay the wrong curve, or run past its end.
        raise UsageError(
            f"cannot resume {path} with --epochs {config.epochs}: its schedule '{spec.get('sched')}' was "
            f"planned for {planned} epochs; resume with --epochs {planned}, or start a new run with another --out"
        )
    done, partial = int(checkpoint["epoch"]), checkpoint.get("partial")
    if partial and config.epochs < partial["epoch"]:
        raise UsageError(
            f"cannot resume {path} with --epochs {config.epochs}: it stopped during epoch {partial['epoch']}; "
            f"pass --epochs {partial['epoch']} or more"
        )
    if config.epochs < done:
        raise UsageError(
            f"{path} has already trained {done} epochs; --epochs {config.epochs} asks for fewer "
            f"(pass more than {done} to continue)"
        )


def changed_hparams(saved: Mapping[str, Any], given: Mapping[str, Any], config: RunConfig) -> dict[str, Any]:
    """The hyper-parameters this command line gives again with another value (e.g. a lower
    ``--lr`` after a NaN): they replace the saved ones; every other one keeps its saved value."""
    named = set(config.opts) | ({"lr"} if config.lr is not None else set())
    return {k: given[k] for k in named if k in given and saved.get(k) != given[k]}


def _given(config: RunConfig) -> set[str]:
    if config.given is not None:
        return set(config.given)
    defaults = RunConfig(config.model, config.optimizer)
    return {name for name in RESUMED_OPTIONS if getattr(config, name) != getattr(defaults, name)}


def resumed_config(config: RunConfig, saved: Mapping[str, Any], world: int = 1) -> RunConfig:
    """The config a resumed run trains with: each of :data:`RESUMED_OPTIONS` not given on this
    command line is the run's own, from its ``config.yaml`` (``saved``); one given and different
    is refused later, by :func:`check_resume`.

    The batch size is taken as the same global batch over this run's ``world`` processes when
    they divide it (a run of 2 x 16 resumes in one process as 32).
    """
    given = _given(config)
    changes = {}
    for name in RESUMED_OPTIONS:
        key = "dataset" if name == "data" else name
        if name not in given and key in saved:
            changes[name] = tuple(saved[key]) if name == "augment" else saved[key]
    if "batch_size" in changes and isinstance(changes["batch_size"], int):
        total = changes["batch_size"] * int(saved.get("world_size") or saved.get("nproc") or 1)
        if total % world == 0:
            changes["batch_size"] = total // world
    return replace(config, **changes)

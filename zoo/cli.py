"""The ``zoo`` command line: argparse in front, one line and an exit code for every error.

Only what a command needs is imported: ``zoo list`` and ``zoo plugins`` never import torch.
Exit codes (CONTRACT.md): 0 success, 1 run-time failure, 2 usage or bad input, 130 SIGINT,
143 SIGTERM. Errors are one ``zoo: error:`` line on stderr; ``ZOO_DEBUG=1`` adds tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from zoo import __version__
from zoo.errors import UsageError, ZooError, debug_enabled, error_report, report_prefix

EPILOG = "Errors exit 2 for bad input, 1 for run-time failures. ZOO_DEBUG=1 shows tracebacks."


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors in the zoo's one-line form (exit 2), and no abbreviations: a
    prefix of a flag (``--epo``) is an unknown flag, so that adding a flag never changes what an
    existing command line means. Sub-commands are made by this class too, so they inherit both."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"zoo: error: {message} (see: {self.prog} --help)\n")
        sys.exit(2)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse's, but an unknown flag is reported by the sub-command that was given it,
        with the flags it was perhaps meant to be."""
        self._check_command(sys.argv[1:] if args is None else list(args))
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = _chosen_command(self, parsed)
            command.error(f"unrecognized arguments: {' '.join(extras)}{_did_you_mean(command, extras)}")
        return parsed

    def _check_command(self, args: list[str]) -> None:
        """Before argparse's "required: COMMAND" or "invalid choice": what the first word was
        perhaps meant to be (``zoo lst``, ``zoo --vers``)."""
        commands = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if not commands or not args:
            return
        first = args[0]
        flags = [s for a in self._actions for s in a.option_strings]
        if first.startswith("-") and first.split("=", 1)[0] not in flags:
            self.error(f"unrecognized arguments: {first}{_did_you_mean(self, [first])}")
        if not first.startswith("-") and first not in commands:
            close = _nearest(first, list(commands))
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.error(f"unknown command '{first}'{hint} (commands: {', '.join(commands)})")


def _chosen_command(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The sub-command parser ``parsed`` went through (``parser`` itself when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(getattr(parsed, action.dest or "", None), parser)
    return parser


def _did_you_mean(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """`` (did you mean --epochs for --epo? ...)``: the flags an unknown one starts or nearly spells."""
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    hints, abbreviated = [], False
    for given in (extra.split("=", 1)[0] for extra in extras if extra.startswith("--")):
        starts = [f for f in flags if f.startswith(given)]
        close = starts or _nearest(given, flags)
        abbreviated |= bool(starts)
        hints += [f"{' or '.join(close)} for {given}"] if close else []
    if not hints:
        return ""
    return f" (did you mean {', '.join(hints)}?{' flags are never abbreviated' if abbreviated else ''})"


def _nearest(given: str, names: Sequence[str]) -> list[str]:
    """The one or two names ``given`` nearly spells, closest first: a second only when it is nearly
    as close as the first (``--epohcs``: ``--epochs``, not ``--nproc`` too)."""
    import difflib

    scored = sorted(((difflib.SequenceMatcher(None, given, name).ratio(), name) for name in names), reverse=True)[:2]
    return [name for ratio, name in scored if ratio >= 0.6 and ratio >= scored[0][0] - 0.1]


def _int_at_least(minimum: int, expected: str):
    """An argparse type: an integer of at least ``minimum``, with an error naming it."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _registry(args: argparse.Namespace) -> Any:
    from zoo.registry import get_registry

    return get_registry(getattr(args, "registry", None) or ())


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


# -- registry commands ------------------------------------------------------------------------

KIND_ARGS = {
    "models": "model",
    "optimizers": "optimizer",
    "datasets": "dataset",
    "schedulers": "scheduler",
    "augmentations": "augmentation",
    "recipes": "recipe",
}
KIND_ARGS |= {kind: kind for kind in KIND_ARGS.values()}  # `zoo list model` is `zoo list models`


def cmd_list(args: argparse.Namespace) -> int:
    kind, pattern = None, args.pattern
    if args.kind in KIND_ARGS:
        kind = KIND_ARGS[args.kind]
    elif args.kind is not None:
        if pattern is not None:
            raise UsageError(
                f"unknown kind '{args.kind}': expected models, optimizers, datasets, schedulers, augmentations "
                "or recipes"
            )
        pattern = args.kind  # `zoo list 'vgg*'`: a pattern over every kind
    registry = _registry(args)
    entries = list(registry.entries(kind, pattern))
    # "name": the name that reaches the entry (PLUGIN/NAME where another holds the bare NAME)
    rows = [
        {
            "kind": e.kind,
            "name": registry.shown_name(e),
            "plugin": e.plugin,
            "summary": e.summary,
            "qualified": registry.qualified_name(e),
            # models: their native (C, H, W) and parameters at 1000 classes (null: not known unbuilt)
            **({"input_size": list(e.input_size), "params": e.params} if e.kind == "model" else {}),
        }
        for e in entries
    ]
    if args.json:
        _print_json(rows)
    elif rows:
        print(
            _table(
                [[r["kind"], r["name"], r["plugin"], r["summary"]] for r in rows], ["kind", "name", "plugin", "summary"]
            )
        )
    else:
        print(f"nothing matches {pattern!r}" if pattern else "nothing registered", file=sys.stderr)
    return 0


def _show_model(registry: Any, entry: Any, num_classes: int | None) -> dict[str, Any]:
    dataset = registry.datasets.get(entry.default_dataset or "")
    classes = num_classes or (dataset.num_classes if dataset and dataset.num_classes else 10)
    # build_model's dry forward pass proves the output is (batch, classes) before we get here
    model = _model_for_show(registry, registry.qualified_name(entry), classes)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "kind": "model",
        "name": entry.name,
        "plugin": entry.plugin,
        "summary": entry.summary,
        "source": entry.source,
        "base": entry.base,
        "base_classes": entry.base_classes,
        "edits": [e.as_json() | {"text": str(e)} for e in entry.edits],
        "input_size": list(entry.input_size),
        "min_input_size": list(entry.min_input_size) if entry.min_input_size else None,
        "default_dataset": entry.default_dataset,
        "num_classes": classes,
        "parameters": params,
        "trainable_parameters": trainable,
        "params": entry.params,  # as registered: at 1000 classes (zoo list --json's)
        "weights": list(entry.weights),  # --weights imagenet loads the first
        "output_shape": ["batch", classes],
        "architecture": str(model),
    }


def _model_for_show(registry: Any, name: str, num_classes: int) -> Any:
    """The model as a run builds it, made on the meta device (no memory, no initialisation: as
    quick for ViT-H as for Tudui); on the CPU where a builder cannot work there (one that
    computes with tensors while constructing, as torchvision's RegNets do)."""
    import torch

    try:
        with torch.device("meta"):
            return registry.build_model(name, num_classes)
    except Exception:
        return registry.build_model(name, num_classes)


def _print_model(info: dict[str, Any]) -> None:
    if info["base"]:
        built = f", built with {info['base_classes']} outputs" if info["base_classes"] else ""
        print(f"base: {info['base']}{built}")
        print("edits:")
        for edit in info["edits"]:
            print(f"  - {edit['text']}")
    low = info["min_input_size"]
    least = f"; at least {low[0]}x{low[1]} (zoo run --input-size N)" if low else ""
    print(f"input size: {tuple(info['input_size'])}{least}; default dataset: {info['default_dataset']}")
    print(f"output shape: (batch, {info['output_shape'][1]}) for {info['num_classes']} classes")
    at_1000 = f"; {info['params']:,} at 1000 classes" if info["params"] is not None else ""
    print(f"parameters: {info['parameters']:,} ({info['trainable_parameters']:,} trainable){at_1000}")
    if info["weights"]:
        print("pretrained weights (zoo run --weights imagenet loads the first, from the torch hub cache):")
        for row in info["weights"]:
            acc = f"acc@1 {row['acc1']}" if row.get("acc1") is not None else ""
            size = f"{row['input_size']}x{row['input_size']}" if row.get("input_size") else ""
            print("  " + "  ".join(part for part in (row["name"], acc, size, row["file"]) if part))
    print("architecture:")
    print(info["architecture"])


def _show_optimizer(registry: Any, entry: Any) -> dict[str, Any]:
    from zoo.hparams import optimizer_params

    factory = registry.optimizer_factory(registry.qualified_name(entry))
    params, var_kw = optimizer_params(factory)
    return {
        "kind": "optimizer",
        "name": entry.name,
        "plugin": entry.plugin,
        "summary": entry.summary,
        "factory": _factory_name(factory),
        "base": entry.base,
        "defaults": entry.defaults,
        "parameters": _parameter_rows(params, entry.defaults, {}),
        "accepts_extra_keywords": var_kw,
    }


def _factory_name(factory: Any) -> str:
    return f"{factory.__module__}.{factory.__qualname__}" if hasattr(factory, "__qualname__") else repr(factory)


def _parameter_rows(params: list[Any], defaults: dict[str, Any], filled: dict[str, str]) -> list[dict[str, Any]]:
    """One row per hyper-parameter: its type, its default, the zoo's default, what the run fills."""
    rows = []
    for p in params:
        row: dict[str, Any] = {
            "name": p.name,
            "type": p.kind,
            "default": None if p.required else p.default,
            "required": p.required,
        }
        if p.name in defaults:
            row["zoo_default"] = defaults[p.name]
        if p.name in filled:
            row["filled_by_run"] = filled[p.name]
        rows.append(row)
    return rows


def _show_scheduler(registry: Any, entry: Any) -> dict[str, Any]:
    from zoo.recipe import run_filled, scheduler_params

    factory = registry.scheduler_factory(registry.qualified_name(entry))
    params, var_kw = scheduler_params(factory)
    filled = {k: v for k, v in run_filled(params, entry.interval).items() if k not in entry.defaults}
    return {
        "kind": "scheduler",
        "name": entry.name,
        "plugin": entry.plugin,
        "summary": entry.summary,
        "source": entry.source,
        "factory": _factory_name(factory),
        "base": entry.base,
        "interval": entry.interval,
        "defaults": entry.defaults,
        "parameters": _parameter_rows(params, entry.defaults, filled),
        "filled_by_run": filled,
        "accepts_extra_keywords": var_kw,
    }


def _show_augmentation(registry: Any, entry: Any) -> dict[str, Any]:
    from zoo.hparams import factory_params

    factory = registry.augmentation_factory(registry.qualified_name(entry))
    params, var_kw = factory_params(factory, leading=0)
    return {
        "kind": "augmentation",
        "name": entry.name,
        "plugin": entry.plugin,
        "summary": entry.summary,
        "factory": _factory_name(factory),
        "defaults": entry.defaults,
        "parameters": _parameter_rows(params, entry.defaults, {}),
        "accepts_extra_keywords": var_kw,
    }


def _recipe_flags(options: dict[str, Any]) -> list[str]:
    """A recipe's options as the ``zoo run`` flags that give the same (``--sched onecycle``, ...)."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + {"opts": "opt", "sched_opts": "sched-opt"}.get(name, name.replace("_", "-"))
        if name in ("opts", "sched_opts"):
            flags += [part for key, text in value.items() for part in (flag, f"{key}={text}")]
        elif name == "augment":
            flags += [part for spec in value for part in (flag, spec)]
        elif name != "optimizer":
            flags += [flag, str(value)]
    return flags


def _show_recipe(entry: Any) -> dict[str, Any]:
    import shlex

    optimizer = entry.options.get("optimizer", "OPTIMIZER")
    return {
        "kind": "recipe",
        "name": entry.name,
        "plugin": entry.plugin,
        "summary": entry.summary,
        "source": entry.source,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in entry.options.items()},
        "command": f"zoo run MODEL {optimizer} --recipe {entry.name}",
        "same_as": shlex.join(["zoo", "run", "MODEL", optimizer, *_recipe_flags(entry.options)]),
    }


def _print_parameters(info: dict[str, Any]) -> None:
    """The parameter table of ``zoo show`` for an optimizer, a scheduler or an augmentation."""
    print(f"factory: {info['factory']}")
    if not info["parameters"]:
        print("parameters: none" + (" (accepts any keyword)" if info["accepts_extra_keywords"] else ""))
        return
    filled = any("filled_by_run" in p for p in info["parameters"])
    rows = []
    for p in info["parameters"]:
        default = "required" if p["required"] else repr(p["default"])
        row = [p["name"], p["type"], default, repr(p["zoo_default"]) if "zoo_default" in p else ""]
        rows.append(row + ([p.get("filled_by_run", "")] if filled else []))
    print(_table(rows, ["parameter", "type", "default", "zoo default"] + (["filled by the run"] if filled else [])))


def _show_dataset(entry: Any) -> dict[str, Any]:
    return {
        "kind": "dataset",
        "name": entry.name,
        "plugin": entry.plugin,
        "summary": entry.summary,
        "num_classes": entry.num_classes,
        "input_size": list(entry.input_size),
        "classes": list(entry.classes) if entry.classes else None,
    }


def _print_shown(info: dict[str, Any]) -> None:
    where = f"plugin '{info['plugin']}'" + (f", {info['source']}" if info.get("source") else "")
    print(f"{info['kind']} {info['name']}  ({where})")
    if info["summary"]:
        print(f"  {info['summary']}")
    if info["kind"] == "model":
        _print_model(info)
    elif info["kind"] == "optimizer":
        _print_parameters(info)
        print(f"set with: zoo run MODEL {info['name']} --lr F --opt KEY=VALUE")
    elif info["kind"] == "scheduler":
        if info["base"]:
            print(f"base: {info['base']}")
        when = "after each epoch" if info["interval"] == "epoch" else "after each optimizer step"
        print(f"interval: {info['interval']} (stepped {when}; --sched-interval epoch|step changes it)")
        _print_parameters(info)
        print(f"set with: zoo run MODEL OPTIMIZER --sched {info['name']} --sched-opt KEY=VALUE")
    elif info["kind"] == "augmentation":
        _print_parameters(info)
        print(f"set with: zoo run MODEL OPTIMIZER --augment {info['name']}[:KEY=VALUE,...]")
    elif info["kind"] == "recipe":
        rows = [[name, ", ".join(value) if isinstance(value, list) else _option_shown(value)]
                for name, value in info["options"].items()]  # fmt: skip
        print(_table(rows, ["option", "value"]) if rows else "options: none")
        print(f"set with: {info['command']} (flags given on the command line win)")
        print(f"same as:  {info['same_as']}")
    else:
        classes = info["num_classes"] if info["num_classes"] is not None else "read from the data"
        print(f"classes: {classes}; input size: {tuple(info['input_size'])}")
        if info["classes"]:
            print(f"class names: {', '.join(info['classes'])}")


def _option_shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"
    return str(value)


def cmd_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    shown = []
    for entry in registry.find(args.name):
        if entry.kind == "model":
            shown.append(_show_model(registry, entry, args.num_classes))
        elif entry.kind == "optimizer":
            shown.append(_show_optimizer(registry, entry))
        elif entry.kind == "scheduler":
            shown.append(_show_scheduler(registry, entry))
        elif entry.kind == "augmentation":
            shown.append(_show_augmentation(registry, entry))
        elif entry.kind == "recipe":
            shown.append(_show_recipe(entry))
        else:
            shown.append(_show_dataset(entry))
    if args.json:
        _print_json(shown[0] if len(shown) == 1 else shown)
    else:
        for i, info in enumerate(shown):
            if i:
                print()
            _print_shown(info)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry(args)  # calling the register hooks is what reveals a failing plugin
    infos = registry.host.plugin_infos(include_builtin=args.all)
    if args.json:
        _print_json([i.as_json() for i in infos])
        return 0
    if not infos:
        print("no third-party plugins installed (zoo plugins --all shows the built-ins)", file=sys.stderr)
        return 0
    rows = []
    for i in infos:
        status = i.status + (" (built-in)" if i.builtin else "")
        detail = i.error if i.status == "failed" else ", ".join(i.hooks)
        rows.append([i.name, i.distribution or "-", i.version or "-", status, detail or ""])
    print(_table(rows, ["name", "distribution", "version", "status", "hooks / error"]))
    return 0


def _pip(action: list[str], packages: Sequence[str]) -> int:
    import subprocess

    command = [sys.executable, "-m", "pip", *action, *packages]
    print(f"zoo: running {' '.join(command)}", file=sys.stderr)
    code = subprocess.call(command)
    if code:
        raise ZooError(f"pip {action[0]} failed with exit code {code}")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    return _pip(
        ["install", *(["--upgrade"] if args.upgrade else []), *(["-e"] if args.editable else [])], args.packages
    )


def cmd_uninstall(args: argparse.Namespace) -> int:
    from zoo.plugins import uninstall_targets

    # a plugin's name as zoo plugins shows it, or a distribution's: pip knows only the latter
    return _pip(["uninstall", "-y"], uninstall_targets(args.packages))


# -- training and checkpoints --------------------------------------------------------------------


# The run options that are plain flags with no argparse default: None says "not given", so that a
# recipe, a config file or --resume can supply them, and RunConfig's default applies otherwise.
_RUN_FLAGS = (
    *("data", "data_dir", "epochs", "batch_size", "lr", "device", "seed", "out", "weights"),
    *("limit_train", "limit_val", "workers", "nproc", "skip_bad_images", "recipe", "input_size"),
    *("sched", "sched_interval", "ema", "label_smoothing", "clip_grad_norm", "accumulate", "patience"),
)
_RUN_SWITCHES = ("download", "resume", "amp", "deterministic", "compile", "tensorboard", "quiet", "trust")


def _typed_run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig options this command line names, and only those."""
    from zoo.hparams import parse_opt_pairs

    typed = {name: getattr(args, name, None) for name in _RUN_FLAGS}
    typed |= {name: True for name in _RUN_SWITCHES if getattr(args, name, False)}
    typed["model"], typed["optimizer"] = args.model, args.optimizer
    typed["opts"] = parse_opt_pairs(args.opt) if args.opt else None
    typed["sched_opts"] = parse_opt_pairs(args.sched_opt, "--sched-opt", "eta_min=1e-5") if args.sched_opt else None
    typed["augment"] = tuple(args.augment) if args.augment else None
    typed["registry_files"] = tuple(args.registry) if args.registry else None
    return {name: value for name, value in typed.items() if value is not None}


def run_config(args: argparse.Namespace) -> Any:
    """The RunConfig of a ``zoo run`` command line: RunConfig's defaults, under a recipe
    (``--recipe``, or the config file's ``recipe``), under ``--config FILE.yaml``, under the flags
    typed. A recipe named on the command line sits above the file, one named in the file below it.
    ``given`` lists every option set by one of them (with ``--resume``, the others are the run's)."""
    from pathlib import Path

    from zoo.config import RunConfig, merge_options
    from zoo.registry import get_registry
    from zoo.registry_file import read_run_file

    typed = _typed_run_options(args)
    from_file = read_run_file(Path(args.config).expanduser(), args.config) if args.config else {}
    layers = [from_file, typed]
    recipe = typed.get("recipe") or from_file.get("recipe")
    if recipe is not None:
        files = typed.get("registry_files", from_file.get("registry_files", ()))
        options = get_registry(files).recipe_options(recipe)
        layers.insert(1 if "recipe" in typed else 0, options)
    options = merge_options(layers)
    model, optimizer = options.pop("model", None), options.pop("optimizer", None)
    if model is None or optimizer is None:
        missing = " and ".join(name for name, value in (("model", model), ("optimizer", optimizer)) if value is None)
        how = f"{args.config} names none" if args.config else "zoo run MODEL OPTIMIZER, or --config FILE.yaml"
        raise UsageError(f"the following arguments are required: {missing} ({how})")
    return RunConfig(model, optimizer, **options, given=tuple(options))


def cmd_run(args: argparse.Namespace) -> int:
    from zoo.runner import run

    config = run_config(args)
    if os.environ.get("ZOO_SWEEP_TRIAL"):  # a trial of `zoo sweep`: report each epoch to its study
        from zoo.sweep_trial import attach

        attach()
    from zoo.ddp import in_worker, run_worker
    from zoo.launch import launch, should_launch

    if should_launch(config.nproc, args.max_restarts):
        # Start the workers under torch's elastic agent, each one this same command line.
        return launch(args.argv, config, max_restarts=args.max_restarts)
    if in_worker():
        # Started by torchrun or by the launcher above: one report for the group.
        return run_worker(lambda: run(config), json_summary=args.json)
    summary = run(config)
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from zoo.sweep import plan_from_args, run_sweep
    from zoo.sweep_report import no_trial_completed, summary_table

    result = run_sweep(plan_from_args(args, run_config))  # run_config: the trials' options dry-checked
    if args.json:
        print(json.dumps(result, indent=2))
    elif not args.quiet:
        print(summary_table(result["trials"], result["metric"]), end="")
    if any(t["state"] == "complete" for t in result["trials"]):
        return 0
    print(f"zoo: error: {no_trial_completed(result)}", file=sys.stderr)  # even with --quiet
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    from zoo.runner import validate

    result = validate(
        args.checkpoint,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device,
        limit_val=args.limit_val,
        trust=args.trust,
        registry_files=tuple(args.registry or ()),
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"val_loss {result['val_loss']:.4f}  val_accuracy {result['val_accuracy']:.4f}  samples {result['samples']}"
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from zoo.predict import predict

    results, errors = predict(
        args.checkpoint,
        args.images,
        device=args.device,
        top=args.top,
        trust=args.trust,
        registry_files=tuple(args.registry or ()),
    )
    if args.json:
        if results or not errors:  # no image read: the error lines alone, no empty array
            print(json.dumps(results, indent=2))
    else:
        for r in results:
            # The best class on the image's line (the --top 1 output), the runners-up indented below.
            print(f"{r['image']}: {r['label']} ({r['probability']:.3f})")
            for other in r["top"][1:]:
                print(f"  {other['label']} ({other['probability']:.3f})")
    for line in errors:
        print(f"zoo: error: {line}", file=sys.stderr)
    return 2 if errors else 0


def cmd_export(args: argparse.Namespace) -> int:
    from zoo.export import export

    path = export(
        args.checkpoint,
        args.format,
        args.output,
        trust=args.trust,
        force=args.force,
        registry_files=tuple(args.registry or ()),
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from zoo.check import run_check

    def show(row: dict[str, Any]) -> None:
        if not args.json:
            reason = f"  {row['reason']}" if row.get("reason") else ""
            print(
                f"{row['model']:<30} {row['optimizer']:<14} {row['status']:<12} {row['seconds']:6.2f}s{reason}",
                flush=True,
            )

    def scale(models: int, optimizers: int) -> None:  # before the first row (every pair: an hour or more)
        if not args.json:
            print(f"zoo: checking {models} model(s) x {optimizers} optimizer(s): {models * optimizers} pairs, "
                  f"up to {args.budget_s:g} s each", file=sys.stderr)  # fmt: skip

    rows = run_check(
        models=args.models,
        optimizers=args.optimizers,
        budget_s=args.budget_s,
        registry=_registry(args),
        on_row=show,
        on_start=scale,
    )
    if args.json:
        _print_json(rows)
    return 1 if any(r["status"] == "error" for r in rows) else 0


# -- looking at runs (metrics.jsonl, config.yaml, status.json: never torch) -----------------------


def cmd_plot(args: argparse.Namespace) -> int:
    from zoo.plot import plot_runs

    path = plot_runs(args.run_dirs, args.output)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _when(started: str | None) -> str:
    """An ISO time as local time to the minute, for a table cell."""
    import datetime

    try:
        return (
            datetime.datetime.fromisoformat((started or "").replace("Z", "+00:00"))
            .astimezone()
            .strftime("%Y-%m-%d %H:%M")
        )
    except ValueError:
        return started or "-"


def cmd_runs(args: argparse.Namespace) -> int:
    from zoo.runs import list_runs

    rows = list_runs(args.dir)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print(f"no runs under '{args.dir}' (zoo run writes them there)", file=sys.stderr)
        return 0
    headers = ["run", "model", "optimizer", "dataset", "epochs", "best acc", "status", "started"]
    table = []
    for r in rows:
        best = "-" if r["best_val_accuracy"] is None else f"{r['best_val_accuracy']:.1%}"
        epochs = f"{r['epochs_done']}/{r['epochs'] if r['epochs'] is not None else '?'}"
        table.append(
            [
                r["run_dir"],
                r["model"] or "-",
                r["optimizer"] or "-",
                r["dataset"] or "-",
                epochs,
                best,
                r["status"],
                _when(r["started"]),
            ]
        )
    if any(r.get("sweep") for r in rows):  # a sweep's directory: each trial's state and parameters
        from zoo.sweep_report import params_text

        headers.append("trial")
        for cells, r in zip(table, rows):
            t = r.get("sweep") or {}
            cells.append(f"{t.get('state')}: {params_text(t.get('params') or {})} seed={t.get('seed')}" if t else "-")
    if any(r["error"] for r in rows):
        headers.append("error")
        for cells, r in zip(table, rows):
            cells.append(r["error"] or "")
    print(_table(table, headers))
    return 0


# -- the parser ----------------------------------------------------------------------------------

Commands = Any  # what add_subparsers returns (argparse._SubParsersAction: a private class)
_TRUST_HELP = "allow loading a pickled checkpoint (can run code)"


def build_parser() -> ArgumentParser:
    """The ``zoo`` parser: one sub-command per ``cmd_*`` function (``args.func``)."""
    parser = ArgumentParser(
        prog="zoo",
        description="A plugin-based PyTorch model zoo: list what the registry holds, train any model x optimizer pair.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options()
    _add_list_command(commands, common)
    _add_show_command(commands, common)
    _add_plugins_command(commands, common)
    _add_pip_commands(commands)
    _add_run_command(commands, common)
    _add_sweep_command(commands, common)
    _add_validate_command(commands, common)
    _add_predict_command(commands, common)
    _add_export_command(commands, common)
    _add_check_command(commands, common)
    _add_plot_command(commands)
    _add_runs_command(commands)
    return parser


def _common_options() -> ArgumentParser:
    """Options every registry-reading command takes (``parents=[common]``)."""
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        action="append",
        metavar="PATH",
        help="an extra registry.yaml layered over the built-in one (repeatable; also ZOO_REGISTRY)",
    )
    return common


def _add_list_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "list",
        parents=[common],
        help="list registered models, optimizers, datasets, schedulers, augmentations and recipes",
        description="List registry entries, optionally of one kind and matching a glob (e.g. 'vgg*').",
    )
    p.add_argument(
        "kind",
        nargs="?",
        metavar="models|optimizers|datasets|schedulers|augmentations|recipes",
        help="only this kind (the singular too: model, optimizer, ...)",
    )
    p.add_argument(
        "pattern",
        nargs="?",
        metavar="PATTERN",
        help="a glob over names ('vgg*'); with a '/', over qualified names PLUGIN/NAME ('timm/*'). "
        "An entry whose NAME another plugin holds is listed as PLUGIN/NAME",
    )
    p.add_argument("--json", action="store_true", help="a JSON array of {kind, name, plugin, summary, qualified, ...}")
    p.set_defaults(func=cmd_list)


def _add_show_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "show",
        parents=[common],
        help="show a model's architecture, the parameters of an optimizer, scheduler or augmentation, "
        "or a recipe's options",
        description="A model: architecture, parameter count, output shape, edits. "
        "An optimizer, a scheduler or an augmentation: its parameters and defaults "
        "(a scheduler: also its interval and what the run fills in). A recipe: its run options.",
    )
    p.add_argument("name")
    p.add_argument(
        "--num-classes", type=positive_int, help="build the model for this many classes (default: its dataset's)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)


def _add_plugins_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "plugins",
        parents=[common],
        help="list installed plugins",
        description="Installed plugins, their distributions, hooks and status. Built-ins only with --all.",
    )
    p.add_argument("--all", action="store_true", help="include the built-in plugins")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)


def _add_pip_commands(commands: Commands) -> None:
    """``zoo install`` and ``zoo uninstall``."""
    p = commands.add_parser(
        "install",
        help="pip install plugin packages into this zoo's Python",
        description="Run pip install in the interpreter that runs zoo.",
    )
    p.add_argument("packages", nargs="+", metavar="PKG")
    p.add_argument("-U", "--upgrade", action="store_true")
    p.add_argument("-e", "--editable", action="store_true", help="install a local project in editable mode")
    p.set_defaults(func=cmd_install)

    p = commands.add_parser(
        "uninstall",
        help="pip uninstall plugin packages",
        description="Run pip uninstall -y in the interpreter that runs zoo. PKG is a plugin's name as zoo "
        "plugins shows it (its distribution is uninstalled) or a distribution's name.",
    )
    p.add_argument("packages", nargs="+", metavar="PKG", help="a plugin's name (zoo plugins) or a distribution's")
    p.set_defaults(func=cmd_uninstall)


def _add_run_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "run",
        parents=[common],
        help="train MODEL with OPTIMIZER, validating and checkpointing each epoch",
        description="Train, validate each epoch, checkpoint to the run directory.",
        epilog=EPILOG,
    )
    # Both optional with --config FILE.yaml (or a recipe naming an optimizer), which can name them.
    p.add_argument("model", nargs="?", help="a model (zoo list models)")
    p.add_argument("optimizer", nargs="?", help="an optimizer or preset (zoo list optimizers)")
    _add_run_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout at the end")
    p.set_defaults(func=cmd_run)


def _add_run_options(p: ArgumentParser | Any) -> None:
    """Every ``zoo run`` option but the positionals and ``--json`` (``zoo sweep`` takes them too:
    ``p`` may be an argument group)."""
    p.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="run what a file in the shape of a run's config.yaml says (flags given here win)",
    )
    p.add_argument(
        "--recipe", metavar="NAME", help="a named bundle of run options (zoo list recipes; flags given here win)"
    )
    p.add_argument("--data", metavar="NAME", help="dataset (default: the model's, cifar10 for tudui and torchvision's)")
    p.add_argument("--data-dir", metavar="DIR", help="where datasets live (default: $ZOO_DATA, else ~/.cache/zoo/data)")
    p.add_argument("--download", action="store_true", help="download the dataset if missing (needs the internet)")
    # No argparse defaults for the run's options: None says "not given", so that a recipe, a
    # config file or --resume supplies them (_RUN_FLAGS), and RunConfig's default applies otherwise.
    p.add_argument("--epochs", type=positive_int, help="epochs in all, counting resumed ones (default 10)")
    p.add_argument("--batch-size", type=positive_int, help="default 64")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: the optimizer's)")
    p.add_argument(
        "--opt",
        action="append",
        metavar="KEY=VALUE",
        help="an optimizer hyper-parameter, checked against its signature (repeatable)",
    )
    p.add_argument("--device", help="auto|cpu|cuda|cuda:N (default auto: CUDA when available)")
    p.add_argument("--seed", type=int, help="default 0: the same command gives the same weights on CPU")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<model>-<optimizer>-<YYYYmmdd-HHMMSS>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out up to --epochs epochs in all")
    p.add_argument("--weights", metavar="imagenet|PATH", help="base weights loaded before the edits")
    p.add_argument(
        "--input-size",
        type=positive_int,
        metavar="N",
        help="train at N x N pixels, the data resized to it (default: the model's input size; zoo show MODEL)",
    )
    p.add_argument("--limit-train", type=positive_int, metavar="N", help="use the first N training samples")
    p.add_argument("--limit-val", type=positive_int, metavar="N", help="use the first N validation samples")
    p.add_argument(
        "--skip-bad-images", action="store_true", default=None, help="leave out unreadable image files, with a warning"
    )
    _add_distributed_options(p)
    _add_recipe_options(p)
    p.add_argument(
        "--workers", type=non_negative_int, help="DataLoader workers for datasets not held in memory (default 0)"
    )
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument(
        "--deterministic", action="store_true", help="CUDA: full FP32 (no TF32) and no cuDNN autotuning, bit for bit"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow to start)")
    p.add_argument("--tensorboard", action="store_true", help="log to TensorBoard under the run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    p.add_argument(
        "--trust", action="store_true", help="allow loading pickled (method-1) files: this can run arbitrary code"
    )


def _add_sweep_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "sweep",
        parents=[common],
        conflict_handler="resolve",  # the sweep's --lr, --opt, --sched, --out, ... replace the run's
        help="compare optimizers and hyper-parameters: an Optuna study of zoo runs",
        description="Train MODEL with each optimizer and hyper-parameter configuration (a grid, or "
        "--trials drawn by a sampler), each trial a zoo run in SWEEP_DIR/trial-NNNN, and rank them. "
        "VALUES: a comma list (grid points: 0.1,0.01) or a range A..B (log-uniform when positive "
        "and spanning a decade; log: or lin: prefixes say which). Needs Optuna: pip install 'tudui-zoo[sweep]'.",
        epilog="Exit 0 when a trial completed, 1 when none did, 2 for bad input.",
    )
    p.add_argument("model", help="a model (zoo list models)")
    p.add_argument("optimizers", metavar="OPTIMIZERS", help="names or globs, comma-separated: 'sgd,adam*'")
    sweep = p.add_argument_group("sweep options")
    _add_run_options(p.add_argument_group("zoo run options, passed to every trial"))
    sweep.add_argument("--lr", metavar="VALUES", help="learning rates: 0.1,0.01 or 1e-4..1e-1")
    sweep.add_argument("--opt", action="append", metavar="KEY=VALUES", help="an optimizer hyper-parameter (repeatable)")
    sweep.add_argument("--sched", metavar="NAMES", help="schedulers, comma-separated ('none': no schedule)")
    sweep.add_argument("--seeds", type=positive_int, default=1, metavar="N", help="run each configuration with N seeds")
    sweep.add_argument("--seed", type=int, metavar="S", help="the first seed (default 0): seeds S..S+N-1")
    sweep.add_argument("--sampler", choices=("grid", "random", "tpe"), help="default: grid with lists only, else tpe")
    sweep.add_argument("--trials", type=positive_int, metavar="N", help="random/tpe: configurations to draw")
    sweep.add_argument("--prune", choices=("median", "none"), default="none", help="stop clearly worse trials early")
    sweep.add_argument("--parallel", type=positive_int, default=1, metavar="P", help="trials at once on this machine")
    sweep.add_argument("--metric", choices=("best_val_accuracy", "val_loss"), default="best_val_accuracy")
    sweep.add_argument("--storage", metavar="URL", help="Optuna storage (default: SQLite in SWEEP_DIR)")
    sweep.add_argument("--study", metavar="NAME", help="join or create this study (default: SWEEP_DIR's name)")
    sweep.add_argument("--out", metavar="SWEEP_DIR", help="default sweeps/<model>-<YYYYmmdd-HHMMSS>")
    sweep.add_argument("--resume", action="store_true", help="continue the sweep in --out (after a kill, even -9)")
    sweep.add_argument("--quiet", action="store_true", help="no progress lines, no table")
    sweep.add_argument("--json", action="store_true", help="print the sweep as one JSON object on stdout")
    p.set_defaults(func=cmd_sweep)


def _add_recipe_options(p: ArgumentParser) -> None:
    """How a run trains beyond model and optimizer: ``--sched``, ``--augment``, ``--ema``, ...

    No argparse defaults: None says "not given", so that ``--resume`` takes the run's own."""
    p.add_argument("--sched", metavar="NAME", help="a learning-rate scheduler or preset (zoo list schedulers)")
    p.add_argument("--sched-opt", action="append", metavar="KEY=VALUE", help="a scheduler hyper-parameter (repeatable)")
    p.add_argument("--sched-interval", choices=("epoch", "step"), help="step the scheduler per epoch or per step")
    p.add_argument(
        "--augment", action="append", metavar="NAME[:KEY=VALUE,...]", help="a training augmentation (repeatable)"
    )
    p.add_argument("--ema", type=float, metavar="DECAY", help="validate and save an EMA of the weights (e.g. 0.999)")
    p.add_argument("--label-smoothing", type=float, metavar="F", help="label smoothing of the training loss")
    p.add_argument("--clip-grad-norm", type=positive_float, metavar="F", help="clip the gradients' norm to F")
    p.add_argument("--accumulate", type=positive_int, metavar="N", help="one optimizer step every N batches")
    p.add_argument("--patience", type=positive_int, metavar="N", help="stop when val_accuracy has not improved for N")


def _add_distributed_options(p: ArgumentParser) -> None:
    """``zoo run --nproc N --max-restarts K``."""
    p.add_argument(
        "--nproc",
        type=positive_int,
        metavar="N",
        help="train with N processes (DistributedDataParallel, one GPU each on CUDA, gloo on the CPU); "
        "the global batch is N x --batch-size",
    )
    p.add_argument(
        "--max-restarts",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="with --nproc: restart the worker group up to K times after a failure, "
        "continuing from the last checkpoint (default 0)",
    )


def _add_validate_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "validate",
        parents=[common],
        help="loss and accuracy of a checkpoint",
        description="Validate a checkpoint on its dataset (or --data).",
    )
    p.add_argument("checkpoint")
    p.add_argument("--data", metavar="NAME")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--device", default="auto")
    p.add_argument("--limit-val", type=positive_int, metavar="N")
    p.add_argument("--trust", action="store_true", help=_TRUST_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)


def _add_predict_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "predict",
        parents=[common],
        help="classify image files with a checkpoint",
        description="Classify images (any PIL format: RGBA, grayscale, palette, JPEG) with a checkpoint.",
    )
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--device", default="auto")
    p.add_argument("--top", type=positive_int, default=1, metavar="K", help="the K most likely classes")
    p.add_argument("--trust", action="store_true", help=_TRUST_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def _add_export_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "export",
        parents=[common],
        help="export a checkpoint's model",
        description="state-dict: torch.save(model.state_dict()) (method 2); full: torch.save(model) "
        "(method 1: loading it runs pickled code, trusted use only); safetensors.",
    )
    p.add_argument("checkpoint")
    p.add_argument("--format", required=True, choices=["state-dict", "full", "safetensors"])
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="the file to write (its directory must exist)")
    p.add_argument("--force", action="store_true", help="replace PATH if it exists (atomically)")
    p.add_argument("--trust", action="store_true", help=_TRUST_HELP)
    p.set_defaults(func=cmd_export)


def _add_check_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "check",
        parents=[common],
        help="one training step per model x optimizer pair",
        description="One training step (batch 2, synthetic data) per model x optimizer pair, "
        "each within a time budget.",
    )
    p.add_argument("--models", default="*", metavar="GLOB", help="the models to check (default: every one)")
    p.add_argument("--optimizers", default="*", metavar="GLOB", help="the optimizers to check (default: every one)")
    p.add_argument(
        "--budget-s",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="seconds per pair before it is a timeout (default 10)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)


def _add_plot_command(commands: Commands) -> None:
    p = commands.add_parser(
        "plot",
        help="loss and accuracy curves of runs, as a PNG",
        description="Draw train/validation loss and validation accuracy per epoch of one or more "
        "runs (from metrics.jsonl), overlaid, as a PNG. Needs matplotlib: "
        "pip install 'tudui-zoo[plot]'.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE.png",
        help="where to write (default: RUN_DIR/curves.png for one run, ./runs-curves.png for several)",
    )
    p.set_defaults(func=cmd_plot)


def _add_runs_command(commands: Commands) -> None:
    p = commands.add_parser(
        "runs",
        help="list runs: model, optimizer, dataset, epochs, best accuracy, status",
        description="The run directories under DIR, oldest first, with their status "
        "(running, finished, interrupted, failed) and best validation accuracy.",
    )
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="where the runs are (default: runs)")
    p.add_argument(
        "--json",
        action="store_true",
        help="a JSON array of {run_dir, model, optimizer, dataset, epochs, "
        "epochs_done, best_val_accuracy, status, started, error}",
    )
    p.set_defaults(func=cmd_runs)


def main(argv: Sequence[str] | None = None) -> int:
    debug = debug_enabled()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # zoo run --nproc runs this same command line in each worker
    try:
        return args.func(args)
    except BrokenPipeError:  # `zoo list | head`
        sys.stderr.close()
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        if debug:
            raise
        code, text = error_report(exc)
        print(f"{report_prefix(exc)} {text}", file=sys.stderr)
        return code

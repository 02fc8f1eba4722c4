"""The ``zoo`` command line: argparse in front, one line and an exit code for every error.

Only what a command needs is imported: ``zoo list`` and ``zoo plugins`` never import torch.
Exit codes (CONTRACT.md): 0 success, 1 run-time failure, 2 usage or bad input, 130 SIGINT,
143 SIGTERM. Errors are one ``zoo: error:`` line on stderr; ``ZOO_DEBUG=1`` adds tracebacks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from zoo import __version__
from zoo.errors import UsageError, ZooError, debug_enabled, error_report, report_prefix

EPILOG = "Errors exit 2 for bad input, 1 for run-time failures. ZOO_DEBUG=1 shows tracebacks."


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors in the zoo's one-line form (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"zoo: error: {message} (see: {self.prog} --help)\n")
        sys.exit(2)


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

KIND_ARGS = {"models": "model", "optimizers": "optimizer", "datasets": "dataset"}
KIND_ARGS |= {kind: kind for kind in KIND_ARGS.values()}  # `zoo list model` is `zoo list models`


def cmd_list(args: argparse.Namespace) -> int:
    kind, pattern = None, args.pattern
    if args.kind in KIND_ARGS:
        kind = KIND_ARGS[args.kind]
    elif args.kind is not None:
        if pattern is not None:
            raise UsageError(f"unknown kind '{args.kind}': expected models, optimizers or datasets")
        pattern = args.kind  # `zoo list 'vgg*'`: a pattern over every kind
    entries = list(_registry(args).entries(kind, pattern))
    rows = [{"kind": e.kind, "name": e.name, "plugin": e.plugin, "summary": e.summary} for e in entries]
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
    model = registry.build_model(entry.name, classes)
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
        "default_dataset": entry.default_dataset,
        "num_classes": classes,
        "parameters": params,
        "trainable_parameters": trainable,
        "output_shape": ["batch", classes],
        "architecture": str(model),
    }


def _show_optimizer(registry: Any, entry: Any) -> dict[str, Any]:
    from zoo.hparams import optimizer_params

    factory = registry.optimizer_factory(entry.name)
    params, var_kw = optimizer_params(factory)
    rows = []
    for p in params:
        row: dict[str, Any] = {
            "name": p.name,
            "type": p.kind,
            "default": None if p.required else p.default,
            "required": p.required,
        }
        if p.name in entry.defaults:
            row["zoo_default"] = entry.defaults[p.name]
        rows.append(row)
    target = f"{factory.__module__}.{factory.__qualname__}" if hasattr(factory, "__qualname__") else repr(factory)
    return {
        "kind": "optimizer",
        "name": entry.name,
        "plugin": entry.plugin,
        "summary": entry.summary,
        "factory": target,
        "base": entry.base,
        "defaults": entry.defaults,
        "parameters": rows,
        "accepts_extra_keywords": var_kw,
    }


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
        if info["base"]:
            built = f", built with {info['base_classes']} outputs" if info["base_classes"] else ""
            print(f"base: {info['base']}{built}")
            print("edits:")
            for edit in info["edits"]:
                print(f"  - {edit['text']}")
        print(f"input size: {tuple(info['input_size'])}; default dataset: {info['default_dataset']}")
        print(f"output shape: (batch, {info['output_shape'][1]}) for {info['num_classes']} classes")
        print(f"parameters: {info['parameters']:,} ({info['trainable_parameters']:,} trainable)")
        print("architecture:")
        print(info["architecture"])
    elif info["kind"] == "optimizer":
        print(f"factory: {info['factory']}")
        rows = []
        for p in info["parameters"]:
            default = "required" if p["required"] else repr(p["default"])
            zoo_default = repr(p["zoo_default"]) if "zoo_default" in p else ""
            rows.append([p["name"], p["type"], default, zoo_default])
        print(_table(rows, ["parameter", "type", "default", "zoo default"]))
        print(f"set with: zoo run MODEL {info['name']} --lr F --opt KEY=VALUE")
    else:
        classes = info["num_classes"] if info["num_classes"] is not None else "read from the data"
        print(f"classes: {classes}; input size: {tuple(info['input_size'])}")
        if info["classes"]:
            print(f"class names: {', '.join(info['classes'])}")


def cmd_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    shown = []
    for entry in registry.find(args.name):
        if entry.kind == "model":
            shown.append(_show_model(registry, entry, args.num_classes))
        elif entry.kind == "optimizer":
            shown.append(_show_optimizer(registry, entry))
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


def cmd_run(args: argparse.Namespace) -> int:
    from zoo.config import RunConfig
    from zoo.hparams import parse_opt_pairs
    from zoo.resume import RESUMED_OPTIONS
    from zoo.runner import run

    # With --resume, the options not named here come from the run's own config.yaml.
    named = {name: getattr(args, name) for name in RESUMED_OPTIONS if getattr(args, name) is not None}
    config = RunConfig(
        model=args.model,
        optimizer=args.optimizer,
        download=args.download,
        epochs=args.epochs,
        lr=args.lr,
        opts=parse_opt_pairs(args.opt or []),
        device=args.device,
        out=args.out,
        resume=args.resume,
        weights=args.weights,
        workers=args.workers,
        amp=args.amp,
        compile=args.compile,
        tensorboard=args.tensorboard,
        quiet=args.quiet,
        registry_files=tuple(args.registry or ()),
        trust=args.trust,
        nproc=args.nproc,
        given=tuple(named),
        **named,
    )
    from zoo.ddp import in_worker, run_worker
    from zoo.launch import launch, should_launch

    if should_launch(args.nproc, args.max_restarts):
        # Start the workers under torch's elastic agent, each one this same command line.
        return launch(args.argv, config, max_restarts=args.max_restarts)
    if in_worker():
        # Started by torchrun or by the launcher above: one report for the group.
        return run_worker(lambda: run(config), json_summary=args.json)
    summary = run(config)
    if args.json:
        print(json.dumps(summary))
    return 0


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

    results, errors = predict(args.checkpoint, args.images, device=args.device, top=args.top, trust=args.trust)
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

    path = export(args.checkpoint, args.format, args.output, trust=args.trust, force=args.force)
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

    rows = run_check(
        models=args.models,
        optimizers=args.optimizers,
        budget_s=args.budget_s,
        registry=_registry(args),
        on_row=show,
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
        help="list registered models, optimizers and datasets",
        description="List registry entries, optionally of one kind and matching a glob (e.g. 'vgg*').",
    )
    p.add_argument(
        "kind", nargs="?", metavar="models|optimizers|datasets", help="only this kind (model, optimizer, dataset too)"
    )
    p.add_argument("pattern", nargs="?", metavar="PATTERN", help="a glob over names, e.g. 'vgg*'")
    p.add_argument("--json", action="store_true", help="a JSON array of {kind, name, plugin, summary}")
    p.set_defaults(func=cmd_list)


def _add_show_command(commands: Commands, common: ArgumentParser) -> None:
    p = commands.add_parser(
        "show",
        parents=[common],
        help="show a model's architecture or an optimizer's parameters",
        description="A model: architecture, parameter count, output shape, edits. "
        "An optimizer: its parameters and defaults.",
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
    p.add_argument("model")
    p.add_argument("optimizer")
    p.add_argument("--data", metavar="NAME", help="dataset (default: the model's, cifar10 for tudui and vgg16)")
    p.add_argument("--data-dir", metavar="DIR", help="where datasets live (default: $ZOO_DATA, else ~/.cache/zoo/data)")
    p.add_argument("--download", action="store_true", help="download the dataset if missing (needs the internet)")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs in all, counting resumed ones (default 10)")
    # No argparse default for the options a resumed run takes from its config.yaml: None says
    # "not given" (zoo.resume.RESUMED_OPTIONS), and RunConfig's default applies to a new run.
    p.add_argument("--batch-size", type=positive_int, help="default 64")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: the optimizer's)")
    p.add_argument(
        "--opt",
        action="append",
        metavar="KEY=VALUE",
        help="an optimizer hyper-parameter, checked against its signature (repeatable)",
    )
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N (auto: CUDA when available)")
    p.add_argument("--seed", type=int, help="default 0: the same command gives the same weights on CPU")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<model>-<optimizer>-<YYYYmmdd-HHMMSS>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out up to --epochs epochs in all")
    p.add_argument("--weights", metavar="imagenet|PATH", help="base weights loaded before the edits")
    p.add_argument("--limit-train", type=positive_int, metavar="N", help="use the first N training samples")
    p.add_argument("--limit-val", type=positive_int, metavar="N", help="use the first N validation samples")
    p.add_argument(
        "--skip-bad-images", action="store_true", default=None, help="leave out unreadable image files, with a warning"
    )
    _add_distributed_options(p)
    p.add_argument(
        "--workers", type=non_negative_int, default=0, help="DataLoader workers for datasets not held in memory"
    )
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow to start)")
    p.add_argument("--tensorboard", action="store_true", help="log to TensorBoard under the run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    p.add_argument(
        "--trust", action="store_true", help="allow loading pickled (method-1) files: this can run arbitrary code"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout at the end")
    p.set_defaults(func=cmd_run)


def _add_distributed_options(p: ArgumentParser) -> None:
    """``zoo run --nproc N --max-restarts K``."""
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
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
    p.add_argument("--models", default="*", metavar="GLOB")
    p.add_argument("--optimizers", default="*", metavar="GLOB")
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

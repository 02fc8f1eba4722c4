"""``zoo plot``: loss and accuracy curves of one or more runs, from ``metrics.jsonl``, as a PNG.

matplotlib is an optional extra (``tudui-zoo[plot]``). The figure is drawn on an Agg canvas
directly (no pyplot), so plotting never touches a global backend or opens a window, and
works the same on a headless server as inside a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.errors import RunError, UsageError
from zoo.runs import read_config, read_metrics, sweep_trials
from zoo.sweep_report import params_text

__all__ = ["plot_runs", "default_output", "figure_size", "expand_runs"]

WIDTH_IN, HEIGHT_IN, DPI = 13.0, 5.0, 100
LEGEND_ROW_IN = 0.3  # the run legend sits below the panels and grows a row at a time
LEGEND_COLUMNS = 2


def figure_size(n_runs: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG for ``n_runs`` runs."""
    rows = math.ceil(n_runs / LEGEND_COLUMNS) if n_runs > 1 else 1
    return round(WIDTH_IN * DPI), round((HEIGHT_IN + rows * LEGEND_ROW_IN) * DPI)


def default_output(run_dirs: Sequence[str | Path]) -> Path:
    """``RUN_DIR/curves.png`` for one run (the picture lives with its run), else
    ``./runs-curves.png``."""
    return Path(run_dirs[0]) / "curves.png" if len(run_dirs) == 1 else Path("runs-curves.png")


def _finite(value: Any) -> float:
    # NaN leaves a gap in the line instead of breaking the plot (a run that diverged)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def _load(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(f"'{run_dir}' is not a run directory (expected a directory holding metrics.jsonl)")
    try:
        metrics = read_metrics(path)
    except ValueError as exc:
        raise UsageError(f"run '{run_dir}' has nothing to plot: {exc}") from None
    if not metrics:
        raise UsageError(f"run '{run_dir}' has nothing to plot: metrics.jsonl has no epoch yet")
    try:
        config = read_config(path)
    except ValueError:
        config = {}  # the legend just loses model and optimizer
    name = path.resolve().name
    details = ", ".join(str(config[k]) for k in ("model", "optimizer") if config.get(k))
    accuracies = [_finite(m.get("val_accuracy")) for m in metrics]
    best = max((a for a in accuracies if not math.isnan(a)), default=None)
    label = f"{name} ({details})" if details else name
    if best is not None:
        label += f", best {best:.1%}"
    return {
        "label": label,
        "epochs": [int(m["epoch"]) for m in metrics],
        "train_loss": [_finite(m.get("train_loss")) for m in metrics],
        "val_loss": [_finite(m.get("val_loss")) for m in metrics],
        "val_accuracy": accuracies,
        "best": best,
        "title": name,
    }


def expand_runs(run_dirs: Sequence[str | Path]) -> list[tuple[str | Path, str | None]]:
    """The run directories to draw, each with its configuration when it is a sweep's trial: a
    sweep's directory (``zoo sweep``'s ``sweep.json``) stands for its trials that have an epoch."""
    out: list[tuple[str | Path, str | None]] = []
    for run_dir in dict.fromkeys(run_dirs):  # a directory named twice is drawn once
        path = Path(run_dir)
        trials = None if (path / "metrics.jsonl").exists() else sweep_trials(path)
        if trials is None:
            out.append((run_dir, None))
            continue
        drawn = [(path / name, params_text(t.get("params") or {}))
                 for name, t in sorted(trials.items()) if (path / name / "metrics.jsonl").exists()]  # fmt: skip
        if not drawn:
            raise UsageError(f"sweep '{run_dir}' has nothing to plot: no trial has finished an epoch yet")
        out += drawn
    return out


def _group_label(runs: list[dict[str, Any]], group: str) -> str:
    """A configuration's legend entry: its parameters, its trials and their best accuracy."""
    members = [r for r in runs if r["group"] == group]
    best = max((r["best"] for r in members if r["best"] is not None), default=None)
    label = f"{group} ({len(members)} trial{'s' if len(members) > 1 else ''})"
    return label + (f", best {best:.1%}" if best is not None else "")


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path | None = None) -> Path:
    """Draw train/validation loss and validation accuracy per epoch of each run, overlaid,
    and write them to ``output`` (default: see ``default_output``) as a PNG."""
    if not run_dirs:
        raise UsageError("no run directory given (zoo plot RUN_DIR...)")
    runs = []
    for run_dir, configuration in expand_runs(run_dirs):
        run = _load(run_dir)
        run["group"] = configuration or run["label"]  # a sweep's trials are coloured by configuration
        runs.append(run)
    groups = list(dict.fromkeys(run["group"] for run in runs))
    output = Path(output) if output is not None else default_output(run_dirs)
    if output.suffix.lower() != ".png":
        raise UsageError(f"cannot write a PNG to '{output}': the file name must end in .png")

    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator, PercentFormatter
    except ImportError:
        raise UsageError("zoo plot needs matplotlib: pip install 'tudui-zoo[plot]'") from None

    width, height = figure_size(len(groups))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    # tab10 holds ten distinct colours; beyond that tab20 keeps neighbours apart
    palette = colormaps["tab10" if len(groups) <= 10 else "tab20"].colors
    handles = []
    for run in runs:
        color = palette[groups.index(run["group"]) % len(palette)]
        style = {"color": color, "marker": "o", "markersize": 3.5, "linewidth": 1.8}
        loss_ax.plot(run["epochs"], run["train_loss"], linestyle="-", **style)
        loss_ax.plot(run["epochs"], run["val_loss"], linestyle="--", **style)
        acc_ax.plot(run["epochs"], run["val_accuracy"], linestyle="-", **style)
        if run["best"] is not None:
            at = run["epochs"][run["val_accuracy"].index(run["best"])]
            acc_ax.plot(
                [at],
                [run["best"]],
                marker="*",
                markersize=12,
                color=color,
                markeredgecolor="black",
                markeredgewidth=0.6,
                linestyle="none",
                zorder=3,
                clip_on=False,
            )  # a best at the top edge is still a whole star
        if run["group"] == run["label"]:
            handles.append(Line2D([], [], **style, label=run["label"]))
        elif run is next(r for r in runs if r["group"] == run["group"]):
            handles.append(Line2D([], [], **style, label=_group_label(runs, run["group"])))

    loss_ax.set_title("Loss")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(
        handles=[
            Line2D([], [], color="0.3", linestyle="-", label="train"),
            Line2D([], [], color="0.3", linestyle="--", label="validation"),
        ],
        loc="upper right",
    )
    acc_ax.set_title("Validation accuracy (★ best epoch)")
    acc_ax.set_ylabel("accuracy")
    acc_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    first = min(run["epochs"][0] for run in runs)
    last = max(run["epochs"][-1] for run in runs)
    # half an epoch either side at least: a one-epoch run would otherwise get ticks at 0.99, 1.005
    pad = max(0.5, (last - first) * 0.03)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.set_xlim(first - pad, last + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs only
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"Training curves: {runs[0]['title']}"
        if len(runs) == 1
        else f"Training curves: {len(runs)} runs"
        + (f", {len(groups)} configurations" if len(groups) < len(runs) else ""),
        fontsize=14,
        fontweight="bold",
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), LEGEND_COLUMNS), frameon=False)

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, format="png", dpi=DPI)
    except OSError as exc:
        raise RunError(f"cannot write '{output}': {exc.strerror or exc}") from None
    return output

"""What a sweep reports: ``sweep.json``, the ``summary.md`` table and the line per finished trial.

Plain data in, text out: the rows are ``zoo sweep --json``'s trials (``number``, ``state``,
``params``, ``seed``, ``run_dir``, ``value``, ``epochs``, ``seconds``). No optuna, no torch.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
from pathlib import Path
from typing import Any

__all__ = ["DIRECTIONS", "better", "best_row", "sweep_object", "configurations", "summary_table", "trial_line",
           "write_text", "params_text", "no_trial_completed"]  # fmt: skip

DIRECTIONS = {"best_val_accuracy": "maximize", "val_loss": "minimize"}


def better(metric: str, a: float, b: float) -> bool:
    """Whether value ``a`` beats ``b`` for ``metric``."""
    return a > b if DIRECTIONS[metric] == "maximize" else a < b


def _usable(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def best_row(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The completed trial with the best value (the first of equals)."""
    best = None
    for row in rows:
        if row["state"] == "complete" and _usable(row["value"]):
            if best is None or better(metric, row["value"], best["value"]):
                best = row
    return best


def sweep_object(sweep_dir: Path, study: str, metric: str, rows: list[dict[str, Any]], *,
                 sampler: str | None = None, seed: int | None = None) -> dict[str, Any]:  # fmt: skip
    """The ``zoo sweep --json`` object (``sweep.json``); ``sampler`` and ``seed`` (the sweep's
    ``--seed``, which seeds the sampler) when given."""
    trials = [{k: v for k, v in row.items() if k != "error" or v} for row in rows]
    drawn = {"sampler": sampler, "seed": seed} if sampler is not None else {}
    return {
        "sweep_dir": str(sweep_dir),
        "study": study,
        "metric": metric,
        "direction": DIRECTIONS[metric],
        **drawn,
        "best": best_row(trials, metric),
        "trials": trials,
    }


def no_trial_completed(result: dict[str, Any]) -> str:
    """The error line of a sweep that ended with no trial complete: how its trials ended, the first error."""
    trials = result["trials"]
    states = {state: sum(t["state"] == state for t in trials) for state in ("failed", "pruned", "running")}
    counted = ", ".join(f"{n} {state}" for state, n in states.items() if n) or "no trials"
    first = next((t for t in trials if t.get("error")), None)
    error = f"; trial {first['number']}: {first['error']}" if first else ""
    return f"no trial of {result['sweep_dir']} completed ({counted}){error} (each trial's log: logs/)"


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in params.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _shown(metric: str, value: float) -> str:
    return f"{value:.2%}" if metric == "best_val_accuracy" else f"{value:.4f}"


def configurations(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """One entry per configuration: its trials' values, mean and standard deviation, best first
    (configurations without a completed trial last)."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = json.dumps(row["params"], sort_keys=True, default=str)
        group = groups.setdefault(key, {"params": row["params"], "rows": []})
        group["rows"].append(row)
    for group in groups.values():
        values = [r["value"] for r in group["rows"] if r["state"] == "complete" and _usable(r["value"])]
        group["values"] = values
        group["mean"] = statistics.fmean(values) if values else None
        group["std"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else None
    sign = -1 if DIRECTIONS[metric] == "maximize" else 1
    return sorted(groups.values(), key=lambda g: (g["mean"] is None, sign * (g["mean"] or 0.0)))


def summary_table(rows: list[dict[str, Any]], metric: str) -> str:
    """``summary.md``'s table: one row per configuration, sorted by the metric."""
    groups = configurations(rows, metric)
    names = list(groups[0]["params"]) if groups else []
    header = [*names, "seeds", f"{metric} (mean ± std)", "epochs", "time/trial", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for group in groups:
        trials = group["rows"]
        value = "-" if group["mean"] is None else f"{_shown(metric, group['mean'])} ± {_shown(metric, group['std'])}"
        epochs = sorted({r["epochs"] for r in trials if r["epochs"] is not None})
        seconds = [r["seconds"] for r in trials if _usable(r["seconds"])]
        states: dict[str, int] = {}
        for r in trials:
            states[r["state"]] = states.get(r["state"], 0) + 1
        cells = [_short(group["params"][n]) for n in names]
        cells += [str(len(trials)), value, "/".join(map(str, epochs)) or "-",
                  f"{statistics.fmean(seconds):.1f} s" if seconds else "-",
                  ", ".join(f"{n} {s}" for s, n in states.items())]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def trial_line(row: dict[str, Any], metric: str, best: dict[str, Any] | None, done: int, total: int | None) -> str:
    """The progress line of a finished trial: number, parameters, value, best so far."""
    count = f"[{done}/{total}]" if total else f"[{done}]"
    value = f"{metric} {_shown(metric, row['value'])}" if _usable(row["value"]) else ""
    if row["state"] == "failed":
        value = f"error: {row.get('error') or 'unknown'}"
    shown = f"best {_shown(metric, best['value'])} (trial {best['number']})" if best else "no trial completed yet"
    head = f"{count} trial {row['number']}  {params_text(row['params'])} seed={row['seed']}  {row['state']}"
    return f"{head}  {value}  | {shown}".replace("  |", " |") if value else f"{head}  | {shown}"


def write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (another process may read or write it too)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)

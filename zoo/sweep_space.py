"""What a sweep explores: ``--lr``/``--opt``/``--sched`` VALUES parsed into dimensions, and the grid.

A VALUES text is a comma list (grid points: ``0.1,0.01``) or a range to sample (``1e-4..1e-1``:
log-uniform when both ends are positive and span a decade or more, uniform otherwise; a
``log:`` or ``lin:`` prefix says which). Integer ends give integer draws. Pure Python: no
optuna, no torch, so every mistake is found before anything is trained.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.errors import UsageError

__all__ = ["Choices", "Range", "Space", "parse_values", "parse_opt_values", "RESERVED"]

Value = Any  # a grid point: str, int or float
RESERVED = ("optimizer", "lr", "sched", "seed")  # parameter names the sweep sets itself


@dataclass(frozen=True)
class Choices:
    """Grid points, in the order given."""

    values: tuple[Value, ...]

    def as_json(self) -> dict[str, Any]:
        return {"choices": list(self.values)}


@dataclass(frozen=True)
class Range:
    """A range to sample from: ``low..high``, log-uniform or uniform, integers or floats."""

    low: float
    high: float
    log: bool
    integer: bool

    def as_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


Dimension = Choices | Range


def _number(text: str, flag: str, whole: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{flag} {whole!r}: '{text}' is not a number (expected e.g. 1e-4..1e-1)") from None
    if not math.isfinite(value):
        raise UsageError(f"{flag} {whole!r}: '{text}' is not a finite number")
    return value


def _point(text: str) -> Value:
    """A grid point as the run will read it: an int, a float, or the text itself (``true``)."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return value if not isinstance(value, float) or math.isfinite(value) else text
    return text


def _range(text: str, flag: str, whole: str) -> Range:
    scale = None
    if text.startswith(("log:", "lin:")):
        scale, text = text[:3], text[4:]
    low_text, _, high_text = text.partition("..")
    low, high = _number(low_text.strip(), flag, whole), _number(high_text.strip(), flag, whole)
    if not low < high:
        raise UsageError(f"{flag} {whole!r}: a range goes from low to high (e.g. 1e-4..1e-1), got {low} >= {high}")
    if scale == "log" and low <= 0:
        raise UsageError(f"{flag} {whole!r}: a log: range needs positive ends (or use lin:)")
    log = scale == "log" or (scale is None and low > 0 and high / low >= 10)
    integer = isinstance(low, int) and isinstance(high, int)
    return Range(float(low), float(high), log, integer)


def parse_values(text: str, flag: str, *, positive: bool = False) -> Dimension:
    """``flag``'s VALUES: a comma list (grid points) or a range ``[log:|lin:]A..B``."""
    whole = text
    text = text.strip()
    if ".." in text:
        dim = _range(text, flag, whole)
        if positive and dim.low <= 0:
            raise UsageError(f"{flag} {whole!r}: expected positive values, the range starts at {dim.low:g}")
        return dim
    if text.startswith(("log:", "lin:")):
        raise UsageError(f"{flag} {whole!r}: log: and lin: prefix a range A..B, not a list")
    items = [item.strip() for item in text.split(",")]
    if not text or any(not item for item in items):
        raise UsageError(f"{flag} {whole!r}: expected a comma list (0.1,0.01) or a range (1e-4..1e-1)")
    points = tuple(dict.fromkeys(_point(item) for item in items))  # a point named twice is run once
    if positive:
        for point in points:
            if isinstance(point, str) or not point > 0:
                raise UsageError(f"{flag} {whole!r}: expected positive numbers, got '{point}'")
    return Choices(points)


def parse_opt_values(specs: Sequence[str]) -> dict[str, Dimension]:
    """``--opt KEY=VALUES`` (repeatable) as ``{KEY: dimension}``."""
    dims: dict[str, Dimension] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--opt {spec!r}: expected KEY=VALUES, e.g. momentum=0,0.9 or weight_decay=1e-5..1e-3")
        if key in RESERVED:
            hint = "--lr VALUES" if key == "lr" else "the sweep's own flag"
            raise UsageError(f"--opt {spec!r}: '{key}' is set by {hint}, not --opt")
        if key in dims:
            raise UsageError(f"--opt {key} is given twice: put every value in one list ({key}=A,B,C)")
        dims[key] = parse_values(values, f"--opt {key}=")
    return dims


@dataclass(frozen=True)
class Space:
    """The sweep's dimensions, in order: ``optimizer``, ``lr``, each ``--opt`` key, ``sched``."""

    dims: dict[str, Dimension]

    @property
    def is_grid(self) -> bool:
        return all(isinstance(d, Choices) for d in self.dims.values())

    def grid(self) -> Iterator[dict[str, Value]]:
        """Every configuration of a grid, the first dimension varying slowest."""
        names = list(self.dims)
        lists = [d.values for d in self.dims.values() if isinstance(d, Choices)]
        if len(lists) != len(names):
            raise ValueError("a space with ranges has no grid")
        for combo in itertools.product(*lists):
            yield dict(zip(names, combo))

    def size(self) -> int | None:
        """The number of configurations of a grid, None with a range."""
        return math.prod(len(d.values) for d in self.dims.values()) if self.is_grid else None  # type: ignore[union-attr]

    def as_json(self) -> dict[str, Any]:
        return {name: dim.as_json() for name, dim in self.dims.items()}

"""Hyper-parameters read from a factory's signature, parsed and type-checked.

The seed says "note what parameters each optimizer needs": ``zoo show adagrad`` lists them with
their defaults, and ``--lr`` / ``--opt KEY=VALUE`` are checked against the same signature. The
same machinery reads a scheduler's (``--sched-opt``) and an augmentation's (``--augment
NAME:KEY=VALUE``) hyper-parameters.
"""

from __future__ import annotations

import ast
import difflib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from zoo.errors import UsageError

__all__ = [
    "Param",
    "REQUIRED",
    "factory_params",
    "optimizer_params",
    "check_hparams",
    "check_required",
    "convert",
    "parse_hparams",
    "parse_opt_pairs",
]


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its default in the signature and the zoo's default (if any)."""

    name: str
    default: Any
    annotation: str = ""  # e.g. "float", "int | None", "tuple[float, float]"

    @property
    def kind(self) -> str:
        """The value type the parameter takes: bool, int, float, tuple, list (of numbers), choice
        (a ``Literal``), callable (not from a command line), str or any."""
        text = self.annotation
        alternatives = [a for a in _alternatives(text) if a != "None"]
        if alternatives and alternatives[0].startswith("Literal["):
            return "choice"
        if alternatives and alternatives[0].startswith("Callable"):
            return "callable"
        if alternatives and all(a.startswith(("list[", "Iterable[", "Sequence[")) for a in alternatives):
            return "list"  # a number where one is allowed ("list[float] | float") is simpler to give
        for kind in ("tuple", "float", "int", "bool", "str"):
            if kind in text and not (kind == "int" and "float" in text):
                return kind
        default = self.default
        if isinstance(default, bool):
            return "bool"
        if isinstance(default, tuple):
            return "tuple"
        if isinstance(default, float) or _is_tensor(default):
            return "float"
        if isinstance(default, int):
            return "int"
        return "str" if isinstance(default, str) else "any"

    @property
    def choices(self) -> tuple[Any, ...]:
        """The values a ``Literal[...]`` annotation allows (empty for any other)."""
        first = _alternatives(self.annotation)[0]
        if not first.startswith("Literal["):
            return ()
        try:
            values = ast.literal_eval(f"({first[len('Literal[') : -1]},)")
        except (ValueError, SyntaxError):
            return ()
        return tuple(values)

    @property
    def optional(self) -> bool:
        return "None" in self.annotation or self.default is None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _alternatives(annotation: str) -> list[str]:
    """``"list[float] | float"`` -> ``["list[float]", "float"]``: the top-level members of a union."""
    out, depth, start = [], 0, 0
    for i, char in enumerate(annotation):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "|" and depth == 0:
            out.append(annotation[start:i].strip())
            start = i + 1
    out.append(annotation[start:].strip())
    return out


def _is_tensor(value: Any) -> bool:
    return type(value).__name__ == "Tensor" and type(value).__module__.startswith("torch")


def optimizer_params(factory: Any) -> tuple[list[Param], bool]:
    """The factory's hyper-parameters (everything after ``params``) and whether it also
    accepts ``**kwargs``."""
    return factory_params(factory, leading=1)


def factory_params(factory: Any, *, leading: int = 1) -> tuple[list[Param], bool]:
    """The factory's hyper-parameters, after its first ``leading`` positional parameters (an
    optimizer's ``params``, a scheduler's ``optimizer``; none for an augmentation), and whether
    it also accepts ``**kwargs``."""
    target = factory.__init__ if isinstance(factory, type) else factory
    signature = inspect.signature(target)
    params = list(signature.parameters.values())
    if isinstance(factory, type):
        params = params[1:]  # self
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for _ in range(leading):
        if params and params[0].kind in positional:
            params = params[1:]  # what the zoo passes: the parameters to optimize, the optimizer
    out: list[Param] = []
    var_kw = False
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind is not inspect.Parameter.VAR_POSITIONAL:
            default = REQUIRED if p.default is inspect.Parameter.empty else p.default
            # torch marks "required" with a sentinel object in some releases
            if type(default).__name__ == "_RequiredParameter":
                default = REQUIRED
            annotation = p.annotation
            if annotation is inspect.Parameter.empty:
                text = ""
            elif isinstance(annotation, str):
                text = annotation
            else:
                text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
                text = text or str(annotation)
            out.append(Param(p.name, default, text.replace("typing.", "")))
    return out, var_kw


def parse_opt_pairs(pairs: Iterable[str], flag: str = "--opt", example: str = "momentum=0.9") -> dict[str, str]:
    """``["momentum=0.9", "betas=0.9,0.99"]`` -> ``{"momentum": "0.9", ...}``; ``flag`` and
    ``example`` are for the error (``--sched-opt``, ``eta_min=1e-5``)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got '{pair}' (e.g. {flag} {example})")
        out[key] = value.strip()
    return out


_KIND_TEXT = {
    "bool": "a boolean (true/false)",
    "int": "an integer",
    "float": "a number",
    "str": "text",
}


def convert(param: Param, raw: str, owner: str, current: Any = None) -> Any:
    """Convert the text ``raw`` to the parameter's type; an error names ``owner`` (``"optimizer
    'sgd'"``) and what was expected."""
    text = raw.strip()
    kind = param.kind
    if param.optional and text.lower() in ("none", "null", "~"):
        return None

    def bad(expected: str) -> UsageError:
        return UsageError(f"{owner}: {param.name} must be {expected}, got '{raw}'")

    if kind == "callable":
        raise UsageError(
            f"{owner}: {param.name} takes a Python callable, which a command line cannot give "
            "(a plugin can register a factory that passes one: docs/plugins.md)"
        )
    if kind == "choice" and param.choices:
        matches = [c for c in param.choices if str(c) == text]
        if not matches:
            raise bad(f"one of {', '.join(map(str, param.choices))}")
        return matches[0]
    if kind == "list":
        inner = _alternatives(param.annotation)[0]
        integers = "int" in inner and "float" not in inner
        try:
            numbers = [float(p) for p in text.strip("()[]").split(",") if p.strip()]
        except ValueError:
            numbers = []
        if not numbers or (integers and not all(n.is_integer() for n in numbers)):
            raise bad(f"comma-separated {'integers' if integers else 'numbers'} (e.g. 30,60,90)")
        return [int(n) for n in numbers] if integers else numbers

    if kind == "tuple":
        example = current if isinstance(current, tuple) else param.default
        size = len(example) if isinstance(example, tuple) else None
        parts = [p.strip() for p in text.strip("()[]").split(",") if p.strip()]
        try:
            numbers = tuple(float(p) for p in parts)
        except ValueError:
            numbers = ()
        if not numbers or (size is not None and len(numbers) != size):
            shown = ",".join(map(str, example)) if isinstance(example, tuple) else "0.9,0.999"
            raise bad(f"{size or 'several'} comma-separated numbers (e.g. {shown})")
        return numbers
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise bad(_KIND_TEXT["bool"])
    if kind in ("int", "float"):
        try:
            number = float(text)
        except ValueError:
            raise bad(_KIND_TEXT[kind]) from None
        if kind == "int":
            if not number.is_integer():
                raise bad(_KIND_TEXT["int"])
            return int(number)
        return number
    if kind == "str":
        return text
    try:  # no type to go by: YAML's reading of numbers, booleans and text
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def check_hparams(
    owner: str,
    params: list[Param],
    var_kw: bool,
    defaults: dict[str, Any],
    opts: dict[str, str],
    *,
    show: str,
    how: str,
    require: bool = True,
) -> dict[str, Any]:
    """``defaults`` updated with the ``opts`` texts, each checked against ``params`` and
    converted to its type. ``owner`` names the factory (``"scheduler 'cosine'"``), ``show`` is
    the command that lists its parameters, ``how`` the way to give one (``"--sched-opt
    {key}=VALUE"``). With ``require``, a missing required parameter is an error too
    (:func:`check_required`)."""
    by_name = {p.name: p for p in params}
    hparams = dict(defaults)
    for key, text in opts.items():
        if key not in by_name and not var_kw:
            close = difflib.get_close_matches(key, list(by_name), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            valid = ", ".join(p.name for p in params) or "none"
            raise UsageError(f"{owner} has no parameter '{key}'; {hint}valid: {valid} ({show})")
        param = by_name.get(key) or Param(key, None)
        hparams[key] = convert(param, text, owner, hparams.get(key))
    if require:
        check_required(owner, params, hparams, how=how)
    return hparams


def check_required(owner: str, params: list[Param], hparams: dict[str, Any], *, how: str) -> None:
    """A UsageError naming the required parameters that ``hparams`` lacks, and how to give one."""
    missing = [p.name for p in params if p.required and p.name not in hparams]
    if missing:
        raise UsageError(f"{owner} needs {', '.join(missing)}: pass {how.format(key=missing[0])}")


def parse_hparams(
    optimizer: str,
    factory: Any,
    defaults: dict[str, Any],
    *,
    lr: float | None = None,
    opts: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The hyper-parameters a run passes to the factory: the entry's defaults, then ``--lr``,
    then ``--opt`` pairs, each checked against the signature and converted to its type."""
    params, var_kw = optimizer_params(factory)
    raw = dict(opts or {})
    if lr is not None:
        raw.setdefault("lr", repr(float(lr)))
    hparams = check_hparams(
        f"optimizer '{optimizer}'",
        params,
        var_kw,
        defaults,
        raw,
        show=f"zoo show {optimizer}",
        how="--opt {key}=VALUE",
    )
    if lr is not None and "lr" in raw and raw["lr"] != repr(float(lr)) and hparams["lr"] != float(lr):
        raise UsageError(
            f"--lr {lr:g} and --opt lr={raw['lr']} disagree: give the learning rate once (--lr {lr:g}, "
            f"or --opt lr={raw['lr']} alone)"
        )
    if "lr" in hparams and isinstance(hparams["lr"], (int, float)) and not hparams["lr"] > 0:
        raise UsageError(f"optimizer '{optimizer}': lr must be > 0, got {hparams['lr']}")
    return hparams

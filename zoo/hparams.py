"""Optimizer hyper-parameters: read from the factory's signature, parsed and type-checked.

The seed says "note what parameters each optimizer needs": ``zoo show adagrad`` lists them with
their defaults, and ``--lr`` / ``--opt KEY=VALUE`` are checked against the same signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from zoo.errors import UsageError

__all__ = ["Param", "REQUIRED", "optimizer_params", "parse_hparams", "parse_opt_pairs"]


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
        """The value type the parameter takes: bool, int, float, tuple, str or any."""
        text = self.annotation
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
    def optional(self) -> bool:
        return "None" in self.annotation or self.default is None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _is_tensor(value: Any) -> bool:
    return type(value).__name__ == "Tensor" and type(value).__module__.startswith("torch")


def optimizer_params(factory: Any) -> tuple[list[Param], bool]:
    """The factory's hyper-parameters (everything after ``params``) and whether it also
    accepts ``**kwargs``."""
    target = factory.__init__ if isinstance(factory, type) else factory
    signature = inspect.signature(target)
    params = list(signature.parameters.values())
    if isinstance(factory, type):
        params = params[1:]  # self
    if params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]  # the parameters to optimize
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


def parse_opt_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``["momentum=0.9", "betas=0.9,0.99"]`` -> ``{"momentum": "0.9", ...}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--opt expects KEY=VALUE, got '{pair}' (e.g. --opt momentum=0.9)")
        out[key] = value.strip()
    return out


_KIND_TEXT = {
    "bool": "a boolean (true/false)",
    "int": "an integer",
    "float": "a number",
    "str": "text",
}


def convert(param: Param, raw: str, optimizer: str, current: Any = None) -> Any:
    """Convert the text ``raw`` to the parameter's type; an error names what was expected."""
    text = raw.strip()
    kind = param.kind
    if param.optional and text.lower() in ("none", "null", "~"):
        return None

    def bad(expected: str) -> UsageError:
        return UsageError(f"optimizer '{optimizer}': {param.name} must be {expected}, got '{raw}'")

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
    by_name = {p.name: p for p in params}
    valid = ", ".join(p.name for p in params)
    hparams = dict(defaults)
    raw = dict(opts or {})
    if lr is not None:
        raw.setdefault("lr", repr(float(lr)))
    for key, text in raw.items():
        if key not in by_name and not var_kw:
            import difflib

            close = difflib.get_close_matches(key, list(by_name), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UsageError(
                f"optimizer '{optimizer}' has no parameter '{key}'; {hint}valid: {valid} (zoo show {optimizer})"
            )
        param = by_name.get(key) or Param(key, None)
        hparams[key] = convert(param, text, optimizer, hparams.get(key))
    if lr is not None and "lr" in raw and raw["lr"] != repr(float(lr)) and hparams["lr"] != float(lr):
        raise UsageError(
            f"--lr {lr:g} and --opt lr={raw['lr']} disagree: give the learning rate once (--lr {lr:g}, "
            f"or --opt lr={raw['lr']} alone)"
        )
    if "lr" in hparams and isinstance(hparams["lr"], (int, float)) and not hparams["lr"] > 0:
        raise UsageError(f"optimizer '{optimizer}': lr must be > 0, got {hparams['lr']}")
    missing = [p.name for p in params if p.required and p.name not in hparams]
    if missing:
        raise UsageError(f"optimizer '{optimizer}' needs {', '.join(missing)}: pass --opt {missing[0]}=VALUE")
    return hparams

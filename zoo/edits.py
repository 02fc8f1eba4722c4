"""Model edits from registry.yaml: add a module, append, replace a layer, freeze parameters.

These are the seed's three VGG16 edits made declarative and checked. Every edited model goes
through a dry forward pass that proves each new module is actually called and that the output
is ``(batch, num_classes)``: ``vgg16.add_module('add_linear', ...)`` registers a module that
torchvision's ``VGG.forward`` never calls, so training it "works" while the output stays
1000-wide. The zoo refuses that and offers ``append``, which does run the module on the output.

Parsing needs no torch; applying and checking import it.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from zoo.errors import UsageError, one_line

__all__ = [
    "LayerSpec",
    "Edit",
    "NUM_CLASSES",
    "torch_nn_layers",
    "parse_edit",
    "edit_from_json",
    "apply_edits",
    "check_model",
    "build_layer",
]

NUM_CLASSES = "$num_classes"  # in layer arguments: the dataset's number of classes
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


@lru_cache(maxsize=1)
def torch_nn_layers() -> frozenset[str]:
    """The ``torch.nn`` layer class names of the installed torch, read from its source so that
    checking a registry file does not import torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return frozenset()
    source = Path(spec.origin).parent / "nn" / "modules" / "__init__.py"
    try:
        tree = ast.parse(source.read_text())
    except OSError:
        return frozenset()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


@dataclass(frozen=True)
class LayerSpec:
    """A ``torch.nn`` layer by class name and arguments, e.g. ``Linear(4096, $num_classes)``."""

    type: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        parts = [repr(a) if a != NUM_CLASSES else "num_classes" for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs]
        return f"{self.type}({', '.join(parts)})"


@dataclass(frozen=True)
class Edit:
    """One edit. ``op`` is ``add_module`` (``name`` into the module at ``path``, "" = top
    level), ``append`` (``name`` at top level, run on the model's output), ``replace`` (the
    module at dotted ``path``) or ``freeze`` (parameters matching ``patterns``)."""

    op: str
    path: str = ""
    name: str | None = None
    layer: LayerSpec | None = None
    patterns: tuple[str, ...] = ()
    source: str = ""

    def __str__(self) -> str:
        if self.op == "add_module":
            where = f"{self.path}." if self.path else ""
            return f"add_module {where}{self.name} = {self.layer}"
        if self.op == "append":
            return f"append {self.name} = {self.layer} (applied to the output)"
        if self.op == "replace":
            return f"replace {self.path} with {self.layer}"
        return f"freeze {', '.join(self.patterns)}"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        if self.path or self.op in ("add_module", "replace"):
            out["path"] = self.path
        if self.name:
            out["name"] = self.name
        if self.layer:
            out["layer"] = self.layer.type
            out["args"] = list(self.layer.args)
            out["kwargs"] = dict(self.layer.kwargs)
        if self.patterns:
            out["patterns"] = list(self.patterns)
        return out


# -- parsing (no torch) -----------------------------------------------------------------------

_OPS = ("add_module", "append", "replace", "freeze")
_LAYER_KEYS = {"layer", "args", "kwargs"}
_ALLOWED_KEYS = {
    "add_module": {"add_module", "to"} | _LAYER_KEYS,
    "append": {"append"} | _LAYER_KEYS,
    "replace": {"replace"} | _LAYER_KEYS,
    "freeze": {"freeze"},
}


def _check_value(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.startswith("$") and value != NUM_CLASSES:
        raise UsageError(f"{where}: unknown placeholder {value!r}: the only one is '{NUM_CLASSES}'")
    if isinstance(value, list):
        return tuple(_check_value(v, where) for v in value)
    if isinstance(value, dict):
        raise UsageError(f"{where}: layer arguments must be numbers, strings, booleans or lists")
    return value


def parse_layer(raw: dict[str, Any], where: str) -> LayerSpec:
    layer = raw.get("layer")
    if not isinstance(layer, str) or not _IDENT.match(layer):
        raise UsageError(f"{where}: 'layer' must name a torch.nn class such as Linear, got {layer!r}")
    known = torch_nn_layers()
    if known and layer not in known:
        import difflib

        close = difflib.get_close_matches(layer, sorted(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"{where}: unknown layer '{layer}': expected a torch.nn class{hint}")
    args = raw.get("args", [])
    kwargs = raw.get("kwargs", {})
    if not isinstance(args, list):
        raise UsageError(f"{where}: 'args' must be a list, got {args!r}")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise UsageError(f"{where}: 'kwargs' must be a mapping of argument names, got {kwargs!r}")
    return LayerSpec(
        layer,
        tuple(_check_value(a, where) for a in args),
        tuple((k, _check_value(v, where)) for k, v in kwargs.items()),
    )


def parse_edit(raw: Any, where: str) -> Edit:
    """Validate one edit mapping from registry.yaml (``where`` is "file:line")."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: an edit must be a mapping such as {{replace: classifier.6, layer: Linear, ...}}")
    ops = [op for op in _OPS if op in raw]
    if len(ops) != 1:
        raise UsageError(f"{where}: an edit needs exactly one of {', '.join(_OPS)}; got keys {sorted(raw)}")
    op = ops[0]
    extra = set(raw) - _ALLOWED_KEYS[op]
    if extra:
        raise UsageError(
            f"{where}: unknown key(s) {sorted(extra)} in a {op} edit; allowed: {sorted(_ALLOWED_KEYS[op])}"
        )
    if op == "freeze":
        patterns = raw["freeze"]
        patterns = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise UsageError(f"{where}: freeze takes a parameter-name glob or a list of them, e.g. 'features.*'")
        return Edit("freeze", patterns=tuple(patterns), source=where)
    layer = parse_layer(raw, where)
    if op == "replace":
        path = raw["replace"]
        if not isinstance(path, (str, int)) or not _PATH.match(str(path)):
            raise UsageError(f"{where}: replace takes a dotted module path such as classifier.6, got {path!r}")
        return Edit("replace", path=str(path), layer=layer, source=where)
    name = raw[op]
    if not isinstance(name, str) or not _IDENT.match(name):
        raise UsageError(f"{where}: {op} takes a module name (a Python identifier), got {name!r}")
    parent = raw.get("to", "") if op == "add_module" else ""
    if parent and (not isinstance(parent, str) or not _PATH.match(parent)):
        raise UsageError(f"{where}: 'to' must be a dotted module path such as classifier, got {parent!r}")
    return Edit(op, path=parent, name=name, layer=layer, source=where)


def edit_from_json(raw: Mapping[str, Any], where: str) -> Edit:
    """An :class:`Edit` from its :meth:`Edit.as_json` form (as a checkpoint records it),
    re-validated like a registry file's edit: torch.nn layers only."""
    op = raw.get("op")
    if op == "freeze":
        return parse_edit({"freeze": list(raw.get("patterns", []))}, where)
    form: dict[str, Any] = {
        "layer": raw.get("layer"),
        "args": list(raw.get("args", [])),
        "kwargs": dict(raw.get("kwargs", {})),
    }
    if op == "replace":
        form["replace"] = raw.get("path")
    elif op == "append":
        form["append"] = raw.get("name")
    elif op == "add_module":
        form["add_module"] = raw.get("name")
        if raw.get("path"):
            form["to"] = raw["path"]
    else:
        raise UsageError(f"{where}: unknown edit {op!r}")
    return parse_edit(form, where)


# -- applying (torch) -------------------------------------------------------------------------


def build_layer(spec: LayerSpec, num_classes: int, where: str = "") -> Any:
    """Instantiate a ``torch.nn`` layer; only classes of torch.nn, never an arbitrary import."""
    import torch.nn as nn

    cls = getattr(nn, spec.type, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or spec.type not in torch_nn_layers():
        raise UsageError(f"{where}: unknown layer '{spec.type}': expected a torch.nn class")

    def fill(value: Any) -> Any:
        if value == NUM_CLASSES:
            return num_classes
        return [fill(v) for v in value] if isinstance(value, tuple) else value

    args = [fill(a) for a in spec.args]
    kwargs = {k: fill(v) for k, v in spec.kwargs}
    problem = _argument_problem(cls, args, kwargs)
    if problem:
        raise UsageError(f"{where}: cannot build {spec}: {problem}")
    try:
        return cls(*args, **kwargs)
    except Exception as exc:
        raise UsageError(f"{where}: cannot build {spec}: {one_line(exc)}") from exc


_SIMPLE_TYPES = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _argument_problem(cls: type, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """An argument the layer's signature refuses (too many, unknown, or not the plain int, float
    or bool it declares), said in the user's terms rather than by torch's internals."""
    import inspect

    try:
        signature = inspect.signature(cls).replace(return_annotation=inspect.Signature.empty)
    except (TypeError, ValueError):
        return None  # nothing to check against: the constructor will say
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        return f"{exc}; {cls.__name__} takes {signature}"
    for name, value in bound.arguments.items():
        annotation = signature.parameters[name].annotation
        kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }.get(kind or "", True)
        if not ok:
            return f"{name} must be {_SIMPLE_TYPES[kind]}, got {value!r}; {cls.__name__} takes {signature}"
    return None


class ApplyAppended:
    """A forward hook that runs an appended module on the model's output. A class rather than
    a lambda so that a model saved whole (``zoo export --format full``) still pickles."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, module: Any, inputs: Any, output: Any) -> Any:
        return getattr(module, self.name)(output)


def _submodule(model: Any, path: str, where: str) -> Any:
    if not path:
        return model
    module = model
    walked: list[str] = []
    for part in path.split("."):
        children = dict(module.named_children())
        if part not in children:
            here = ".".join(walked) or "the model"
            names = ", ".join(children) or "none"
            raise UsageError(
                f"{where}: no module '{path}' in the model: {here} has no child '{part}' (its children: {names})"
            )
        module = children[part]
        walked.append(part)
    return module


def apply_edits(model: Any, edits: tuple[Edit, ...], num_classes: int, where: str = "") -> tuple[Any, list[str]]:
    """Apply ``edits`` in order; returns the model and the dotted names of modules added or
    replaced (the ones the dry run must see called)."""
    touched: list[str] = []
    for edit in edits:
        src = edit.source or where
        if edit.op == "freeze":
            names = [n for n, _ in model.named_parameters()]
            hits = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in edit.patterns)]
            if not hits:
                raise UsageError(
                    f"{src}: freeze {list(edit.patterns)} matches no parameter (e.g. {', '.join(names[:3])})"
                )
            for name, param in model.named_parameters():
                if name in hits:
                    param.requires_grad_(False)
            continue
        layer = build_layer(edit.layer, num_classes, src)  # type: ignore[arg-type]
        if edit.op == "replace":
            _submodule(model, edit.path, src)  # must exist: replace never adds
            parent_path, _, leaf = edit.path.rpartition(".")
            setattr(_submodule(model, parent_path, src), leaf, layer)
            touched.append(edit.path)
            continue
        parent = _submodule(model, edit.path, src)
        if edit.name in dict(parent.named_children()):
            raise UsageError(f"{src}: the model already has a module '{edit.name}' there; use replace to swap it")
        parent.add_module(edit.name, layer)
        if edit.op == "append":
            model.register_forward_hook(ApplyAppended(edit.name))
        touched.append(f"{edit.path}.{edit.name}" if edit.path else edit.name)  # type: ignore[str-bytes-safe]
    return model, touched


def check_model(
    model: Any, entry: Any, num_classes: int, touched: list[str], *, input_size: Any = None
) -> tuple[int, ...]:
    """Dry forward pass on ``input_size`` (default ``entry.input_size``): every added/replaced
    module must be called and the output must be ``(batch, num_classes)``. Returns the output shape."""
    import torch

    size = tuple(input_size) if input_size is not None else tuple(entry.input_size)

    where = entry.source or f"model '{entry.name}' (plugin '{entry.plugin}')"
    called: set[str] = set()
    handles = []
    modules = dict(model.named_modules())
    for name in touched:
        handles.append(modules[name].register_forward_hook(lambda m, i, o, name=name: called.add(name)))
    was_training = model.training
    model.eval()  # batch norm and dropout behave; batch of 2 keeps it cheap
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            out = model(torch.zeros(2, *size, device=device))
    except Exception as exc:
        raise UsageError(
            f"{where}: model '{entry.name}' fails a dry forward pass on input "
            f"(2, {', '.join(map(str, size))}): "
            f"{one_line(exc)}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    for name in touched:
        if name not in called:
            cls = type(model).__name__
            raise UsageError(
                f"{where}: model '{entry.name}': module '{name}' is added but never called: "
                f"{cls}.forward does not use it, so the output stays {shape}; add_module only "
                f"registers a module. Use 'append: {name.rpartition('.')[2]}' to run it on the model's "
                f"output, or add it inside a Sequential (add_module with 'to: classifier')"
            )
    if shape != (2, num_classes):
        hint = (
            " Replace the last layer with one of num_classes outputs (e.g. replace: classifier.6, "
            "layer: Linear, args: [4096, $num_classes]) or append one"
            if entry.base or touched
            else " The model's builder must honour its num_classes argument"
        )
        raise UsageError(
            f"{where}: model '{entry.name}' outputs shape {shape} for a batch of 2, "
            f"expected (2, {num_classes}) for {num_classes} classes.{hint}"
        )
    return shape

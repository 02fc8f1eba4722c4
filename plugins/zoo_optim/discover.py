"""Find torch.optim's optimizer classes by reading torch's source, not by importing it."""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

_CLASS = re.compile(r"^class\s+(\w+)\s*\(\s*([\w.]+)", re.MULTILINE)


@lru_cache(maxsize=1)
def torch_optimizers() -> tuple[str, ...]:
    """Class names exported by ``torch.optim`` that derive from ``Optimizer``, sorted."""
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    if spec is None or not spec.origin:
        return ()
    optim_dir = Path(spec.origin).parent / "optim"
    tree = ast.parse((optim_dir / "__init__.py").read_text())
    exported: set[str] | None = None
    modules: dict[str, str] = {}  # class name -> module file it is imported from
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torch.optim."):
            for alias in node.names:
                modules[alias.asname or alias.name] = node.module.rsplit(".", 1)[1]
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            exported = set(ast.literal_eval(node.value))
    bases: dict[str, str] = {}  # class -> its first base, across torch.optim's modules
    for module in set(modules.values()):
        path = optim_dir / f"{module}.py"
        if path.is_file():
            for cls, base in _CLASS.findall(path.read_text()):
                bases.setdefault(cls, base.rsplit(".", 1)[-1])

    def is_optimizer(cls: str, depth: int = 0) -> bool:
        base = bases.get(cls)
        return base == "Optimizer" or (base is not None and depth < 10 and is_optimizer(base, depth + 1))

    names = exported if exported is not None else set(modules)
    return tuple(sorted((n for n in names if n in modules and is_optimizer(n)), key=str.lower))

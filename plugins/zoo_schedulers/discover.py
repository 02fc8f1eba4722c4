"""Find torch.optim.lr_scheduler's scheduler classes by reading torch's source, not by importing it."""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def torch_schedulers() -> tuple[str, ...]:
    """Class names exported by ``torch.optim.lr_scheduler`` that derive from ``LRScheduler``
    (itself left out), sorted."""
    spec = importlib.util.find_spec("torch")  # finds the package without importing it
    if spec is None or not spec.origin:
        return ()
    path = Path(spec.origin).parent / "optim" / "lr_scheduler.py"
    if not path.is_file():
        return ()
    tree = ast.parse(path.read_text())
    exported: set[str] | None = None
    bases: dict[str, list[str]] = {}  # class -> the names of its bases
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            exported = set(ast.literal_eval(node.value))
        elif isinstance(node, ast.ClassDef):
            bases[node.name] = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]

    def is_scheduler(cls: str, depth: int = 0) -> bool:
        return depth < 10 and any(b == "LRScheduler" or is_scheduler(b, depth + 1) for b in bases.get(cls, ()))

    names = exported if exported is not None else {n for n in bases if not n.startswith("_")}
    return tuple(sorted((n for n in names if is_scheduler(n)), key=str.lower))

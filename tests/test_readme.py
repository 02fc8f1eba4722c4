"""The README stays true: CI runs its test command, and its examples name real things."""

from __future__ import annotations

import re

from conftest import ROOT
from zoo.registry import get_registry


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    readme = (ROOT / "README.md").read_text()
    assert command in readme


def test_readme_commands_name_registered_things():
    readme = (ROOT / "README.md").read_text()
    registry = get_registry()
    for model, optimizer in re.findall(r"zoo run ([a-z0-9-]+) ([a-z0-9-]+)", readme):
        if model in ("MODEL", "example-mlp"):
            continue
        registry.model(model)
        registry.optimizer(optimizer)
    for dataset in re.findall(r"--data ([a-z0-9-]+)", readme):
        registry.dataset(dataset)

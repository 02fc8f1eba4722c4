"""The README and docs/ stay true: CI runs the README's test command after the lint checks, the
README's examples name real things, and every relative link in the docs resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT
from zoo.registry import get_registry

README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
LINT = (".venv/bin/ruff check .", ".venv/bin/ruff format --check .", ".venv/bin/lint-imports")
DOCS = [README, ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target "title")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:


def readme_test_command() -> str:
    """The quick start's second command: the one line that creates the venv and runs pytest."""
    lines = README.read_text().splitlines()
    lines = [line for line in lines if line.startswith("python3 -m venv") and "pytest" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = CI.read_text().splitlines()
    assert readme_test_command() in ci, ".ci/run must run the README's test command as a line of its own"


def test_ci_lints_before_the_tests_and_fails_on_errors():
    ci = CI.read_text().splitlines()
    tests_at = ci.index(readme_test_command())
    assert "set -euo pipefail" in ci[:tests_at]
    for check in LINT:
        assert any(line.startswith(check) for line in ci[:tests_at]), f".ci/run does not run {check!r} before the tests"


def test_readme_commands_name_registered_things():
    readme = README.read_text()
    registry = get_registry()
    for model, optimizer in re.findall(r"zoo run ([a-z0-9-]+) ([a-z0-9-]+)", readme):
        if model in ("MODEL", "example-mlp") or model.startswith("-"):  # zoo run --config FILE: no names
            continue
        registry.model(model)
        registry.optimizer(optimizer)
    for dataset in re.findall(r"--data ([a-z0-9-]+)", readme):
        registry.dataset(dataset)


def prose(text: str) -> str:
    """Markdown without its code blocks and code spans, where a link is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(f"{base}-{count}" if count else base)
    return out


def test_slugs_are_githubs():
    assert slug("Errors and exit codes") == "errors-and-exit-codes"
    assert slug("Training with `zoo run`, and more") == "training-with-zoo-run-and-more"
    assert slug("Results: 2026-11-26") == "results-2026-11-26"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in LINK.findall(prose(doc.read_text())):
        if SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (doc.parent / path_part).resolve() if path_part else doc
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading '#{anchor}' in {linked.relative_to(ROOT)}")
    assert not broken, f"broken links in {doc.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_the_readme_links_every_docs_page():
    targets = LINK.findall(prose(README.read_text()))
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in targets}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md links no docs/ page named {missing}"


def test_the_documented_layers_are_the_contract():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    text = (ROOT / "docs" / "development.md").read_text()
    block = re.search(r"^### The layers\n.*?^```\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block, "docs/development.md has no code block under '### The layers'"
    assert block.group(1).splitlines() == contract["layers"]

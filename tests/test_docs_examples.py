"""The code blocks of README.md and docs/*.md work when a user copies them.

A fenced block is tested as the HTML comment on the line right before it says (GitHub does not
render the comment):

``<!-- test: file PATH -->``
    Write the block to PATH in the document's workspace: a fresh directory per test that holds
    every ``file`` block of that document.
``<!-- test: run -->`` (bash)
    Run each line in the workspace, in order, each to exit 0, where ``zoo`` is the zoo's Python
    in a fresh virtual environment layered on the test's own (so ``zoo install`` installs there,
    offline, and nothing leaks into the environment that runs the tests).
``<!-- test: registry FILE -->`` (yaml)
    A registry file: ``zoo list --registry FILE`` exits 0 and lists every entry the block
    declares, and ``zoo show`` builds each of its models.
``<!-- test: excerpt PATH -->`` (yaml, python)
    A quotation of the repository's PATH: each YAML entry's keys have PATH's values, each Python
    function exists in PATH with the same parameters.
``<!-- test: plugin NAME -->`` (python)
    The module of plugin NAME: it loads under ZOO_STRICT_PLUGINS=1 and registers every name it
    passes to ``register(...)``.
``<!-- test: output -->`` (console)
    Each ``$ zoo ...`` line followed by output is run in the workspace with the built-in plugins
    only; its stderr then stdout must be those lines.
``<!-- test: broken-plugin NAME MODULE -->`` (console)
    The lines ``zoo list`` prints when plugin NAME's module imports a MODULE that does not exist.
``<!-- test: notebook -->`` (python)
    A cell of the document's notebook: its notebook blocks run in order in one Python process (one
    namespace, as a notebook's cells), in a fresh workspace with the document's files, each without error.
``<!-- test: skip REASON -->``
    Not tested.

Without a marker: every ``zoo`` command in a bash block and every ``$ zoo`` line of a console block
must parse (``zoo.cli.build_parser``), so a renamed flag fails here; toml, python and yaml blocks
must carry a marker.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import os
import re
import shlex
import site
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from zoo.cli import build_parser

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^<!--\s*test:(.*?)-->\s*$")
VERBS = {  # verb: (number of arguments, languages it applies to)
    "file": (1, None),
    "run": (0, {"bash"}),
    "registry": (1, {"yaml", "yml"}),
    "excerpt": (1, {"yaml", "yml", "python"}),
    "plugin": (1, {"python"}),
    "output": (0, {"console"}),
    "broken-plugin": (2, {"console"}),
    "notebook": (0, {"python"}),
}
MUST_BE_MARKED = {"toml", "python", "yaml", "yml"}
SHELL = {"bash", "sh", "shell"}
REGISTERED = re.compile(r"""\bregister\(\s*["']([a-z0-9][a-z0-9._-]*)["']""")
PLACEHOLDER = re.compile(r"\.\.\.|<[^>]*>|^[A-Z][A-Z0-9_]{2,}$")  # ..., <file>, RUN_DIR
BUILDS_A_MODEL = {"show", "run", "check", "validate", "predict", "export"}  # imports torch: slow


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: tuple[str, ...]  # the marker's words; () without one

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def verb(self) -> str | None:
        return self.marker[0] if self.marker else None


def read_blocks(doc: Path) -> list[Block]:
    lines = doc.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening.groups()
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), len(lines))
        marker = MARKER.match(lines[i - 1]) if i else None
        words = tuple(shlex.split(marker.group(1))) if marker else ()
        out.append(Block(doc, i + 1, lang.lower(), "".join(f"{line}\n" for line in lines[i + 1 : end]), words))
        i = end + 1
    return out


BLOCKS = [block for doc in DOCS for block in read_blocks(doc)]


def marked(*verbs: str) -> list[Block]:
    return [b for b in BLOCKS if b.verb in verbs]


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def write_files(doc: Path, workspace: Path) -> None:
    """Every ``file`` block of ``doc``, written under ``workspace``."""
    for block in BLOCKS:
        if block.doc == doc and block.verb == "file":
            path = workspace / block.marker[1]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)


def registered_names(doc: Path) -> set[str]:
    """The names the ``file`` Python blocks of ``doc`` pass to ``register(...)``."""
    return {
        name
        for block in BLOCKS
        if block.doc == doc and block.verb == "file" and block.lang == "python"
        for name in REGISTERED.findall(block.text)
    }


# -- the markers themselves ----------------------------------------------------------------------


def test_every_marker_is_known_and_sits_on_a_block():
    problems = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for n, line in enumerate(lines):
            if MARKER.match(line) and not (n + 1 < len(lines) and FENCE.match(lines[n + 1])):
                problems.append(f"{doc_id(doc)}:{n + 1}: a test marker must be the line right before a fence")
    for block in BLOCKS:
        if not block.marker:
            if block.lang in MUST_BE_MARKED:
                problems.append(f"{block.where}: a {block.lang} block without a <!-- test: ... --> marker")
            continue
        if block.verb == "skip":
            continue
        if block.verb not in VERBS:
            problems.append(f"{block.where}: unknown marker verb {block.verb!r} (known: {sorted(VERBS)}, skip)")
            continue
        arity, languages = VERBS[block.verb]
        if len(block.marker) - 1 != arity:
            problems.append(f"{block.where}: '{block.verb}' takes {arity} argument(s), got {block.marker[1:]}")
        if languages and block.lang not in languages:
            problems.append(f"{block.where}: '{block.verb}' is for {sorted(languages)} blocks, not {block.lang!r}")
        if block.verb == "file" and (Path(block.marker[1]).is_absolute() or ".." in Path(block.marker[1]).parts):
            problems.append(f"{block.where}: a file marker names a path inside the workspace")
    assert not problems, "\n".join(problems)


def test_the_blocks_are_found():
    assert marked("file") and marked("run") and marked("registry") and marked("output"), [b.marker for b in BLOCKS]


# -- every zoo command line parses ---------------------------------------------------------------


def command_lines(block: Block) -> list[str]:
    """A shell block's commands (continuation lines joined), or a console block's ``$`` lines."""
    if block.lang in SHELL:
        return block.text.replace("\\\n", " ").splitlines()
    if block.lang == "console":
        return [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
    return []


def segments(line: str) -> list[list[str]]:
    """The simple commands of a line: split at ``&&``, ``||``, ``;`` and ``|``, comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            out.append([])
        else:
            out[-1].append(token)
    return [s for s in out if s]


def zoo_args(command: list[str]) -> list[str] | None:
    """The arguments after ``zoo`` (``zoo``, ``.venv/bin/zoo``, ``python -m zoo``, ``torchrun ... -m
    zoo``), or None when the command is not the zoo."""
    while command and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", command[0]):  # VAR=value zoo ...
        command = command[1:]
    if not command:
        return None
    if Path(command[0]).name == "zoo":
        return command[1:]
    for i in range(len(command) - 1):
        if command[i] == "-m" and command[i + 1] == "zoo":
            return command[i + 2 :]
    return None


def no_abbreviations(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` and its subcommands with prefixes of long options refused, so a flag the docs
    spell that is now only the prefix of a renamed one (``--limit-train`` of ``--limit-train-n``)
    fails rather than parsing as an abbreviation."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                no_abbreviations(sub)
    return parser


def parse_error(args: list[str]) -> str | None:
    """What argparse says about ``zoo ARGS``, or None when they parse."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            no_abbreviations(build_parser()).parse_args(args)
    except SystemExit as exc:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exc.code}"
    return None


def test_parse_error_catches_a_bad_flag():
    assert parse_error(["run", "tudui", "sgd", "--epochs", "2"]) is None
    assert "--no-such-flag" in parse_error(["run", "tudui", "sgd", "--no-such-flag"])
    assert "--epoch" in parse_error(["run", "tudui", "sgd", "--epoch", "2"])  # no abbreviations


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_zoo_command_lines_parse(doc: Path):
    failures = []
    for block in BLOCKS:
        if block.doc != doc or block.verb == "skip":
            continue
        for line in command_lines(block):
            for command in segments(line):
                args = zoo_args(command)
                if args is None:
                    if Path(command[0]).name.startswith("python") and len(command) > 1:
                        script = command[1]
                        if script.endswith(".py") and not (ROOT / script).exists():
                            failures.append(f"{block.where}: {line.strip()!r}: no file {script}")
                    continue
                if any(PLACEHOLDER.search(arg) for arg in args):
                    continue
                error = parse_error(args)
                if error:
                    failures.append(f"{block.where}: {line.strip()!r}: {error}")
    assert not failures, "\n".join(failures)


# -- registry files ------------------------------------------------------------------------------


KINDS = {"models": "model", "optimizers": "optimizer", "schedulers": "scheduler", "recipes": "recipe"}


def declared(block: Block) -> set[tuple[str, str]]:
    data = yaml.safe_load(block.text)
    return {(KINDS[section], name) for section, entries in data.items() for name in entries}


@pytest.mark.parametrize("block", marked("registry"), ids=lambda b: b.where)
def test_registry_block_loads_and_declares_its_entries(block: Block, zoo_cli):
    name = block.marker[1]
    (zoo_cli.cwd / name).write_text(block.text)
    result = zoo_cli("list", "--json", "--registry", name)
    assert result.returncode == 0, f"{block.where}: zoo list --registry {name}: {result.stderr}"
    listed = {(row["kind"], row["name"]) for row in json.loads(result.stdout) if row["plugin"] == name}
    assert listed == declared(block), block.where


@pytest.mark.slow
@pytest.mark.parametrize("block", marked("registry"), ids=lambda b: b.where)
def test_registry_block_models_build(block: Block, zoo_fork):
    name = block.marker[1]
    (zoo_fork.cwd / name).write_text(block.text)
    for kind, model in sorted(declared(block)):
        if kind == "model":
            result = zoo_fork("show", model, "--registry", name)
            assert result.returncode == 0, f"{block.where}: zoo show {model} --registry {name}: {result.stderr}"


# -- quotations, plugin fragments ----------------------------------------------------------------


def functions(source: str) -> dict[str, list[str]]:
    import ast

    return {
        node.name: [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef)
    }


@pytest.mark.parametrize("block", marked("excerpt"), ids=lambda b: b.where)
def test_excerpt_matches_its_source(block: Block):
    source = (ROOT / block.marker[1]).read_text()
    if block.lang in ("yaml", "yml"):
        quoted, whole = yaml.safe_load(block.text), yaml.safe_load(source)
        for section, entries in quoted.items():
            for name, entry in entries.items():
                assert name in whole.get(section, {}), f"{block.where}: {block.marker[1]} has no {section}.{name}"
                actual = whole[section][name]
                for key, value in entry.items():
                    assert actual.get(key) == value, f"{block.where}: {section}.{name}.{key} is {actual.get(key)!r}"
    else:
        quoted, whole = functions(block.text), functions(source)
        assert quoted, f"{block.where}: no function in the excerpt"
        for name, params in quoted.items():
            assert whole.get(name) == params, f"{block.where}: {block.marker[1]} has {name}{whole.get(name)}"


@pytest.mark.parametrize("block", marked("plugin"), ids=lambda b: b.where)
def test_plugin_fragment_loads_and_registers(block: Block, zoo_cli, plugin_dist):
    plugin = block.marker[1]
    zoo_cli.paths.append(str(plugin_dist(plugin, block.text)))
    result = zoo_cli("list", "--json", env={"ZOO_STRICT_PLUGINS": "1"})
    assert result.returncode == 0, f"{block.where}: {result.stderr}"
    names = set(REGISTERED.findall(block.text))
    assert names, f"{block.where}: registers nothing"
    assert names <= {row["name"] for row in json.loads(result.stdout) if row["plugin"] == plugin}, result.stdout


@pytest.mark.parametrize("block", marked("broken-plugin"), ids=lambda b: b.where)
def test_broken_plugin_warning(block: Block, zoo_cli, plugin_dist):
    plugin, missing = block.marker[1:]
    zoo_cli.paths.append(str(plugin_dist(plugin, f"import {missing}\n")))
    result = zoo_cli("list")
    assert result.returncode == 0, result.stderr
    for line in block.text.splitlines():
        assert line in result.stderr.splitlines(), f"{block.where}: {line!r} is not what zoo prints:\n{result.stderr}"


# -- console output ------------------------------------------------------------------------------


def shown_commands(block: Block) -> list[tuple[list[str], list[str]]]:
    """(zoo arguments, the output lines shown after them) of each ``$ zoo`` line that has output."""
    out: list[tuple[list[str], list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            out.append((zoo_args(shlex.split(line[2:])) or [], []))
        elif out:
            out[-1][1].append(line.rstrip())
    return [(args, shown) for args, shown in out if shown]


OUTPUTS = [
    pytest.param(block, args, shown, id=f"{block.where}: zoo {' '.join(args)}", marks=mark)
    for block in marked("output")
    for args, shown in shown_commands(block)
    for mark in [[pytest.mark.slow] if args and args[0] in BUILDS_A_MODEL else []]
]


@pytest.mark.parametrize("block, args, shown", OUTPUTS)
def test_console_output_is_what_zoo_prints(block: Block, args: list[str], shown: list[str], zoo_fork):
    assert args, f"{block.where}: a console block marked 'output' shows only zoo commands"
    write_files(block.doc, zoo_fork.cwd)
    result = zoo_fork(*args, env={"ZOO_LOAD_PLUGINS": ""})  # built-ins only: what a fresh install shows
    printed = [line.rstrip() for line in (result.stderr + result.stdout).splitlines()]
    assert printed == shown, f"{block.where}: zoo {' '.join(args)} printed:\n" + "\n".join(printed)


# -- notebooks: python blocks run in order, as the cells of one session --------------------------

NOTEBOOK_DOCS = sorted({b.doc for b in marked("notebook")})
RUN_CELLS = """\
import json, sys
namespace = {"__name__": "__main__"}
for where, source in json.load(open(sys.argv[1])):
    exec(compile(source, where, "exec"), namespace)
"""


@pytest.mark.slow
@pytest.mark.parametrize("doc", NOTEBOOK_DOCS, ids=doc_id)
def test_notebook_cells_run_in_order(doc: Path, tmp_path: Path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    write_files(doc, workspace)
    # each cell padded to its line in the document, which a traceback then names
    cells = [(doc_id(doc), "\n" * b.line + b.text) for b in marked("notebook") if b.doc == doc]
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_") or k.startswith("ZOO_TESTS_")}
    env["ZOO_DATA"] = str(tmp_path / "zoo-data")
    result = subprocess.run(
        [sys.executable, "-c", RUN_CELLS, str(tmp_path / "cells.json")],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, f"{doc_id(doc)}: a notebook cell failed:\n{result.stdout}\n{result.stderr}"


# -- the plugin guide, end to end ----------------------------------------------------------------


def layered_venv(path: Path) -> Path:
    """A virtual environment that also sees the test interpreter's packages (the zoo, torch, pip,
    setuptools) and installs into its own site-packages; returns its python."""
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(path)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parents = "; ".join(f"site.addsitedir({p!r})" for p in site.getsitepackages())
    (Path(purelib) / "_zoo_tests_parent.pth").write_text(f"import site; {parents}\n")
    return python


RUN_DOCS = sorted({b.doc for b in marked("run")})
LIST_KINDS = ("models", "optimizers", "datasets", "schedulers", "augmentations", "recipes")


def check_what_it_says(doc: Path, args: list[str], comment: list[str], stdout: str, report: str) -> None:
    """What a ``run`` block promises beyond exit 0: ``zoo plugins  # ROW ...`` prints a row that
    starts with ROW; ``zoo list PATTERN`` lists every name the document's files register that
    matches; ``zoo run`` trains with the plugin loaded: its ``on_epoch_end`` printed the last epoch."""
    if args[0] == "plugins" and comment:
        expected = [word.rstrip(",") for word in comment if word != "..."]
        rows = [[word.rstrip(",") for word in row.split()] for row in stdout.splitlines()]
        assert any(row[: len(expected)] == expected for row in rows), report
    elif args[0] == "list":
        patterns = [a for a in args[1:] if not a.startswith("-") and a not in LIST_KINDS]
        wanted = {n for n in registered_names(doc) if fnmatch.fnmatchcase(n, patterns[-1] if patterns else "*")}
        assert wanted, f"{report}\nthe document's files register nothing that matches"
        for name in wanted:
            assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", stdout, re.MULTILINE), f"{report}\n{name} not listed"
    elif args[0] == "run" and "--epochs" in args:
        hooks = "".join(b.text for b in BLOCKS if b.doc == doc and b.verb == "file")
        printed = re.search(r'print\(f"([^{"]*)\{epoch\}', hooks)  # the example's on_epoch_end
        if printed:
            assert f"{printed.group(1)}{args[args.index('--epochs') + 1]}" in stdout, report


@pytest.mark.slow
@pytest.mark.parametrize("doc", RUN_DOCS, ids=doc_id)
def test_run_blocks_work_from_a_fresh_workspace(doc: Path, tmp_path: Path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    write_files(doc, workspace)
    python = layered_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_") or k.startswith("ZOO_TESTS_")}
    env.update(
        ZOO_DATA=str(tmp_path / "zoo-data"),
        # zoo install runs pip: offline, with what the test's environment already holds
        PIP_NO_BUILD_ISOLATION="0",  # pip's spelling of --no-build-isolation
        PIP_NO_DEPS="1",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    for block in marked("run"):
        if block.doc != doc:
            continue
        for line in block.text.replace("\\\n", " ").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            args = zoo_args(shlex.split(line, comments=True))
            assert args, f"{block.where}: {line!r}: a 'run' block holds zoo commands only"
            result = subprocess.run(
                [str(python), "-m", "zoo", *args],
                cwd=workspace,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
            report = f"{block.where}: {line.strip()!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            assert result.returncode == 0, report
            assert "Traceback" not in result.stderr, report
            check_what_it_says(doc, args, line.partition("#")[2].split(), result.stdout, report)

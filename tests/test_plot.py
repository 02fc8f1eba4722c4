"""``zoo plot``: a real PNG of the right size from real-looking run directories."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import assert_user_error
from runfiles import write_run
from zoo.errors import UsageError

pytest.importorskip("matplotlib", reason="zoo plot needs the plot extra: pip install -e '.[plot]'")

from PIL import Image  # noqa: E402  (after the skip: only meaningful with matplotlib)

from zoo.plot import figure_size, plot_runs  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TAB10_BLUE, TAB10_ORANGE = (31, 119, 180), (255, 127, 14)  # the first two runs' colours


def _pixels_near(image: Image.Image, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    return sum(
        count
        for count, pixel in image.convert("RGB").getcolors(maxcolors=1 << 20)
        if all(abs(a - b) <= tolerance for a, b in zip(pixel, rgb))
    )


def test_plot_two_runs_writes_a_png_of_the_expected_size(zoo_cli):
    runs = zoo_cli.cwd / "runs"
    write_run(runs, "tudui-sgd-20261125-210000", epochs=10)
    write_run(runs, "tudui-adam-20261125-220000", optimizer="adam", epochs=10, done=6, speed=0.6)
    result = zoo_cli("plot", "runs/tudui-sgd-20261125-210000", "runs/tudui-adam-20261125-220000", "-o", "both.png")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "wrote both.png"
    path = zoo_cli.cwd / "both.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == figure_size(2) == (1300, 530)
        # both runs are drawn, each in its own colour
        assert _pixels_near(image, TAB10_BLUE) > 500 and _pixels_near(image, TAB10_ORANGE) > 500


def test_default_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one = write_run(tmp_path / "runs", "one")
    write_run(tmp_path / "runs", "two")
    assert plot_runs(["runs/one"]) == one.relative_to(tmp_path) / "curves.png"  # beside its run
    assert (one / "curves.png").read_bytes()[:8] == PNG_SIGNATURE
    assert plot_runs(["runs/one", "runs/two"]).resolve() == tmp_path / "runs-curves.png"
    with Image.open(tmp_path / "runs-curves.png") as image:
        assert image.size == figure_size(2)


def test_a_run_without_metrics_is_a_usage_error(zoo_cli):
    empty = write_run(zoo_cli.cwd / "runs", "empty", done=0)
    (empty / "metrics.jsonl").unlink()
    write_run(zoo_cli.cwd / "runs", "fine")
    assert_user_error(zoo_cli("plot", "runs/fine", "runs/empty"), 2, "run 'runs/empty'", "no metrics.jsonl")
    assert_user_error(zoo_cli("plot", "runs/nosuch"), 2, "'runs/nosuch' is not a run directory")
    assert_user_error(zoo_cli("plot", "runs/fine", "-o", "curves.jpg"), 2, "must end in .png")


def test_gaps_one_epoch_and_resumed_lines(tmp_path):
    diverged = write_run(tmp_path, "diverged", epochs=4)
    lines = (diverged / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) | {"train_loss": float("nan"), "val_loss": float("inf")}
    lines[-1] = json.dumps(last)  # json writes NaN/Infinity, as the runner's json.dumps would
    lines.insert(2, lines[1])  # a resumed run may write an epoch twice
    (diverged / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    one = write_run(tmp_path, "one", epochs=1)
    out = plot_runs([diverged, one], tmp_path / "out" / "curves.png")
    with Image.open(out) as image:
        assert image.size == figure_size(2)
    with pytest.raises(UsageError, match="has nothing to plot: metrics.jsonl has no epoch yet"):
        plot_runs([write_run(tmp_path, "fresh", done=0)])


def test_missing_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(UsageError, match=r"zoo plot needs matplotlib: pip install 'tudui-zoo\[plot\]'"):
        plot_runs([write_run(tmp_path, "one")])

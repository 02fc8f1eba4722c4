"""zoo.predict: the seed's section 32 on image files of every common kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datafiles
from zoo.checkpoint import load_checkpoint
from zoo.errors import UsageError
from zoo.predict import load_image, predict
from zoo.registry import get_registry, model_from_checkpoint
from zoo.runner import RunConfig, run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "run"
    run(
        RunConfig(
            "tudui",
            "adam",
            data="fake",
            epochs=2,
            batch_size=16,
            limit_train=64,
            limit_val=16,
            out=str(out),
            quiet=True,
            device="cpu",
        )
    )
    return out / "best.pt"


def test_every_kind_of_image_is_classified_and_a_non_image_is_an_error_line(tmp_path, checkpoint):
    images = [
        datafiles.write_image(tmp_path / "rgba.png", "RGBA"),  # 4 channels: the seed's convert('RGB') case
        datafiles.write_image(tmp_path / "gray.png", "L", colour=1),
        datafiles.write_image(tmp_path / "palette.png", "P", colour=2),
        datafiles.write_image(tmp_path / "photo.jpg", "RGB", size=(64, 64), colour=3),
        datafiles.write_image(tmp_path / "gray.jpeg", "L", size=(20, 30)),
        datafiles.write_image(tmp_path / "rgb.bmp", "RGB"),
    ]
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image at all")
    missing = tmp_path / "missing.png"
    classes = load_checkpoint(checkpoint)["spec"]["classes"]

    results, errors = predict(checkpoint, [images[0], not_image, *images[1:], missing], device="cpu", top=3)

    assert [r["image"] for r in results] == [str(p) for p in images]
    for r in results:
        assert set(r) == {"image", "label", "index", "probability", "top"}
        assert r["label"] == classes[r["index"]] and 0 <= r["probability"] <= 1
        assert len(r["top"]) == 3 and r["top"][0] == {"label": r["label"], "probability": r["probability"]}
        probabilities = [t["probability"] for t in r["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    assert len(errors) == 2
    assert errors[0].startswith(f"{not_image}: not a readable image")
    assert errors[1] == f"{missing}: no such file"


def test_a_palette_image_with_transparency_and_a_truncated_png(tmp_path, checkpoint):
    palette = Image.new("P", (10, 10))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "transparent.png", transparency=0)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    results, errors = predict(checkpoint, [tmp_path / "transparent.png", tmp_path / "truncated.png"], device="cpu")
    assert len(results) == 1 and len(errors) == 1 and "truncated.png: not a readable image" in errors[0]


def test_a_dataset_image_saved_as_png_gets_the_models_own_probabilities(tmp_path, checkpoint):
    # The preprocessing must be the training's: the same image through predict and through the
    # dataset's normalisation gives the same output.
    from zoo_datasets.loaders import load_fake

    val = load_fake(train=False, root="", download=False)
    image = val.images[3]
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "sample.png")
    results, errors = predict(checkpoint, [tmp_path / "sample.png"], device="cpu", top=10)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, registry=get_registry()).eval()
    with torch.no_grad():
        expected = model(val[3][0].unsqueeze(0)).softmax(1)[0]
    got = {t["label"]: t["probability"] for t in results[0]["top"]}
    for i, name in enumerate(ckpt["spec"]["classes"]):
        assert got[name] == pytest.approx(float(expected[i]), abs=1e-5)
    best = int(expected.argmax())
    assert (results[0]["index"], results[0]["label"]) == (best, ckpt["spec"]["classes"][best])
    assert results[0]["probability"] == pytest.approx(float(expected[best]), abs=1e-5)
    assert [t["probability"] for t in results[0]["top"]] == sorted(got.values(), reverse=True)
    assert not errors


def test_load_image_shapes_and_normalises(tmp_path):
    path = datafiles.write_image(tmp_path / "x.png", "RGBA", size=(50, 20))
    x = load_image(path, (3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and -1 <= float(x.min()) and float(x.max()) <= 1
    gray = load_image(path, (1, 8, 8), mean=(0.0,), std=(1.0,))
    assert gray.shape == (1, 8, 8)
    white = tmp_path / "white.png"
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).save(white)
    assert torch.allclose(load_image(white, (3, 4, 4), mean=(0.5,) * 3, std=(0.25,) * 3), torch.full((3, 4, 4), 2.0))


def test_bad_arguments(checkpoint, tmp_path):
    with pytest.raises(UsageError, match="--top"):
        predict(checkpoint, [], top=0)
    with pytest.raises(UsageError, match="img.png is not a torch file: it looks like a PNG image"):
        predict(datafiles.write_image(tmp_path / "img.png"), [])
    assert predict(checkpoint, [], device="cpu") == ([], [])
    results, _ = predict(checkpoint, [datafiles.write_image(tmp_path / "a.png")], top=50, device="cpu")
    assert len(results[0]["top"]) == 10  # no more than there are classes


def _text_lines(rows: list[dict]) -> list[str]:
    """What text mode prints for these --json rows: the best class as before, then the runners-up."""
    lines = []
    for r in rows:
        lines.append(f"{r['image']}: {r['label']} ({r['probability']:.3f})")
        lines += [f"  {t['label']} ({t['probability']:.3f})" for t in r["top"][1:]]
    return lines


def test_top_k_is_printed_in_text_mode_too(zoo_fork, checkpoint):
    import json
    import shutil

    shutil.copy(checkpoint, zoo_fork.cwd / "best.pt")
    images = [
        str(datafiles.write_image(zoo_fork.cwd / "a.png", "RGBA").name),
        str(datafiles.write_image(zoo_fork.cwd / "b.jpg", "RGB", colour=3).name),
    ]
    rows = json.loads(zoo_fork("predict", "best.pt", *images, "--top", "3", "--device", "cpu", "--json").stdout)
    result = zoo_fork("predict", "best.pt", *images, "--top", "3", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == _text_lines(rows)
    assert len(result.stdout.splitlines()) == 6 and result.stdout.splitlines()[1].startswith("  ")
    one = zoo_fork("predict", "best.pt", *images, "--device", "cpu")  # K=1: one line per image, as before
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines() == [f"{r['image']}: {r['label']} ({r['probability']:.3f})" for r in rows]


def test_json_with_no_readable_image_prints_only_the_errors(zoo_fork, checkpoint):
    import shutil

    from conftest import assert_user_error

    shutil.copy(checkpoint, zoo_fork.cwd / "best.pt")
    result = zoo_fork("predict", "best.pt", "missing.png", "--device", "cpu", "--json")
    assert_user_error(result, 2, "missing.png: no such file")
    assert result.stdout == ""


def test_a_huge_image_is_one_warning_line_and_a_bomb_is_refused(tmp_path, checkpoint, monkeypatch, capsys):
    import warnings

    from zoo.cli import main

    # PIL warns above MAX_IMAGE_PIXELS and refuses above twice that: a small limit stands in for
    # a 12,000 x 12,000 photo without decoding 144 million pixels here.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    big = datafiles.write_image(tmp_path / "big.png", size=(40, 40))  # 1,600 pixels: warned
    bomb = datafiles.write_image(tmp_path / "bomb.png", size=(50, 50))  # 2,500 pixels: refused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["predict", str(checkpoint), str(big), str(bomb), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert "DecompressionBomb" not in err and "site-packages" not in err and "Traceback" not in err
    assert out.startswith(f"{big}: ") and len(out.splitlines()) == 1
    warned = [line for line in err.splitlines() if line.startswith("zoo: warning:")]
    assert len(warned) == 1 and str(big) in warned[0] and "40x40" in warned[0] and "1,000" in warned[0]
    errors = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert (
        len(errors) == 1 and f"{bomb}: too large" in errors[0] and "2,500 pixels" in errors[0] and "2,000" in errors[0]
    )
    assert len(err.splitlines()) == 2

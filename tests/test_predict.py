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

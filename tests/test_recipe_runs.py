"""Recipes at run time (issue 13): gradient accumulation, clipping, an EMA of the weights, early
stopping, and a recipe run stopped mid-epoch that resumes bitwise."""

from __future__ import annotations

import json
import signal
from dataclasses import replace

import pytest
import torch

from zoo.config import RunConfig
from zoo.errors import Interrupted, UsageError
from zoo.runner import run, validate
from zoo.testhooks import KILL_WORKER_ENV


def tiny(out, **options) -> RunConfig:
    base = dict(data="fake", limit_train=64, limit_val=32, batch_size=16, epochs=1, out=str(out), quiet=True)
    return RunConfig("tudui", options.pop("optimizer", "sgd"), **{**base, **options})


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_accumulating_two_batches_of_16_is_one_step_of_32(tmp_path):
    accumulated = run(tiny(tmp_path / "a", accumulate=2, lr=0.05))
    whole = run(tiny(tmp_path / "w", batch_size=32, lr=0.05))
    a, w = weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "w" / "last.pt")
    assert all(torch.allclose(a[k], w[k], atol=1e-6) for k in a), "not the update of the 32-sample batch"
    plain = weights(run(tiny(tmp_path / "p", lr=0.05))["last_checkpoint"])
    assert any(not torch.allclose(plain[k], w[k], atol=1e-4) for k in plain)  # four steps of 16 are not
    assert accumulated["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5)


def test_accumulation_refuses_lbfgs_before_writing(tmp_path):
    with pytest.raises(UsageError, match="L-BFGS .* cannot accumulate"):
        run(tiny(tmp_path / "r", optimizer="lbfgs", accumulate=2))
    assert not (tmp_path / "r").exists()


def test_gradient_clipping_bounds_each_update(tmp_path):
    start = run(tiny(tmp_path / "s", lr=1e-12))  # effectively the initial weights
    clipped = run(tiny(tmp_path / "c", lr=0.5, clip_grad_norm=1e-4))
    before, after = weights(start["last_checkpoint"]), weights(clipped["last_checkpoint"])
    moved = torch.cat([(after[k] - before[k]).flatten() for k in before if k.endswith(("weight", "bias"))])
    assert 0 < moved.norm() <= 4 * 0.5 * 1e-4 * 1.0001  # 4 steps of lr x at most the clipped norm


def test_ema_is_validated_saved_and_used_by_validate(tmp_path):
    summary = run(tiny(tmp_path / "e", epochs=2, lr=0.05, ema=0.5))
    ckpt = torch.load(tmp_path / "e" / "last.pt", weights_only=True)
    assert int(ckpt["ema"]["n_averaged"]) == 8  # one update per optimizer step, 4 a epoch
    ema, raw = ckpt["ema"]["model"], ckpt["model"]
    assert set(ema) == set(raw) and any(not torch.equal(ema[k], raw[k]) for k in raw)
    # validate, predict and export rebuild the averaged model: its accuracy is the epoch line's
    result = validate(tmp_path / "e" / "last.pt", limit_val=32)
    assert result["val_accuracy"] == summary["val_accuracy"]
    assert result["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-6)


def test_patience_stops_a_run_that_no_longer_improves(tmp_path):
    summary = run(tiny(tmp_path / "p", epochs=6, lr=1e-12, patience=2))  # nothing learns: no improvement
    assert summary["stopped_early"] is True and summary["epochs"] == 3
    status = json.loads((tmp_path / "p" / "status.json").read_text())
    assert status["status"] == "finished"
    assert "stopped_early" not in run(tiny(tmp_path / "q", epochs=1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ema": 1.0}, "--ema must be a number between 0 and 1"),
        ({"ema": 0.0}, "--ema must be a number between 0 and 1"),
        ({"accumulate": 0}, "--accumulate must be an integer of at least 1"),
        ({"patience": 0}, "--patience must be an integer of at least 1"),
        ({"label_smoothing": 1.0}, "--label-smoothing must be a number in"),
        ({"clip_grad_norm": -1.0}, "--clip-grad-norm must be a positive number"),
        ({"sched_interval": "batch"}, "--sched-interval must be 'epoch' or 'step'"),
        ({"sched": "cosin"}, "unknown scheduler 'cosin'; did you mean 'cosine'"),
        ({"augment": ("flipp",)}, "unknown augmentation 'flipp'; did you mean 'flip'"),
        ({"sched": "cosine", "sched_opts": {"bogus": "1"}}, "bogus"),
        ({"augment": ("crop:padding",)}, "--augment 'crop:padding'"),
        ({"sched": "lambdalr"}, "lambdalr"),
    ],
)
def test_bad_recipe_options_are_refused_before_writing(tmp_path, options, message):
    with pytest.raises(UsageError, match=message):
        run(tiny(tmp_path / "r", **options))
    assert not (tmp_path / "r").exists()


RECIPE = dict(sched="warmup-cosine", augment=("flip", "crop:padding=2"), ema=0.9, label_smoothing=0.1,
              accumulate=2, optimizer="sgd-momentum", epochs=2, lr=0.05)  # fmt: skip


def test_a_recipe_run_stopped_mid_epoch_resumes_bitwise(tmp_path, monkeypatch):
    straight = run(tiny(tmp_path / "straight", **RECIPE))
    monkeypatch.setenv(KILL_WORKER_ENV, "0:6:SIGINT")  # epoch 2, after its first accumulated step
    with pytest.raises(Interrupted) as stopped:
        run(tiny(tmp_path / "stopped", **RECIPE))
    assert stopped.value.signum == signal.SIGINT
    partial = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["partial"]
    assert (partial["epoch"], partial["step"]) == (2, 2)
    monkeypatch.delenv(KILL_WORKER_ENV)
    resumed = run(replace(tiny(tmp_path / "stopped", **RECIPE), resume=True))
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)
    for key in ("model",):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert all(torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]) for k in a["ema"]["model"])
    assert a["scheduler"] == b["scheduler"]
    assert str(a["optimizer"]) == str(b["optimizer"])
    lrs = [[json.loads(line)["lr"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
           for d in ("straight", "stopped")]  # fmt: skip
    assert lrs[0] == lrs[1]
    assert resumed["val_accuracy"] == straight["val_accuracy"]


def test_resuming_with_another_scheduler_or_augmentation_is_refused(tmp_path):
    run(tiny(tmp_path / "r", sched="cosine", augment=("flip",), epochs=1))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "r").iterdir())
    for change, flag in (({"sched": "onecycle"}, "--sched"), ({"augment": ("crop",)}, "--augment")):
        config = replace(tiny(tmp_path / "r", sched="cosine", augment=("flip",), epochs=2), resume=True, **change)
        with pytest.raises(UsageError, match=f"trained with {flag} "):
            run(config)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "r").iterdir()) == before


def test_a_scheduled_run_resumes_only_with_the_epochs_its_schedule_was_planned_for(tmp_path):
    run(tiny(tmp_path / "r", sched="onecycle", epochs=1, lr=0.05))
    with pytest.raises(UsageError, match="schedule 'onecycle' was planned for 1 epochs; resume with --epochs 1"):
        run(replace(tiny(tmp_path / "r", sched="onecycle", epochs=2, lr=0.05), resume=True))
    plain = run(tiny(tmp_path / "p", epochs=1))  # without a schedule, extending a run is the point of --resume
    assert run(replace(tiny(tmp_path / "p", epochs=2), resume=True))["epochs"] == 2 and plain["epochs"] == 1

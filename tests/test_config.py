"""zoo.config: RunConfig's checks, without a registry or torch."""

from __future__ import annotations

import pytest

from zoo.config import RunConfig, check_config, default_data_dir
from zoo.errors import UsageError


def test_defaults_pass():
    check_config(RunConfig("tudui", "sgd"))


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("epochs", 0, "--epochs must be an integer of at least 1, got 0"),
        ("batch_size", -3, "--batch-size must be an integer of at least 1, got -3"),
        ("workers", -1, "--workers must be an integer of at least 0"),
        ("seed", -1, "--seed must be an integer of at least 0"),
        ("nproc", 0, "--nproc must be an integer of at least 1"),
        ("limit_train", 0, "--limit-train must be an integer of at least 1"),
        ("limit_val", 0, "--limit-val must be an integer of at least 1"),
        ("epochs", True, "--epochs must be an integer"),
        ("epochs", 2.0, "--epochs must be an integer"),
        ("lr", 0.0, "--lr must be a positive number, got 0.0"),
        ("lr", -0.1, "--lr must be a positive number"),
        ("lr", float("nan"), "--lr must be a positive number"),
        ("lr", float("inf"), "--lr must be a positive number"),
        ("lr", "0.1", "--lr must be a positive number"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(field, value, flag):
    with pytest.raises(UsageError, match="^" + flag.replace("-", r"\-").replace(".", r"\.")):
        check_config(RunConfig("tudui", "sgd", **{field: value}))


def test_limits_and_lr_accept_good_values():
    check_config(RunConfig("tudui", "sgd", limit_train=1, limit_val=5, lr=1e-4, workers=0, seed=0))


def test_default_data_dir_follows_zoo_data(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    assert default_data_dir() == str(tmp_path)
    monkeypatch.delenv("ZOO_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == str(tmp_path / "home" / ".cache" / "zoo" / "data")

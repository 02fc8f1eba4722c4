"""Optimizer hyper-parameters are read from the signature and converted to its types."""

from __future__ import annotations

import pytest

from zoo.errors import UsageError
from zoo.hparams import optimizer_params, parse_hparams, parse_opt_pairs


@pytest.fixture
def parse(builtin_registry):
    def parse(name, lr=None, **opts):
        entry = builtin_registry.optimizer(name)
        factory = builtin_registry.optimizer_factory(name)
        return parse_hparams(name, factory, entry.defaults, lr=lr, opts={k: str(v) for k, v in opts.items()})

    return parse


def test_signature_is_read_with_defaults(builtin_registry):
    params, var_kw = optimizer_params(builtin_registry.optimizer_factory("adagrad"))
    by_name = {p.name: p for p in params}
    assert by_name["lr"].default == 0.01 and by_name["eps"].default == 1e-10
    assert by_name["lr_decay"].kind == "float" and not var_kw


def test_values_are_converted_to_the_signature_types(parse):
    assert parse("sgd") == {"lr": 0.01}
    assert parse("sgd", lr=0.1, momentum="0.9", nesterov="true") == {"lr": 0.1, "momentum": 0.9, "nesterov": True}
    assert parse("adam", betas="0.8,0.95", weight_decay="1e-4")["betas"] == (0.8, 0.95)
    assert parse("lbfgs", history_size="5", max_eval="none") == {"history_size": 5, "max_eval": None}


@pytest.mark.parametrize(
    "name, opts, message",
    [
        (
            "sgd",
            {"momentun": "0.9"},
            "optimizer 'sgd' has no parameter 'momentun'; did you mean 'momentum'? valid: lr, momentum",
        ),
        ("sgd", {"momentum": "fast"}, "momentum must be a number, got 'fast'"),
        ("sgd", {"nesterov": "maybe"}, "nesterov must be a boolean"),
        ("lbfgs", {"history_size": "2.5"}, "history_size must be an integer, got '2.5'"),
        ("adam", {"betas": "0.9"}, "betas must be 2 comma-separated numbers"),
        ("sgd", {"lr": "0"}, "lr must be > 0"),
    ],
)
def test_bad_values_name_what_was_expected(parse, name, opts, message):
    with pytest.raises(UsageError) as caught:
        parse(name, **opts)
    assert message in str(caught.value)


def test_opt_pairs():
    assert parse_opt_pairs(["momentum=0.9", "weight-decay = 1e-4"]) == {"momentum": "0.9", "weight_decay": "1e-4"}
    with pytest.raises(UsageError, match="--opt expects KEY=VALUE"):
        parse_opt_pairs(["momentum"])

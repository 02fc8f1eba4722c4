"""What a run need not import (issue 16): torch._dynamo (zoo/eager.py, and the torch internals it
relies on: if a new torch changes them, these fail loudly, whether the workaround stops applying,
so that torch imports dynamo again, 2 s and 150 MiB a run, or torch no longer needs it), and
scikit-learn for the digits."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest
import torch

from zoo import eager
from zoo.steps import CLOSURE_ONCE


def _fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this one may have imported dynamo); its stdout."""
    got = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-3000:]
    return got.stdout


def test_the_torch_internals_the_workaround_relies_on_are_there():
    assert eager.problems() == [], (
        f"torch {torch.__version__} changed what zoo/eager.py relies on: {eager.problems()}; "
        "update zoo/eager.py (or drop it, if torch no longer imports dynamo for eager optimizers)"
    )
    names = {fn.__name__ for fn, _ in eager.disabled_functions(torch.optim.Optimizer)}
    assert {"add_param_group", "zero_grad", "state_dict", "load_state_dict"} <= names


@pytest.mark.slow
def test_optimizers_built_stepped_and_saved_under_the_workaround_import_no_dynamo_and_match_torch_bitwise():
    out = _fresh("""
        import sys, torch
        from zoo.eager import CACHE, disabled_functions, eager_step, without_dynamo

        def train(apply):
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
            x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
            optim = torch.optim
            optimizers = ((optim.SGD, {"lr": 0.1, "momentum": 0.9}), (optim.Adam, {}), (optim.NAdam, {}))
            for cls, kw in optimizers:
                opt = cls(model.parameters(), **kw)
                assert not apply or eager_step(opt)
                for _ in range(3):
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()
                opt.load_state_dict(opt.state_dict())
            return [p.detach().clone() for p in model.parameters()]

        fns = [fn for fn, _ in disabled_functions(torch.optim.Optimizer)]
        with without_dynamo():
            eager_weights = train(True)
            installed = all(CACHE in vars(fn) for fn in fns)
        print("torch._dynamo" in sys.modules, installed, any(CACHE in vars(fn) for fn in fns))
        # torch's own path imports dynamo (if not, torch no longer needs zoo/eager.py)
        torch_weights = train(False)
        print("torch._dynamo" in sys.modules, all(torch.equal(a, b) for a, b in zip(eager_weights, torch_weights)))
        # once dynamo is in, the workaround hands over to torch's wrappers, with the same results
        with without_dynamo():
            print(all(torch.equal(a, b) for a, b in zip(train(True), torch_weights)))
    """)
    # no dynamo under the workaround, which it installed and then removed; torch's path imports it
    # and trains the same weights; with dynamo in, the workaround hands over, same weights again
    assert out.split() == ["False", "True", "False", "True", "True", "True"], out


@pytest.mark.slow
def test_an_eager_digits_run_with_a_recipe_imports_no_dynamo_nor_scikit_learn():
    out = _fresh("""
        import sys, tempfile
        from zoo.runner import RunConfig, run
        out = tempfile.mkdtemp()
        common = dict(model="tudui", data="digits", limit_train=64, limit_val=32, batch_size=16, quiet=True,
                      device="cpu", augment=("flip",), ema=0.9, clip_grad_norm=1.0)
        run(RunConfig(optimizer="adam", epochs=1, out=out + "/a", sched="cosine", **common))
        run(RunConfig(optimizer="sgd", epochs=1, out=out + "/b", accumulate=2, **common))
        run(RunConfig(optimizer="sgd", epochs=2, out=out + "/b", accumulate=2, resume=True, **common))
        heavy = ("torch._dynamo", "torch._inductor", "sympy", "sklearn", "scipy", "torchvision")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
    """)
    assert out.split() == ["[]"], out


def test_optimizers_that_skip_the_closure_call_it_once_first_thing():
    """train_step steps CLOSURE_ONCE's optimizers after the closure's work instead of through it:
    the same computation only while their step calls the closure once, under enable_grad, before
    anything else (torch's source, read here)."""
    assert torch.optim.LBFGS not in CLOSURE_ONCE and torch.optim.SGD in CLOSURE_ONCE
    for cls in CLOSURE_ONCE:
        step = inspect.unwrap(cls.step)
        source = textwrap.dedent(inspect.getsource(step))
        body = source.split('"""')[-1] if '"""' in source else source
        lines = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
        # Some check first that no CUDA graph is being captured: state only, no computation.
        lines = [line for line in lines if not (line.startswith("self._") and line.endswith("health_check()"))]
        prologue = ["loss = None", "if closure is not None:", "with torch.enable_grad():", "loss = closure()"]
        assert lines[:4] == prologue, (cls, lines[:4])
        assert body.count("closure") == 2, (cls, "uses its closure elsewhere too")


def test_the_digits_read_without_scikit_learn_are_scikit_learns():
    from sklearn.datasets import load_digits

    from zoo_datasets.loaders import digits_arrays

    images, target = digits_arrays()
    bunch = load_digits()
    assert images.dtype == bunch.images.dtype and target.dtype == bunch.target.dtype
    assert (images == bunch.images).all() and (target == bunch.target).all()


def test_a_step_without_the_closure_trains_bitwise_as_the_closure_does():
    from zoo.steps import train_step

    class ThroughTheClosure(torch.optim.SGD):  # not an exact torch type: train_step passes a closure
        pass

    def train(cls: type) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        optimizer = cls(model.parameters(), lr=0.1, momentum=0.9)
        losses = []
        criterion = torch.nn.CrossEntropyLoss()
        for _ in range(4):
            inputs, targets = torch.randn(8, 6), torch.randint(0, 3, (8,))
            losses.append(train_step(model, optimizer, criterion, inputs, targets, clip_grad_norm=0.5))
        return [*losses, *(p.detach() for p in model.parameters())]

    assert torch.optim.SGD in CLOSURE_ONCE and ThroughTheClosure not in CLOSURE_ONCE
    assert all(torch.equal(a, b) for a, b in zip(train(torch.optim.SGD), train(ThroughTheClosure), strict=True))

"""The CUDA path end to end: what a first run on a GPU must get right, one check at a time.

    python scripts/cuda_e2e.py [--allow-cpu] [--only NAME,...] [--list] [--out DIR] [--json FILE]

Each check is a small function that trains short runs through the public API
(``zoo.runner.run`` / ``RunConfig`` / ``validate``, ``zoo.predict.predict``,
``zoo.registry.model_from_checkpoint``), or runs the ``zoo`` command in a process of its own where
a real process matters (a signal), and asserts what the results must be. Every check is reported
as pass, FAIL (with its error) or skip (with the reason); a failed check does not stop the others.
At the end: a table, and the same as JSON in ``--json`` (default ``bench/results/cuda_e2e.json``).
Exit status 1 when a check failed, else 0.

Without a GPU the script says so and exits 0. ``--allow-cpu`` runs every check on the CPU, to test
the script itself (``tests/test_cuda_e2e_script.py``): only ``cuda_1`` (two GPUs) is skipped, and
``resume_adam_fused`` where this torch refuses fused kernels on the CPU. On the CPU the runner is
bitwise reproducible, so a resumed run must equal its uninterrupted twin exactly; on a GPU, within
a small share of how far the weights moved (see ``E2E.agree``). On a GPU the twins train with
``--deterministic`` (no TF32, no cuDNN autotuning), except ``train_amp_resume``'s, which keep the
defaults and bf16 autocast. ``--list`` names the checks and says what each asserts.

Throughput is not measured here (these runs are a few steps long and count start-up and
compilation): ``python bench/run.py --only gpu`` measures it.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # datafiles: the tests' image writers

from zoo import hookimpl  # noqa: E402

# How close a GPU run must come to its twin: a share of how far the weights moved between the
# runs' common starting point and the end. Losing optimizer state or replaying the wrong batches
# moves a run by a large share of that; TF32 and autotuned kernels by a small one.
GPU_SHARE = 0.05
AMP_SHARE = 0.25  # bf16 autocast with cuDNN's autotuner: each step's rounding differs more
COMPILE_SHARE = 0.10  # inductor's fused kernels round differently from eager's
PROBABILITY_TOLERANCE = 0.01  # GPU (TF32) against CPU float32, per class


class Skip(Exception):
    """The check cannot run here; the message says why."""


@dataclass(frozen=True)
class Check:
    name: str
    what: str
    fn: Callable[[E2E], dict[str, Any]]


CHECKS: dict[str, Check] = {}


def check(name: str, what: str) -> Callable[[Callable[[E2E], dict[str, Any]]], Callable[[E2E], dict[str, Any]]]:
    """Register a check: ``fn(e2e)`` returns what it found (``note``: one line for the table),
    raises ``Skip`` when it cannot run here, or anything else when it fails."""

    def register(fn: Callable[[E2E], dict[str, Any]]) -> Callable[[E2E], dict[str, Any]]:
        CHECKS[name] = Check(name, what, fn)
        return fn

    return register


# -- instruments -------------------------------------------------------------------------------


class Probe:
    """The script's plugin, registered with the zoo's plugin host like any other: it hands the
    next run's ``on_run_start`` and ``on_epoch_end`` events to the functions a check sets."""

    def __init__(self) -> None:
        self.on_start: Callable[[Any], None] | None = None
        self.on_epoch: Callable[[Any, int], None] | None = None

    @hookimpl
    def on_run_start(self, run: Any) -> None:
        if self.on_start is not None:
            self.on_start(run)

    @hookimpl
    def on_epoch_end(self, run: Any, epoch: int, metrics: dict) -> None:
        if self.on_epoch is not None:
            self.on_epoch(run, epoch)


class HostToDevice(TorchFunctionMode):
    """Counts the copies of CPU tensors to a GPU (``Tensor.to``) while active, and how many came
    from pinned memory. Parameters are left out: only data moves per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0
        self.pinned = 0
        self.non_blocking = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        source = args[0] if args else None
        if (
            getattr(func, "__name__", None) == "to"
            and isinstance(source, torch.Tensor)
            and not isinstance(source, torch.nn.Parameter)
            and source.device.type == "cpu"
            and isinstance(out, torch.Tensor)
            and out.device.type == "cuda"
        ):
            self.copies += 1
            self.pinned += bool(source.is_pinned())
            self.non_blocking += bool(kwargs.get("non_blocking"))
        return out


def weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights, loaded as any user would (``weights_only``, CPU tensors)."""
    return torch.load(path, weights_only=True, map_location="cpu")["model"]


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        raise AssertionError(f"the checkpoints hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# -- the context shared by the checks ------------------------------------------------------------


class E2E:
    """The device, the working directory, run helpers and results shared between checks."""

    def __init__(self, device: torch.device, work: Path, probe: Probe):
        self.device = device
        self.cuda = device.type == "cuda"
        self.work = work
        self.probe = probe
        # bf16 autocast only where the card computes it natively (Ampere, capability 8.0, on).
        self.amp = self.cuda and torch.cuda.get_device_capability(device) >= (8, 0)
        self._once: dict[str, Any] = {}

    @property
    def where(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def config(self, name: str, **kw: Any) -> Any:
        """Tudui with SGD on the fake set: 4 steps of 32 an epoch, 64 validation images. On a GPU,
        ``--deterministic`` unless ``amp`` is asked for, so that twins differ only where they
        should; ``kw`` overrides any field."""
        from zoo.runner import RunConfig

        fields: dict[str, Any] = dict(
            model="tudui",
            optimizer="sgd",
            data="fake",
            epochs=2,
            batch_size=32,
            limit_train=128,
            limit_val=64,
            out=str(self.run_dir(name)),
            device=self.where,
            quiet=True,
        )
        fields.update(kw)
        if self.cuda and not fields.get("amp"):
            fields.setdefault("deterministic", True)
        return RunConfig(**fields)

    def run(self, name: str, **kw: Any) -> dict[str, Any]:
        from zoo.runner import run

        return run(self.config(name, **kw))

    def run_dir(self, name: str) -> Path:
        return self.work / "runs" / name

    def last(self, name: str) -> Path:
        return self.run_dir(name) / "last.pt"

    def keep(self, name: str, label: str) -> Path:
        """A copy of ``name``'s last.pt as it is now (a run's resume point, before it resumes)."""
        kept = self.work / "kept" / f"{name}-{label}.pt"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.last(name), kept)
        return kept

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()``, computed once for every check that needs it (its error too)."""
        if key not in self._once:
            try:
                self._once[key] = (make(), None)
            except Exception as exc:
                self._once[key] = (None, exc)
        value, error = self._once[key]
        if error is not None:
            raise AssertionError(f"needs {key}, which failed: {type(error).__name__}: {error}") from error
        return value

    @contextmanager
    def watch(
        self, on_start: Callable[[Any], None] | None = None, on_epoch: Callable[[Any, int], None] | None = None
    ) -> Iterator[None]:
        """Hand the runs inside to ``on_start(run)`` and ``on_epoch(run, epoch)``."""
        self.probe.on_start, self.probe.on_epoch = on_start, on_epoch
        try:
            yield
        finally:
            self.probe.on_start = self.probe.on_epoch = None

    def agree(self, got: Path, want: Path, start: dict[str, torch.Tensor], *, share: float) -> dict[str, Any]:
        """Assert that checkpoint ``got`` holds the weights of ``want``: bitwise on the CPU (the
        runner promises it), within ``share`` of how far ``want`` moved from ``start`` on a GPU."""
        want_w = weights(want)
        diff = largest_difference(weights(got), want_w)
        moved = largest_difference(want_w, start)
        assert moved > 0, "training did not change the weights"
        if self.cuda:
            assert diff <= share * moved, (
                f"weights differ by {diff:.3g}, more than {share:g} of the {moved:.3g} they moved"
            )
        else:
            assert diff == 0, f"weights differ by {diff:.3g}; on the CPU they must be bitwise equal"
        return {"max_weight_difference": diff, "weights_moved": moved, "bitwise_equal": diff == 0}


def agreement(detail: dict[str, Any]) -> str:
    if detail["bitwise_equal"]:
        return "bitwise equal"
    share = detail["max_weight_difference"] / detail["weights_moved"]
    return f"differ by {detail['max_weight_difference']:.2g} ({share:.1%} of the move)"


def close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


# -- the checks -------------------------------------------------------------------------------


def amp_runs(e2e: E2E) -> dict[str, Any]:
    """2 epochs, resumed to 3, and a straight 3: bf16 autocast on a GPU, default numerics."""
    e2e.run("amp", epochs=2, amp=e2e.amp)
    start = weights(e2e.keep("amp", "epoch2"))
    resumed = e2e.run("amp", epochs=3, amp=e2e.amp, resume=True)
    straight = e2e.run("amp-straight", epochs=3, amp=e2e.amp)
    return {"resumed": resumed, "straight": straight, "start": start}


@check("train_amp_resume", "tudui sgd, bf16 autocast on a GPU: 2 epochs --resume'd to 3 equal a straight 3")
def train_amp_resume(e2e: E2E) -> dict[str, Any]:
    runs = e2e.once("amp runs", lambda: amp_runs(e2e))
    resumed, straight = runs["resumed"], runs["straight"]
    assert resumed["epochs"] == straight["epochs"] == 3
    detail = e2e.agree(e2e.last("amp"), e2e.last("amp-straight"), runs["start"], share=AMP_SHARE)
    assert abs(resumed["val_accuracy"] - straight["val_accuracy"]) <= 0.05, (resumed, straight)
    return {
        **detail,
        "amp": e2e.amp,
        "val_accuracy": resumed["val_accuracy"],
        "straight_val_accuracy": straight["val_accuracy"],
        "note": f"{'bf16' if e2e.amp else 'float32'}; resumed and straight {agreement(detail)}",
    }


@check("load_on_cpu", "the GPU run's checkpoint holds CPU tensors, rebuilds on the CPU and validates alike there")
def load_on_cpu(e2e: E2E) -> dict[str, Any]:
    from zoo.checkpoint import load_checkpoint
    from zoo.registry import model_from_checkpoint
    from zoo.runner import validate

    e2e.once("amp runs", lambda: amp_runs(e2e))
    path = e2e.last("amp")
    raw = torch.load(path, weights_only=True)  # no map_location: the tensors must be on the CPU already
    assert all(t.device.type == "cpu" for t in raw["model"].values())
    model = model_from_checkpoint(load_checkpoint(path, map_location="cpu"))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    here = validate(path, device=e2e.where, limit_val=64)
    cpu = validate(path, device="cpu", limit_val=64)
    assert close(here["val_loss"], cpu["val_loss"], 1e-2), (here, cpu)
    assert abs(here["val_accuracy"] - cpu["val_accuracy"]) <= 0.04, (here, cpu)  # 2 of 64 near ties
    return {"device": here, "cpu": cpu, "note": f"val loss {here['val_loss']:.4f} here, {cpu['val_loss']:.4f} on CPU"}


def sample_images(e2e: E2E) -> list[Path]:
    import datafiles

    kinds = [("rgba.png", "RGBA"), ("gray.png", "L"), ("palette.png", "P"), ("photo.jpg", "RGB")]
    return [datafiles.write_image(e2e.work / "images" / name, mode, colour=i) for i, (name, mode) in enumerate(kinds)]


@check("predict_vs_cpu", "predict on RGBA/grayscale/palette/JPEG files: every class's probability as on the CPU")
def predict_vs_cpu(e2e: E2E) -> dict[str, Any]:
    from zoo.predict import predict

    e2e.once("amp runs", lambda: amp_runs(e2e))
    images = sample_images(e2e)
    path = e2e.run_dir("amp") / "best.pt"
    here, errors = predict(path, images, device=e2e.where, top=10)
    cpu, cpu_errors = predict(path, images, device="cpu", top=10)
    assert not errors and not cpu_errors and len(here) == len(cpu) == len(images), (errors, cpu_errors)
    # Probabilities, not top-1 labels: on images unlike the training set two classes can be a near
    # tie, and TF32 (GPU) against float32 (CPU) rounding may flip it without anything being wrong.
    worst = 0.0
    for h, c in zip(here, cpu):
        ph = {t["label"]: t["probability"] for t in h["top"]}
        pc = {t["label"]: t["probability"] for t in c["top"]}
        assert ph.keys() == pc.keys(), (h, c)
        worst = max(worst, max(abs(ph[k] - pc[k]) for k in ph))
    assert worst <= PROBABILITY_TOLERANCE, f"a probability differs by {worst:.3g} (tolerance {PROBABILITY_TOLERANCE})"
    flipped = sum(h["label"] != c["label"] for h, c in zip(here, cpu))
    return {
        "max_probability_difference": worst,
        "top1_flipped": flipped,
        "note": f"largest probability difference {worst:.2g}; {flipped} top-1 flips",
    }


def zoo_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The ``zoo`` command as a process of its own, with this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=900,  # a hang is a failure, not a stuck script
    )


@check("sigterm_resume", "a zoo run process SIGTERMed mid-epoch exits 143; --resume then equals a straight run")
def sigterm_resume(e2e: E2E) -> dict[str, Any]:
    out = e2e.run_dir("signal")
    common = ["--device", e2e.where, "--epochs", "2", "--out", str(out), "--quiet"]
    common += ["--deterministic"] if e2e.cuda else []
    # The runner's test hook: SIGTERM to itself after step 6 (epoch 2, step 2 of 4).
    stopped = zoo_cli(
        "run", "tudui", "sgd", "--data", "fake", "--batch-size", "32", "--limit-train", "128", "--limit-val", "64",
        *common, env={"ZOO_TEST_KILL_WORKER": "0:6:SIGTERM"},
    )  # fmt: skip
    assert stopped.returncode == 143, (stopped.returncode, stopped.stderr[-2000:])
    assert "stopped by SIGTERM at epoch 2, step 2/4" in stopped.stderr, stopped.stderr
    assert "Traceback" not in stopped.stderr, stopped.stderr
    partial = torch.load(out / "last.pt", weights_only=True)["partial"]
    assert (partial["epoch"], partial["step"]) == (2, 2), partial
    start = weights(out / "last.pt")
    resumed = zoo_cli("run", "tudui", "sgd", "--resume", "--json", *common)
    assert resumed.returncode == 0, (resumed.returncode, resumed.stderr[-2000:])
    assert json.loads(resumed.stdout)["epochs"] == 2
    e2e.run("signal-straight", epochs=2)
    detail = e2e.agree(out / "last.pt", e2e.last("signal-straight"), start, share=GPU_SHARE)
    return {**detail, "note": f"stopped at epoch 2 step 2, exit 143; resumed and straight {agreement(detail)}"}


def fused_refused() -> str | None:
    """Why this torch refuses fused Adam on the CPU, or None if it takes it."""
    try:
        p = torch.zeros(2, requires_grad=True)
        p.grad = torch.ones(2)
        torch.optim.Adam([p], fused=True).step()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def state_report(run: Any, saved: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What a resumed run's optimizer holds at its start, against the checkpoint it came from:
    equal values, and each state tensor shaped like its parameter on its device, in its layout."""
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    values = layouts = tensors = 0
    problems: list[str] = []
    for i, param in enumerate(params):
        live, expected = run.optimizer.state.get(param, {}), saved.get(i, {})
        if live.keys() != expected.keys():
            problems.append(f"parameter {i}: state {sorted(live)} instead of {sorted(expected)}")
            continue
        for key, value in live.items():
            if not torch.is_tensor(value):
                continue
            tensors += 1
            values += bool(torch.equal(value.detach().cpu(), expected[key].cpu()))
            if value.shape == param.shape:
                layouts += 1
                if value.device != param.device or value.stride() != param.stride():
                    problems.append(
                        f"parameter {i} {key}: {value.device} strides {value.stride()}, "
                        f"parameter {param.device} strides {param.stride()}"
                    )
    if values != tensors:
        problems.append(f"{tensors - values} of {tensors} state tensors differ from the checkpoint's")
    return {"state_tensors": tensors, "parameter_shaped": layouts, "problems": problems}


def resume_with_state(e2e: E2E, name: str, optimizer: str, opts: dict[str, str]) -> dict[str, Any]:
    """``optimizer`` for 1 epoch, resumed to 2, against a straight 2; the resumed run's state as
    its start sees it (``on_run_start``: restored by then)."""
    e2e.run(name, optimizer=optimizer, opts=opts, epochs=1)
    kept = e2e.keep(name, "epoch1")
    saved = torch.load(kept, weights_only=True)["optimizer"]["state"]
    seen: dict[str, Any] = {}
    with e2e.watch(on_start=lambda run: seen.update(state_report(run, saved))):
        e2e.run(name, optimizer=optimizer, opts=opts, epochs=2, resume=True)
    assert seen and seen["state_tensors"] > 0, f"no optimizer state after the resume: {seen}"
    assert not seen["problems"], "; ".join(seen["problems"][:3])
    e2e.run(f"{name}-straight", optimizer=optimizer, opts=opts, epochs=2)
    detail = e2e.agree(e2e.last(name), e2e.last(f"{name}-straight"), weights(kept), share=GPU_SHARE)
    return {
        **detail,
        **{k: v for k, v in seen.items() if k != "problems"},
        "note": f"{seen['state_tensors']} state tensors restored in place; resumed and straight {agreement(detail)}",
    }


@check("resume_adam", "adam: its moments come back equal, on the device, in their parameters' layout")
def resume_adam(e2e: E2E) -> dict[str, Any]:
    return resume_with_state(e2e, "adam", "adam", {})


@check("resume_sgd_momentum", "the sgd-momentum preset: its momentum buffers come back as they were")
def resume_sgd_momentum(e2e: E2E) -> dict[str, Any]:
    return resume_with_state(e2e, "sgd-momentum", "sgd-momentum", {})


@check("resume_adam_fused", "adam --opt fused=true: the fused kernel takes the restored state")
def resume_adam_fused(e2e: E2E) -> dict[str, Any]:
    if not e2e.cuda:
        refused = fused_refused()
        if refused:
            raise Skip(f"this torch refuses fused Adam on the CPU ({refused}); a CUDA-only feature here")
    return resume_with_state(e2e, "adam-fused", "adam", {"fused": "true"})


def initial_weights(run: Any, into: dict[str, torch.Tensor]) -> None:
    into.update({k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()})


def compiled_runs(e2e: E2E) -> dict[str, Any]:
    """An eager and a compiled run of 2 epochs, and the weights both started from."""
    eager_start: dict[str, torch.Tensor] = {}
    compiled_start: dict[str, torch.Tensor] = {}
    with e2e.watch(on_start=lambda run: initial_weights(run, eager_start)):
        eager = e2e.run("eager", epochs=2)
    with e2e.watch(on_start=lambda run: initial_weights(run, compiled_start)):
        compiled = e2e.run("compiled", epochs=2, compile=True)
    assert largest_difference(eager_start, compiled_start) == 0, "the seeded runs started from different weights"
    return {"eager": eager, "compiled": compiled, "start": eager_start}


@check("compile_vs_eager", "--compile trains to the eager run's weights and validation loss, within a tolerance")
def compile_vs_eager(e2e: E2E) -> dict[str, Any]:
    runs = e2e.once("compiled runs", lambda: compiled_runs(e2e))
    eager_w, compiled_w = weights(e2e.last("eager")), weights(e2e.last("compiled"))
    diff, moved = largest_difference(compiled_w, eager_w), largest_difference(eager_w, runs["start"])
    assert diff <= COMPILE_SHARE * moved, (
        f"weights differ by {diff:.3g}, over {COMPILE_SHARE:g} of the {moved:.3g} moved"
    )
    eager_loss, compiled_loss = runs["eager"]["val_loss"], runs["compiled"]["val_loss"]
    assert close(eager_loss, compiled_loss, 0.02), (eager_loss, compiled_loss)
    return {
        "max_weight_difference": diff,
        "weights_moved": moved,
        "val_loss": {"eager": eager_loss, "compiled": compiled_loss},
        "note": f"weights differ by {diff:.2g} ({diff / moved:.1%} of the move); val loss {compiled_loss:.4f} "
        f"vs {eager_loss:.4f}",
    }


@check("compile_resume", "--compile for 1 epoch, --resume --compile to 2: equals the straight compiled run")
def compile_resume(e2e: E2E) -> dict[str, Any]:
    from zoo.runner import validate

    e2e.once("compiled runs", lambda: compiled_runs(e2e))
    e2e.run("compiled-resumed", epochs=1, compile=True)
    kept = e2e.keep("compiled-resumed", "epoch1")
    e2e.run("compiled-resumed", epochs=2, compile=True, resume=True)
    detail = e2e.agree(e2e.last("compiled-resumed"), e2e.last("compiled"), weights(kept), share=GPU_SHARE)
    assert not any(k.startswith("_orig_mod.") for k in weights(kept)), "the compiled wrapper's names were saved"
    on_cpu = validate(e2e.last("compiled-resumed"), device="cpu", limit_val=64)  # loads into the plain model
    return {**detail, "cpu_val_loss": on_cpu["val_loss"], "note": f"resumed and straight {agreement(detail)}"}


def image_folder(e2e: E2E) -> dict[str, Any]:
    """The DataLoader runs' settings: an image folder of 48 + 48 PNG files (3 classes), batches of
    8 (6 steps an epoch), 2 worker processes."""
    import datafiles

    folder = datafiles.write_image_folder(e2e.work / "folder", classes=("cat", "dog", "frog"), per_class=16)
    return dict(data="imagefolder", data_dir=str(folder), batch_size=8, limit_train=None, limit_val=None, workers=2)


def loader_runs(e2e: E2E) -> dict[str, Any]:
    """2 epochs through the DataLoader with 2 workers, watched: the workers alive at each epoch's
    end, and the host-to-device copies."""
    settings = e2e.once("image folder", lambda: image_folder(e2e))
    children: list[int] = []
    with e2e.watch(on_epoch=lambda run, epoch: children.append(alive())):
        with HostToDevice() as copies:
            summary = e2e.run("loader", **settings)
    return {"summary": summary, "children": children, "copies": copies}


def alive() -> int:
    """Child processes alive now: DataLoader workers are this process's children."""
    return len(multiprocessing.active_children())


@check("dataloader", "an image folder through the DataLoader: 2 worker processes, pinned batches on a GPU")
def dataloader(e2e: E2E) -> dict[str, Any]:
    from zoo.runner import validate

    runs = e2e.once("loader runs", lambda: loader_runs(e2e))
    children, copies, summary = runs["children"], runs["copies"], runs["summary"]
    assert children and min(children) >= 2, f"DataLoader worker processes alive at each epoch's end: {children}"
    if e2e.cuda:  # every batch from pinned memory, copied without blocking
        assert copies.copies > 0 and copies.pinned == copies.non_blocking == copies.copies, vars(copies)
    on_cpu = validate(e2e.last("loader"), device="cpu")
    assert close(on_cpu["val_loss"], summary["val_loss"], 1e-2 if e2e.cuda else 1e-5), (on_cpu, summary)
    # Not asserted: the same command with --workers 0 need not draw the same batches.
    settings = e2e.once("image folder", lambda: image_folder(e2e))
    e2e.run("loader-0", **{**settings, "workers": 0})
    without = largest_difference(weights(e2e.last("loader-0")), weights(e2e.last("loader")))
    pinned = f"{copies.pinned} of {copies.copies} copies pinned" if e2e.cuda else "pinning does not apply on the CPU"
    return {
        "workers_alive": children,
        "host_to_device_copies": copies.copies,
        "pinned": copies.pinned,
        "val_loss": summary["val_loss"],
        "cpu_val_loss": on_cpu["val_loss"],
        "weight_difference_vs_workers_0": without,
        "note": f"{min(children)} worker processes; {pinned}; --workers 0 differs by {without:.2g} (not asserted)",
    }


@check("dataloader_resume", "DataLoader workers, SIGTERM mid-epoch: --resume replays the order, = a straight run")
def dataloader_resume(e2e: E2E) -> dict[str, Any]:
    from zoo.errors import Interrupted

    e2e.once("loader runs", lambda: loader_runs(e2e))
    settings = e2e.once("image folder", lambda: image_folder(e2e))
    os.environ["ZOO_TEST_KILL_WORKER"] = "0:8:SIGTERM"  # this process, after step 8: epoch 2, step 2 of 6
    try:
        e2e.run("loader-stopped", **settings)
    except Interrupted as exc:
        assert exc.exit_code == 143, exc
    else:
        raise AssertionError("the SIGTERM did not stop the run")
    finally:
        del os.environ["ZOO_TEST_KILL_WORKER"]
    kept = e2e.keep("loader-stopped", "stopped")
    partial = torch.load(kept, weights_only=True)["partial"]
    assert (partial["epoch"], partial["step"]) == (2, 2), partial
    e2e.run("loader-stopped", resume=True, **settings)
    detail = e2e.agree(e2e.last("loader-stopped"), e2e.last("loader"), weights(kept), share=GPU_SHARE)
    return {**detail, "note": f"stopped at epoch 2 step 2; resumed and straight {agreement(detail)}"}


@check("cuda_1", "--device cuda:1 (two GPUs): model, state and batches there, nothing on cuda:0, amp on its capability")
def cuda_1(e2e: E2E) -> dict[str, Any]:
    from zoo.predict import predict
    from zoo.runner import validate

    count = torch.cuda.device_count() if e2e.cuda else 0
    if count < 2:
        raise Skip(f"needs two GPUs; this machine has {count}")
    one = torch.device("cuda", 1)
    amp = torch.cuda.get_device_capability(one) >= (8, 0)
    before = torch.cuda.memory_allocated(0)
    seen: dict[str, Any] = {}

    def on_start(run: Any) -> None:
        seen["run_device"] = str(run.device)
        seen["parameters"] = sorted({str(p.device) for p in run.model.parameters()})

    def on_epoch(run: Any, epoch: int) -> None:
        state = run.optimizer.state.values()
        seen["state"] = sorted({str(t.device) for s in state for t in s.values() if torch.is_tensor(t) and t.dim()})
        seen["cuda0_allocated_delta"] = torch.cuda.memory_allocated(0) - before

    try:
        with e2e.watch(on_start, on_epoch):
            e2e.run("cuda1", device="cuda:1", optimizer="adam", amp=amp, epochs=1)
        assert seen["run_device"] == "cuda:1" and seen["parameters"] == ["cuda:1"], seen
        assert seen["state"] == ["cuda:1"], seen
        assert seen["cuda0_allocated_delta"] <= 0, f"the run allocated {seen['cuda0_allocated_delta']} bytes on cuda:0"
        on_one = validate(e2e.last("cuda1"), device="cuda:1", limit_val=64)
        on_cpu = validate(e2e.last("cuda1"), device="cpu", limit_val=64)
        assert close(on_one["val_loss"], on_cpu["val_loss"], 1e-2), (on_one, on_cpu)
        results, errors = predict(e2e.last("cuda1"), sample_images(e2e), device="cuda:1")
        assert results and not errors, errors
    finally:
        # --device cuda:1 makes cuda:1 the process's current device; the other checks' "cuda" is cuda:0
        torch.cuda.set_device(e2e.device)
    return {**seen, "amp": amp, "note": f"everything on cuda:1, nothing new on cuda:0; amp {amp}"}


@check("nan_guard", "a NaN loss stops the run at the next check window, leaving the last checkpoint untouched")
def nan_guard(e2e: E2E) -> dict[str, Any]:
    from zoo.errors import RunError
    from zoo.runner import CHECK_EVERY

    settings = dict(batch_size=4, limit_train=256)  # 64 steps an epoch: the window check comes mid-epoch
    e2e.run("nan", epochs=1, **settings)
    before = weights(e2e.last("nan"))
    forwards = [0]

    def count(module: Any, args: Any) -> None:
        forwards[0] += module.training

    with e2e.watch(on_start=lambda run: run.model.register_forward_pre_hook(count)):
        try:
            e2e.run("nan", epochs=2, resume=True, lr=1e30, **settings)
        except RunError as exc:
            error = str(exc)
        else:
            raise AssertionError("a run at --lr 1e30 finished: the NaN guard did not fire")
    assert "the loss became" in error and "at epoch 2" in error, error
    assert forwards[0] == CHECK_EVERY, f"stopped after {forwards[0]} steps, not at the {CHECK_EVERY}-step window"
    after = torch.load(e2e.last("nan"), weights_only=True)
    assert after["epoch"] == 1 and largest_difference(after["model"], before) == 0, "last.pt changed"
    status = json.loads((e2e.run_dir("nan") / "status.json").read_text())
    assert status["status"] == "failed", status
    return {"error": error, "steps_run": forwards[0], "note": f"stopped at step {forwards[0]}: {error[:60]}..."}


@check("preflight_refuses", "the memory preflight refuses a pair whose estimate exceeds the device's free memory")
def preflight_refuses(e2e: E2E) -> dict[str, Any]:
    from zoo.errors import UsageError
    from zoo.preflight import available_memory

    free = available_memory(e2e.device)
    if free is None:
        raise Skip(f"{e2e.device}: free memory unknown, so the preflight has nothing to refuse on")
    # L-BFGS keeps 2 x history_size copies of the parameters: with history_size over free / 4
    # bytes that is more than the free memory for any model with a float32 parameter.
    history = free // 4 + 1
    try:
        e2e.run("too-big", optimizer="lbfgs", opts={"history_size": str(history)}, epochs=1)
    except UsageError as exc:
        error = str(exc)
    else:
        raise AssertionError(f"lbfgs with history_size={history} ran on {free} bytes free")
    where = "CPU" if not e2e.cuda else "cuda"
    assert "memory" in error and f"of {where}" in error, error
    assert not e2e.run_dir("too-big").exists(), "the refused run wrote its directory"
    return {"free_bytes": free, "history_size": history, "error": error, "note": error[:90] + "..."}


@check("lbfgs", "lbfgs (strong Wolfe) trains a convolutional model, resumes with its history, as a straight run")
def lbfgs(e2e: E2E) -> dict[str, Any]:
    opts = {"history_size": "10", "max_iter": "4", "line_search_fn": "strong_wolfe"}
    e2e.run("lbfgs", optimizer="lbfgs", opts=opts, epochs=1)
    kept = e2e.keep("lbfgs", "epoch1")
    seen: dict[str, Any] = {}

    def on_start(run: Any) -> None:
        found: list[torch.Tensor] = []
        for state in run.optimizer.state.values():
            for value in state.values():
                items = value if isinstance(value, (list, tuple)) else [value]
                found += [v for v in items if torch.is_tensor(v)]
        seen["devices"] = sorted({str(t.device) for t in found if t.dim()})
        seen["history"] = len(next(iter(run.optimizer.state.values()), {}).get("old_dirs", []))

    with e2e.watch(on_start):
        resumed = e2e.run("lbfgs", optimizer="lbfgs", opts=opts, epochs=2, resume=True)
    assert seen.get("history"), f"the resumed optimizer has no L-BFGS history: {seen}"
    assert seen["devices"] == [str(e2e.device if e2e.cuda else "cpu")], seen
    assert math.isfinite(resumed["val_loss"]), resumed
    e2e.run("lbfgs-straight", optimizer="lbfgs", opts=opts, epochs=2)
    detail = e2e.agree(e2e.last("lbfgs"), e2e.last("lbfgs-straight"), weights(kept), share=GPU_SHARE)
    return {
        **detail,
        **seen,
        "note": f"{seen['history']} history pairs restored; resumed and straight {agreement(detail)}",
    }


@check("vgg16_interop", "VGG16 (the seed's classifier[6] edit) trains; its checkpoint loads into torchvision's vgg16")
def vgg16_interop(e2e: E2E) -> dict[str, Any]:
    from torch import nn
    from torchvision.models import vgg16

    summary = e2e.run(
        "vgg", model="vgg16-replace-classifier", epochs=1, batch_size=2, limit_train=4, limit_val=2, amp=e2e.amp
    )
    with torch.device("meta"):  # names and shapes are what a strict load checks: no need to initialise 138M weights
        plain = vgg16()
        plain.classifier[6] = nn.Linear(4096, 10)
    plain.load_state_dict(weights(e2e.last("vgg")), strict=True, assign=True)
    assert {p.device.type for p in plain.parameters()} == {"cpu"}
    assert math.isfinite(summary["val_loss"]), summary
    return {"val_loss": summary["val_loss"], "note": "loads strictly into torchvision vgg16 with Linear(4096, 10)"}


# -- running and reporting -----------------------------------------------------------------------


def run_check(e2e: E2E, item: Check) -> dict[str, Any]:
    """One check: its status (pass, FAIL, skip), seconds and what it found."""
    started = time.perf_counter()
    try:
        detail = item.fn(e2e)
        status = "pass"
    except Skip as exc:
        detail, status = {"note": f"skipped: {exc}"}, "skip"
    except Exception as exc:  # report it, and go on with the others
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if Path(f.filename).resolve() == Path(__file__).resolve()] or frames
        at = f"line {ours[-1].lineno} ({ours[-1].name})" + (
            f", raised in {frames[-1].filename}" if ours[-1] is not frames[-1] else ""
        )
        detail = {"error": f"{type(exc).__name__}: {exc}", "at": at}
        detail["note"] = detail["error"]
        status = "FAIL"
    return {"status": status, "seconds": round(time.perf_counter() - started, 1), **detail}


def table(results: dict[str, dict[str, Any]]) -> str:
    width = max(len("check"), *(len(name) for name in results))
    lines = [f"{'check':{width}}  result  seconds  note", f"{'-' * width}  ------  -------  ----"]
    for name, r in results.items():
        note = " ".join(str(r.get("note", "")).split())
        lines.append(f"{name:{width}}  {r['status']:6}  {r['seconds']:7.1f}  {note[:140]}")
    return "\n".join(lines)


def pick(only: str | None, parser: argparse.ArgumentParser) -> list[Check]:
    if not only:
        return list(CHECKS.values())
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}: choose from {', '.join(CHECKS)}")
    return [CHECKS[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run the checks on the CPU when there is no GPU")
    parser.add_argument("--only", help="comma-separated checks to run (default: all; --list names them)")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--out", help="working directory (default: a temporary one)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "cuda_e2e.json"), help="results file")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{c.name:20}  {c.what}" for c in CHECKS.values()))
        return 0
    chosen = pick(args.only, parser)

    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    elif args.allow_cpu:
        device = torch.device("cpu")
    else:
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
        print(f"cuda_e2e: skipped: no CUDA device visible (torch {torch.__version__}, built with {built})")
        return 0

    from zoo.plugins import get_plugin_host

    base = Path(args.out) if args.out else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="zoo-cuda-e2e-", dir=base))
    os.environ.setdefault("ZOO_DATA", str(work / "data"))
    probe = Probe()
    if not get_plugin_host().register(probe, "cuda-e2e"):
        raise SystemExit("cuda_e2e: could not register its probe plugin with the zoo's plugin host")
    e2e = E2E(device, work, probe)
    name = torch.cuda.get_device_name(device) if e2e.cuda else "cpu (--allow-cpu: testing the script)"
    print(f"cuda_e2e: {len(chosen)} checks on {name}, torch {torch.__version__}; work in {work}", flush=True)

    results: dict[str, dict[str, Any]] = {}
    for item in chosen:
        results[item.name] = run_check(e2e, item)
        r = results[item.name]
        print(f"{r['status']:6} {item.name} ({r['seconds']:.1f} s): {r.get('note', '')}", flush=True)

    by_status = {s: [n for n, r in results.items() if r["status"] == s] for s in ("pass", "FAIL", "skip")}
    report = {
        "device": name,
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count() if e2e.cuda else 0,
        "checks": results,
        "passed": by_status["pass"],
        "failed": by_status["FAIL"],
        "skipped": by_status["skip"],
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(table(results))
    failed = f", FAILED: {', '.join(by_status['FAIL'])}" if by_status["FAIL"] else ""
    print(
        f"\ncuda_e2e: {len(by_status['pass'])} passed, {len(by_status['FAIL'])} failed, "
        f"{len(by_status['skip'])} skipped on {name}{failed}; results in {args.json}"
    )
    return 1 if by_status["FAIL"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

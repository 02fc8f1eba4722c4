"""The zoo's benchmarks (issue 5): the runner against a hand-written loop, the seed's routine
and ``import torch``, measured side by side on one machine.

    python bench/run.py [--full] [--out bench/results] [--only SECTION,...] [--compile]
                        [--repeats N] [--threads N] [--gpu-batch-sizes 64,512] [--gpu-on-cpu]

Sections (``--only`` takes their names):

  fastpaths checks, not timings: no per-item Python for in-memory data, no host read per step,
            validation under inference_mode, zero_grad(set_to_none=True), and ``zoo list``
            importing no torch; each on the runner's real code path.
  overhead  images/s of the runner's training loop (``zoo.runner.run`` and its
            ``images_per_second``) vs the hand-written loop of ``raw_loop.py``: the same model
            class, data tensors, optimizer, batch size and device, in this process (CPU). For
            Tudui, and for ``bench-linear`` (Flatten + Linear, registered by the bench's own
            plugin), whose steps are so cheap that the loop's own cost per step shows.
  seed      one CIFAR-10-format epoch, wall clock from process start to exit: ``zoo run tudui
            sgd`` vs the seed's routine (``seed_loop.py``: torchvision CIFAR10 + ToTensor +
            DataLoader(batch_size=64)), each a fresh process (CPU).
  list      ``zoo list --json`` vs ``python -c "import torch"``, each a fresh process.
  startup   fixed costs against ``python -c "import torch"``, fresh processes: ``zoo run tudui sgd
            --data digits --epochs 1`` less its training seconds, ``zoo show adam``, ``zoo predict``
            on one image (goal: each <= 1.3x).
  memory    peak RSS of the ``seed`` section's processes against the uint8 training set
            (selecting it runs ``seed`` and ``list``, whose processes it measures).
  gpu       Tudui on CUDA with the whole set on the device, channels_last, bf16 autocast (and
            ``torch.compile`` with ``--compile``): the runner vs the same raw loop, steady-state
            images/s and seconds per epoch. Skipped without a GPU.

Each comparison runs its two contenders interleaved (A B, B A, A B, ...) so that drift in the
machine's load falls on both, and reports the median of the repeats with min and max; ratios
are medians of the per-repeat pairs. Section 1 interleaves finer: one runner run of many short
epochs, with a raw-loop epoch run after each from the bench plugin's ``on_checkpoint`` hook, so
the two sides of a pair are a fraction of a second apart; its verdicts rest on the 95%
confidence interval of the median pair ratio (order statistics, no assumption on the noise's
shape), which narrows as pairs are added. Data is random-pixel CIFAR-10 in the official format,
written once under ``OUT/data``. Results: ``OUT/bench-<UTC stamp>.json`` and ``.md``; the
Markdown is also printed. ``--compile`` adds the optional ``torch.compile`` rows (slow to
compile on a CPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import raw_loop
from zoo import hookimpl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' CIFAR-10 writer and fast-path probes
from probes import HOST_READS, HostReads, per_step  # noqa: E402

SECTIONS = ("fastpaths", "overhead", "seed", "list", "startup", "memory", "gpu")
CIFAR_IMAGE_BYTES = 3 * 32 * 32  # one uint8 image
DIGITS_TRAIN = 1_437  # the digits' training split (4/5 of 1,797)


@dataclass(frozen=True)
class Profile:
    """How much of everything: the default run (a few minutes) or ``--full``."""

    repeats: int  # interleaved pairs for list, startup and gpu
    overhead_rows: tuple[tuple[str, int, int, int], ...]  # (model, batch, steps, pairs); the first: the goal
    seed_data: tuple[int, int]  # (train, test) images of the seed section's CIFAR-10 directory
    seed_repeats: int
    gpu_epochs: int  # per run; the first is warm-up (compilation) and not counted
    gpu_batch_sizes: tuple[int, ...]


FULL = Profile(
    repeats=7,
    overhead_rows=(("tudui", 64, 100, 41), ("bench-linear", 64, 300, 101)),
    seed_data=(50_000, 10_000),
    seed_repeats=3,
    gpu_epochs=5,
    gpu_batch_sizes=(64, 512),
)
# The default: a 10,000-image CIFAR-10-format epoch (one training file's worth) and fewer steps,
# about 4 minutes on 2 cores. --full: the whole 50,000-image epoch and more repeats, about 13.
DEFAULT = Profile(
    repeats=5,
    overhead_rows=(("tudui", 64, 40, 21), ("bench-linear", 64, 200, 51)),
    seed_data=(10_000, 2_000),
    seed_repeats=3,
    gpu_epochs=3,
    gpu_batch_sizes=(64, 512),
)

GOALS = {
    "overhead": "runner / raw >= 0.98 for Tudui at batch 64",
    "augment": "with --augment flip --augment crop, runner / the same written by hand >= 0.95 for Tudui",
    "ema_clip": "with --ema 0.99 --clip-grad-norm 1, runner / the same written by hand >= 0.95 for Tudui",
    "sched_accumulate": "with --sched onecycle --accumulate 2 --label-smoothing 0.1, runner / the same by hand >= 0.95",
    "seed": "zoo >= 1.15x faster (seed seconds / zoo seconds)",
    "list": "zoo list / import torch <= 0.25",
    "startup": "each command's fixed cost (a run: all but its training) / import torch <= 1.3",
    "memory": "zoo run's peak RSS at or below the seed's",
    "linear": "runner / raw >= 0.95 for bench-linear at batch 64 (the loop's own cost under ~20 us a step)",
    "gpu": ">= 250,000 images/s on an H100; runner / raw >= 0.98",
}


# -- measuring ------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max (and the quartiles from 4 values on) of one measurement's repeats."""
    ordered = sorted(values)
    out: dict[str, Any] = {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
        "values": values,
    }
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4)
        out["iqr"] = [q1, q3]
    return out


def interleaved(repeats: int, contenders: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """Each contender ``repeats`` times, alternating which goes first (A B, B A, ...)."""
    names = list(contenders)
    results: dict[str, list[Any]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(contenders[name]())
            log(f"    {name} #{r + 1}: {_short(results[name][-1])}")
    return results


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items() if isinstance(v, (int, float)))
    return str(value)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def child_env() -> dict[str, str]:
    """The environment for a child process: this one's, with the same torch thread count, and
    with the zoo's modules compiled once and cached, as an installed package's are (some shells
    set PYTHONDONTWRITEBYTECODE)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


# Runs a command and reports its wall seconds and peak RSS. A child of this process would not
# do: Linux carries the peak RSS of the process that forks over into the child's ru_maxrss (its
# copy of the parent's pages counts until exec), and this process holds torch and data sets. So
# a small Python process forks the command and reports on it.
_LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": seconds, "max_rss": usage.ru_maxrss * 1024}, f)  # ru_maxrss is in KiB
sys.exit(os.waitstatus_to_exitcode(status))
"""


def child(argv: list[str], work: Path, name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``argv`` as a fresh process: its wall seconds, peak RSS (bytes) and stdout. ``env``:
    variables set on top of :func:`child_env`'s."""
    work.mkdir(parents=True, exist_ok=True)
    stdout, stderr, measured = work / f"{name}.out", work / f"{name}.err", work / f"{name}.json"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        code = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(measured), *argv],
            stdout=out,
            stderr=err,
            cwd=ROOT,
            env=child_env() | (env or {}),
        ).returncode
    if code != 0:
        tail = stderr.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {code}: {' / '.join(tail)}")
    return {**json.loads(measured.read_text()), "stdout": stdout.read_text()}


def zoo_command() -> list[str]:
    """The ``zoo`` console script of this interpreter (``python -m zoo`` without one)."""
    script = Path(sys.executable).with_name("zoo")
    return [str(script)] if script.exists() else [sys.executable, "-m", "zoo"]


def cifar_dir(root: Path, n_train: int, n_test: int) -> Path:
    """A CIFAR-10-format directory of random pixels, written once (the tests' own writer)."""
    data = root / f"cifar10-{n_train}x{n_test}"
    done = data / "complete"
    if not done.exists():
        log(f"  writing {n_train:,} + {n_test:,} random CIFAR-10-format images to {data}")
        from datafiles import write_cifar10_dir

        write_cifar10_dir(data, n_train=n_train, n_test=n_test, seed=0)
        done.write_text("")
    return data


def build_linear(num_classes: int) -> torch.nn.Module:
    """``bench-linear``: a model that costs next to nothing, so a step is mostly the loop's own
    Python and the per-step overhead of a loop shows up above the noise."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, num_classes))


MODELS = {"tudui": "Tudui", "bench-linear": "Sequential"}  # the models measured -> their classes


class BenchPlugin:
    """The bench's own plugin, registered in this process like any other.

    It registers ``bench-linear`` and observes runs: the model's class, and the runner's own
    cumulative training images and seconds after each epoch, read from ``last.pt`` by the
    ``on_checkpoint`` hook (after the timed region; the runner's numbers, not the bench's).
    """

    def __init__(self) -> None:
        self.cumulative: list[tuple[int, float]] = []
        self.model_class: str | None = None
        self.on_start: Callable[[Any], None] | None = None  # a probe to attach to the next run
        self.after_epoch: Callable[[], None] | None = None  # work to run after each epoch's checkpoint

    def reset(self) -> None:
        self.cumulative, self.model_class = [], None

    @hookimpl
    def register_models(self, register: Any) -> None:
        register(
            "bench-linear", build_linear, summary="Flatten + Linear: the loop's own cost", default_dataset="cifar10"
        )

    @hookimpl
    def on_run_start(self, run: Any) -> None:
        self.model_class = type(run.model).__name__
        if self.on_start is not None:
            self.on_start(run)

    @hookimpl
    def on_checkpoint(self, run: Any, path: str) -> None:
        if Path(path).name == "last.pt":
            metrics = torch.load(path, weights_only=True, map_location="cpu")["metrics"]
            self.cumulative.append((int(metrics["train_images"]), float(metrics["train_seconds"])))
            if self.after_epoch is not None:
                self.after_epoch()

    def epochs(self) -> list[tuple[int, float]]:
        """``(images, seconds)`` of each epoch of the last run."""
        out, before = [], (0, 0.0)
        for point in self.cumulative:
            out.append((point[0] - before[0], point[1] - before[1]))
            before = point
        return out


class Bench:
    """State shared by the sections: paths, the profile, the in-process runner."""

    def __init__(self, args: argparse.Namespace, profile: Profile):
        self.args = args
        self.profile = profile
        self.out = Path(args.out)
        self.data_root = self.out / "data"
        self.work = Path(tempfile.mkdtemp(prefix="work-", dir=self.out))
        self.results: dict[str, Any] = {}
        self._plugin: BenchPlugin | None = None
        self._runs = 0

    def plugin(self) -> BenchPlugin:
        """The bench plugin, registered before the registry collects its entries."""
        if self._plugin is None:
            from zoo.plugins import get_plugin_host
            from zoo.registry import reset_registry

            plugin = BenchPlugin()
            if not get_plugin_host().register(plugin, "bench"):
                raise RuntimeError("could not register the bench plugin with the zoo's plugin host")
            reset_registry()  # collect again, with bench-linear
            self._plugin = plugin
        return self._plugin

    def run_zoo(self, model: str, **config: Any) -> tuple[list[tuple[int, float]], dict[str, Any]]:
        """``zoo.runner.run`` in this process: per-epoch ``(images, seconds)`` and the summary."""
        from zoo.runner import RunConfig, run

        plugin = self.plugin()
        plugin.reset()
        self._runs += 1
        summary = run(
            RunConfig(
                model=model,
                optimizer="sgd",
                data="cifar10",
                quiet=True,
                out=str(self.work / f"run-{self._runs}"),
                **config,
            )
        )
        epochs = plugin.epochs()
        if plugin.model_class != MODELS[model] or len(epochs) != config.get("epochs", 1):
            raise RuntimeError(f"unexpected run: model {plugin.model_class}, {len(epochs)} epochs seen")
        images, seconds = sum(e[0] for e in epochs), sum(e[1] for e in epochs)
        if abs(images / seconds - summary["images_per_second"]) > 1e-6 * summary["images_per_second"]:
            raise RuntimeError("the bench's epoch clock disagrees with the runner's images_per_second")
        return epochs, summary

    def load_train_set(self, data_dir: Path) -> Any:
        from zoo.registry import get_registry

        self.plugin()
        return get_registry().load_dataset("cifar10", train=True, root=str(data_dir))


def steady(epochs: list[tuple[int, float]], skip: int) -> tuple[float, float]:
    """``(images/s, seconds per epoch)`` over the epochs after the first ``skip``."""
    counted = epochs[skip:]
    images, seconds = sum(e[0] for e in counted), sum(e[1] for e in counted)
    return images / seconds, seconds / len(counted)


def raw_model(name: str, device: torch.device, *, compile: bool) -> tuple[Any, Any, bool]:
    """The model and SGD(lr=0.01) as a hand-written script makes them, seeded as the runner seeds:
    ``(model, optimizer, channels_last)``. NHWC when the model convolves, as the runner does."""
    from zoo_tudui.model import Tudui

    torch.manual_seed(0)
    model = Tudui(10) if name == "tudui" else build_linear(10)
    channels_last = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if channels_last:
        model.to(device, memory_format=torch.channels_last)
    else:
        model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    return (torch.compile(model) if compile else model), optimizer, channels_last


# -- 0. the fast paths -------------------------------------------------------------------------


class ForwardProbe:
    """A forward pre-hook on a run's model: what each forward pass runs under."""

    def __init__(self) -> None:
        self.train_grads_none: list[bool] = []  # per training forward: every .grad is None
        self.eval_modes: list[tuple[bool, bool]] = []  # per eval forward: (inference mode, grad enabled)

    def attach(self, run: Any) -> None:
        run.model.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any) -> None:
        if module.training:
            self.train_grads_none.append(all(p.grad is None for p in module.parameters()))
        else:
            self.eval_modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))


def bench_fastpaths(bench: Bench) -> dict[str, Any]:
    """Checks (not timings) of the fast paths issue 5 lists, each on the runner's real code path."""
    from zoo.data import TensorImageDataset
    from zoo.runner import CHECK_EVERY

    steps, batch = 200, 8
    data_dir = cifar_dir(bench.data_root, 2 * steps * batch, 512)
    plugin = bench.plugin()
    checks: dict[str, Any] = {}

    def probed_run(n_steps: int) -> tuple[int, int, ForwardProbe]:
        """One epoch of ``bench-linear``: (host reads, __getitem__ calls, forward probe). Raises
        unless the run took ``n_steps`` steps (its training forwards)."""
        probe, items, real_getitem = ForwardProbe(), [0], TensorImageDataset.__getitem__

        def counting_getitem(self: Any, index: int) -> Any:
            items[0] += 1
            return real_getitem(self, index)

        plugin.on_start = probe.attach
        TensorImageDataset.__getitem__ = counting_getitem  # type: ignore[method-assign]
        try:
            with HostReads() as reads:
                bench.run_zoo(
                    "bench-linear",
                    data_dir=str(data_dir),
                    batch_size=batch,
                    limit_train=n_steps * batch,
                    limit_val=512,
                    epochs=1,
                    device="cpu",
                )
        finally:
            TensorImageDataset.__getitem__ = real_getitem  # type: ignore[method-assign]
            plugin.on_start = None
        if len(probe.train_grads_none) != n_steps:
            raise RuntimeError(f"a run asked for {n_steps} steps took {len(probe.train_grads_none)}")
        return reads.count, items[0], probe

    log("  fastpaths: two probed runs of bench-linear, and zoo list under -X importtime")
    reads_short, items_short, probe = probed_run(steps)
    reads_long, items_long, _ = probed_run(2 * steps)
    reads_per_step = per_step((reads_short, steps), (reads_long, 2 * steps))
    checks["no_per_item_python"] = {
        "how": "TensorImageDataset.__getitem__ counted during two one-epoch runs (training and validation)",
        "getitem_calls": items_short + items_long,
        "ok": items_short + items_long == 0,
    }
    checks["no_host_read_per_step"] = {
        "how": f"tensor reads to Python ({', '.join(sorted(HOST_READS))}) counted by a TorchFunctionMode in "
        f"runs of {steps} and {2 * steps} steps; the difference divided by {steps} is the reads per step",
        "reads": [reads_short, reads_long],
        "steps": [steps, 2 * steps],
        "reads_per_step": reads_per_step,
        "allowed_per_step": 1 / CHECK_EVERY,
        "ok": reads_per_step <= 1 / CHECK_EVERY,
    }
    checks["validation_under_inference_mode"] = {
        "how": "a forward pre-hook records torch.is_inference_mode_enabled() at every eval-mode forward",
        "eval_forwards": len(probe.eval_modes),
        "ok": bool(probe.eval_modes) and all(inference and not grad for inference, grad in probe.eval_modes),
    }
    checks["zero_grad_set_to_none"] = {
        "how": "the same hook checks that every parameter's .grad is None at each training forward after the "
        "first (zero_grad(set_to_none=False) would leave zero tensors)",
        "train_forwards": len(probe.train_grads_none),
        "ok": len(probe.train_grads_none) == steps and all(probe.train_grads_none[1:]),
    }

    got = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "zoo", "list", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=child_env(),
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in got.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(name for name in imported if name.split(".")[0] in ("torch", "torchvision", "numpy", "sklearn"))
    checks["zoo_list_imports_no_torch"] = {
        "how": "python -X importtime -m zoo list --json: no torch, torchvision, numpy or sklearn module imported",
        "heavy_imports": heavy[:10],
        "modules_imported": len(imported),
        "ok": got.returncode == 0 and not heavy,
    }
    return {"checks": checks, "goal": "every check ok", "met": all(c["ok"] for c in checks.values())}


# -- 1. runner overhead -----------------------------------------------------------------------


def bench_overhead(bench: Bench) -> dict[str, Any]:
    """Each row: one runner run of ``pairs + 1`` epochs with a raw-loop epoch after each (the first
    pair warms up and is not counted): pairs seconds apart, so the machine's drift falls on both."""
    profile, cpu = bench.profile, torch.device("cpu")
    n_max = max(batch * steps for _, batch, steps, _ in profile.overhead_rows)
    data_dir = cifar_dir(bench.data_root, n_max, 512)
    dataset = bench.load_train_set(data_dir)
    model, batch, steps, pairs = profile.overhead_rows[0]
    variants = [(*row, False, "") for row in profile.overhead_rows]
    # What recipe features cost: the plugins' flip and crop, the EMA and clipping, each against
    # the same written by hand.
    variants += [(model, batch, steps, pairs, False, recipe) for recipe in RECIPES if recipe]
    if bench.args.compile:  # few pairs: a compiled epoch is slow on a CPU
        variants.append((model, batch, steps, min(pairs, 5), True, ""))
    rows = []
    for model, batch, steps, pairs, compile, recipe in variants:
        extra = ", compiled" if compile else f", {recipe}" if recipe else ""
        log(f"  overhead: {model}, batch {batch}, {pairs} pairs of {steps}-step epochs{extra}")
        tensors = dataset.subset(batch * steps).to_device(cpu)
        runner, raw = paired_epochs(bench, data_dir, tensors, model, batch, pairs + 1, compile=compile, recipe=recipe)
        runner, raw = runner[1:], raw[1:]  # the first pair: allocations, oneDNN's primitives, compiling
        ratios = [a / b for a, b in zip(runner, raw)]
        rows.append({
            "model": model,
            "batch_size": batch,
            "steps": steps,
            "pairs": pairs,
            "compile": compile,
            "recipe": recipe,
            "runner_images_per_second": spread(runner),
            "raw_images_per_second": spread(raw),
            "ratio": spread(ratios),
            "ratio_ci95": median_ci(ratios),
            "overhead_us_per_step": spread([(1 / a - 1 / b) * batch * 1e6 for a, b in zip(runner, raw)]),
        })  # fmt: skip
    goals = []
    for name, goal, chosen in (
        ("overhead", 0.98, lambda row: row is rows[0]),
        ("linear", 0.95, lambda row: row["model"] == "bench-linear" and not row["compile"]),
        ("augment", 0.95, lambda row: row["recipe"] == "flip + crop"),
        ("ema_clip", 0.95, lambda row: row["recipe"] == "ema + clip"),
        ("sched_accumulate", 0.95, lambda row: row["recipe"] == "onecycle + accumulate + smoothing"),
    ):
        row = next(row for row in rows if chosen(row))
        goals.append(
            {"goal": GOALS[name], "met": row["ratio"]["median"] >= goal, "verdict": verdict(row["ratio_ci95"], goal)}
        )
    return {"rows": rows, "goals": goals, "met": goals[0]["met"], "linear_met": goals[1]["met"]}


# The recipe features of section 1's rows: the runner's options, and the raw loop's hand-written same.
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "": ({}, {}),
    "flip + crop": ({"augment": ("flip", "crop")}, {"augment": raw_loop.flip_and_crop}),
    "ema + clip": ({"ema": 0.99, "clip_grad_norm": 1.0}, {"ema": 0.99, "clip_grad_norm": 1.0}),
    "onecycle + accumulate + smoothing": (
        {"sched": "onecycle", "accumulate": 2, "label_smoothing": 0.1},
        {"onecycle": True, "accumulate": 2, "label_smoothing": 0.1},
    ),
}


def paired_epochs(
    bench: Bench, data_dir: Path, tensors: Any, model: str, batch: int, epochs: int, *, compile: bool, recipe: str
) -> tuple[list[float], list[float]]:
    """images/s of each epoch of one runner run, and of a raw-loop epoch run after each of them.

    The raw epoch runs from the bench plugin's ``on_checkpoint`` hook, outside the runner's
    clock; its model, optimizer (and EMA) are built once and train on, like the runner's.
    """
    net, optimizer, channels_last = raw_model(model, torch.device("cpu"), compile=compile)
    runner_options, raw_options = RECIPES[recipe]
    if "ema" in raw_options:
        raw_options = {**raw_options, "ema": raw_loop.ema_of(net, raw_options["ema"])}
    if raw_options.pop("onecycle", False):  # as the runner's preset: over the whole run, peaking at lr
        raw_options = dict(raw_options)
        steps = math.ceil(len(tensors[0]) / batch)
        total = epochs * math.ceil(steps / raw_options.get("accumulate", 1))
        raw_options["scheduler"] = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=0.01, total_steps=total, cycle_momentum=False
        )
    generator = torch.Generator().manual_seed(0)
    raw: list[float] = []

    def raw_epoch() -> None:
        (images, seconds), = raw_loop.train_epochs(
            net, optimizer, *tensors, batch_size=batch, epochs=1, generator=generator, channels_last=channels_last,
            **raw_options,
        )  # fmt: skip
        raw.append(images / seconds)

    bench.plugin().after_epoch = raw_epoch
    try:
        per_epoch, _ = bench.run_zoo(
            model,
            data_dir=str(data_dir),
            batch_size=batch,
            limit_train=len(tensors[0]),
            limit_val=512,
            epochs=epochs,
            device="cpu",
            compile=compile,
            **runner_options,
        )
    finally:
        bench.plugin().after_epoch = None
    runner = [images / seconds for images, seconds in per_epoch]
    for name, rate in (("runner", runner), ("raw", raw)):
        log(f"    {name}: {', '.join(f'{r:,.0f}' for r in rate)}")
    return runner, raw


def median_ci(values: list[float], confidence: float = 0.95) -> list[float]:
    """A distribution-free confidence interval for the median of ``values``: the order statistics
    ``k`` and ``n + 1 - k`` with ``k`` the largest such that ``P(Binomial(n, 1/2) < k) <= (1 - c) / 2``.
    It narrows as pairs are added, as the interquartile range does not."""
    ordered, n = sorted(values), len(values)
    tail, k = 0.0, 0
    while k < n and tail + math.comb(n, k) / 2**n <= (1 - confidence) / 2:
        tail += math.comb(n, k) / 2**n
        k += 1
    if k == 0:  # too few pairs for this confidence: the whole range
        return [ordered[0], ordered[-1]]
    return [ordered[k - 1], ordered[n - k]]


def verdict(interval: list[float], goal: float) -> str:
    """Whether the pairs tell the goal apart from the noise: ``met`` when the median's confidence
    interval lies at or above the goal, ``missed`` when it lies below, else ``within the noise``."""
    low, high = interval
    return "met" if low >= goal else "missed" if high < goal else "within the noise"


# -- 2. against the seed's routine, and 4. memory --------------------------------------------------


def bench_seed(bench: Bench) -> dict[str, Any]:
    n_train, n_test = bench.profile.seed_data
    data_dir = cifar_dir(bench.data_root, n_train, n_test)
    work = bench.work / "seed"
    zoo = zoo_command()
    count = [0]

    def zoo_epoch(*limit: str) -> dict[str, Any]:
        count[0] += 1
        got = child(
            [
                *zoo,
                "run",
                "tudui",
                "sgd",
                "--data-dir",
                str(data_dir),
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--device",
                "cpu",
                "--out",
                str(work / f"zoo-{count[0]}"),
                "--quiet",
                "--json",
                *limit,
            ],
            work,
            f"zoo-{count[0]}",
        )
        summary = json.loads(got["stdout"])
        train = n_train / summary["images_per_second"] if not limit else None
        return {
            "seconds": got["seconds"],
            "max_rss": got["max_rss"],
            "train_seconds": train,
            "images_per_second": summary["images_per_second"],
        }

    def seed_epoch() -> dict[str, Any]:
        count[0] += 1
        got = child(
            [
                sys.executable,
                str(ROOT / "bench" / "seed_loop.py"),
                "--data-dir",
                str(data_dir),
                "--epochs",
                "1",
                "--out",
                str(work / f"seed-{count[0]}"),
            ],
            work,
            f"seed-{count[0]}",
        )
        phases = json.loads(got["stdout"].strip().splitlines()[-1])
        return {
            "seconds": got["seconds"],
            "max_rss": got["max_rss"],
            "train_seconds": phases["train_seconds"],
            "images_per_second": phases["images_per_second"],
            "setup_seconds": phases["setup_seconds"],
            "test_seconds": phases["test_seconds"],
        }

    log(f"  seed: one epoch of {n_train:,} + {n_test:,} images, zoo run vs the seed's routine")
    zoo_epoch("--limit-train", "64", "--limit-val", "64")  # compiles and caches the zoo's bytecode
    got = interleaved(bench.profile.seed_repeats, {"zoo": zoo_epoch, "seed": seed_epoch})
    speedups = [s["seconds"] / z["seconds"] for z, s in zip(got["zoo"], got["seed"])]

    def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [k for k in runs[0] if runs[0][k] is not None]
        return {k: spread([r[k] for r in runs]) for k in keys}

    result = {
        "train_images": n_train,
        "test_images": n_test,
        "zoo": summarise(got["zoo"]),
        "seed": summarise(got["seed"]),
        "speedup": spread(speedups),
        "goal": GOALS["seed"],
    }
    result["met"] = result["speedup"]["median"] >= 1.15
    return result


def bench_memory(bench: Bench) -> dict[str, Any]:
    seed, listing = bench.results["seed"], bench.results["list"]
    train_bytes = seed["train_images"] * CIFAR_IMAGE_BYTES
    test_bytes = seed["test_images"] * CIFAR_IMAGE_BYTES
    baseline = listing["import_torch_max_rss"]["median"]
    zoo_peak = seed["zoo"]["max_rss"]["median"]
    return {
        "train_uint8_bytes": train_bytes,
        "test_uint8_bytes": test_bytes,
        "import_torch_max_rss": baseline,
        "zoo_max_rss": seed["zoo"]["max_rss"],
        "seed_max_rss": seed["seed"]["max_rss"],
        "zoo_above_import_torch_per_train_set": (zoo_peak - baseline) / train_bytes,
        "goal": GOALS["memory"],
        "met": zoo_peak <= seed["seed"]["max_rss"]["median"],
    }


# -- 3. listing -------------------------------------------------------------------------------


def with_zoo_timm(work: Path) -> dict[str, str] | None:
    """The environment of a ``zoo`` with plugins/zoo-timm installed (pip, into a directory of
    the bench's own, put on PYTHONPATH) and its model cache in the bench's directory; None when
    timm itself is not installed."""
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return None
    site = work / "zoo-timm-site"
    if not site.exists():
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        subprocess.run([*pip, str(ROOT / "plugins" / "zoo-timm")], check=True, env=child_env())
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "ZOO_CACHE": str(work / "zoo-cache")}


def bench_list(bench: Bench) -> dict[str, Any]:
    """``zoo list --json`` against ``python -c "import torch"``, and again with zoo-timm's 1,000+
    models installed (when timm is), its name cache warm as after a first use."""
    work = bench.work / "list"
    zoo = zoo_command()
    count = [0]
    timm_env = with_zoo_timm(work)

    def listing(env: dict[str, str] | None = None) -> dict[str, Any]:
        count[0] += 1
        got = child([*zoo, "list", "--json"], work, f"list-{count[0]}", env)
        assert json.loads(got["stdout"]), "zoo list --json listed nothing"
        return {"seconds": got["seconds"], "max_rss": got["max_rss"], "entries": len(json.loads(got["stdout"]))}

    def import_torch() -> dict[str, Any]:
        count[0] += 1
        got = child([sys.executable, "-c", "import torch"], work, f"torch-{count[0]}")
        return {"seconds": got["seconds"], "max_rss": got["max_rss"]}

    log("  list: zoo list --json vs python -c 'import torch'" + (", and with zoo-timm" if timm_env else ""))
    listing(), import_torch()  # warm the page cache and the zoo's bytecode cache
    contenders = {"zoo list --json": listing, "import torch": import_torch}
    if timm_env:
        listing(timm_env)  # the first use fills zoo-timm's cache (imports timm, once)
        contenders["with zoo-timm"] = lambda: listing(timm_env)
    got = interleaved(max(bench.profile.repeats * 2 - 1, 5), contenders)
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(got["zoo list --json"], got["import torch"])]
    result = {
        "zoo_list_seconds": spread([r["seconds"] for r in got["zoo list --json"]]),
        "import_torch_seconds": spread([r["seconds"] for r in got["import torch"]]),
        "zoo_list_max_rss": spread([r["max_rss"] for r in got["zoo list --json"]]),
        "import_torch_max_rss": spread([r["max_rss"] for r in got["import torch"]]),
        "ratio": spread(ratios),
        "goal": GOALS["list"],
    }
    result["met"] = result["ratio"]["median"] <= 0.25
    result["entries"] = got["zoo list --json"][0]["entries"]
    if timm_env:
        timm_ratios = [a["seconds"] / b["seconds"] for a, b in zip(got["with zoo-timm"], got["import torch"])]
        result["timm"] = {
            "seconds": spread([r["seconds"] for r in got["with zoo-timm"]]),
            "ratio": spread(timm_ratios),
            "entries": got["with zoo-timm"][0]["entries"],
        }
        result["met"] = result["met"] and result["timm"]["ratio"]["median"] <= 0.25
    return result


# -- 6. fixed costs --------------------------------------------------------------------------


def bench_startup(bench: Bench) -> dict[str, Any]:
    """What a command costs besides its work, fresh processes against ``python -c "import torch"``:
    ``zoo run tudui sgd --data digits --epochs 1`` (wall clock less the training seconds it
    reports: interpreter, imports, data, model, preflight, validation, checkpoints, exit),
    ``zoo show adam`` and ``zoo predict`` on one image."""
    work = bench.work / "startup"
    zoo, count = zoo_command(), [0]
    image = work / "digit.png"
    work.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)

    def one_epoch() -> dict[str, Any]:
        count[0] += 1
        out = work / f"run-{count[0]}"
        argv = [*zoo, "run", "tudui", "sgd", "--data", "digits", "--epochs", "1", "--device", "cpu"]
        got = child([*argv, "--out", str(out), "--quiet", "--json"], work, f"run-{count[0]}")
        summary = json.loads(got["stdout"])
        train = DIGITS_TRAIN / summary["images_per_second"]
        return {"seconds": got["seconds"] - train, "wall": got["seconds"], "max_rss": got["max_rss"]}

    def show() -> dict[str, Any]:
        count[0] += 1
        got = child([*zoo, "show", "adam"], work, f"show-{count[0]}")
        return {"seconds": got["seconds"], "max_rss": got["max_rss"]}

    def predict() -> dict[str, Any]:
        count[0] += 1
        got = child([*zoo, "predict", str(work / "run-1" / "last.pt"), str(image)], work, f"predict-{count[0]}")
        return {"seconds": got["seconds"], "max_rss": got["max_rss"]}

    def import_torch() -> dict[str, Any]:
        count[0] += 1
        got = child([sys.executable, "-c", "import torch"], work, f"torch-{count[0]}")
        return {"seconds": got["seconds"], "max_rss": got["max_rss"]}

    log("  startup: zoo run (digits, 1 epoch) less its training, zoo show adam, zoo predict vs import torch")
    one_epoch(), show(), predict(), import_torch()  # warm the page cache and the bytecode caches
    contenders = {"run": one_epoch, "show": show, "predict": predict, "import torch": import_torch}
    got = interleaved(bench.profile.repeats, contenders)
    torch_s = [r["seconds"] for r in got["import torch"]]
    result: dict[str, Any] = {"import_torch_seconds": spread(torch_s), "goal": GOALS["startup"]}
    for name in ("run", "show", "predict"):
        result[name] = {
            "seconds": spread([r["seconds"] for r in got[name]]),
            "max_rss": spread([r["max_rss"] for r in got[name]]),
            "ratio": spread([r["seconds"] / t for r, t in zip(got[name], torch_s)]),
        }
    result["run"]["wall"] = spread([r["wall"] for r in got["run"]])
    result["met"] = all(result[name]["ratio"]["median"] <= 1.3 for name in ("run", "show", "predict"))
    return result


# -- 5. GPU ------------------------------------------------------------------------------------


def bench_gpu(bench: Bench) -> dict[str, Any]:
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    elif bench.args.gpu_on_cpu:
        device = torch.device("cpu")
    else:
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        return {
            "skipped": f"not measured: no GPU was available (torch {torch.__version__}, {built}, "
            f"no CUDA device visible)",
            "goal": GOALS["gpu"],
            "met": None,
        }
    profile = bench.profile
    n_train, n_test = profile.seed_data if device.type == "cuda" else (2048, 512)
    data_dir = cifar_dir(bench.data_root, n_train, n_test)
    dataset = bench.load_train_set(data_dir)
    tensors = dataset.to_device(device)  # the whole set on the device, as the runner holds it
    cuda = device.type == "cuda"
    amp = cuda and torch.cuda.is_bf16_supported()
    amp_dtype = torch.bfloat16 if amp else None
    epochs = profile.gpu_epochs
    batch_sizes = (
        [int(b) for b in bench.args.gpu_batch_sizes.split(",")]
        if bench.args.gpu_batch_sizes
        else list(profile.gpu_batch_sizes)
    )

    rows = []
    for compile in [False, True] if bench.args.compile else [False]:
        for batch in batch_sizes:

            def runner() -> dict[str, float]:
                per_epoch, _ = bench.run_zoo(
                    "tudui",
                    data_dir=str(data_dir),
                    batch_size=batch,
                    epochs=epochs,
                    limit_val=min(n_test, 2048),
                    device=str(device),
                    amp=amp,
                    compile=compile,
                )
                rate, seconds = steady(per_epoch, 1)
                return {"images_per_second": rate, "seconds_per_epoch": seconds, "first_epoch_seconds": per_epoch[0][1]}

            def raw() -> dict[str, float]:
                model, optimizer, channels_last = raw_model("tudui", device, compile=compile)
                per_epoch = raw_loop.train_epochs(
                    model,
                    optimizer,
                    *tensors,
                    batch_size=batch,
                    epochs=epochs,
                    generator=torch.Generator().manual_seed(0),
                    amp_dtype=amp_dtype,
                    channels_last=channels_last,
                )
                rate, seconds = steady(per_epoch, 1)
                return {"images_per_second": rate, "seconds_per_epoch": seconds, "first_epoch_seconds": per_epoch[0][1]}

            log(f"  gpu: batch {batch}{', compiled' if compile else ''} on {device}")
            got = interleaved(profile.repeats, {"runner": runner, "raw": raw})
            row = {"batch_size": batch, "compile": compile, "amp": "bf16" if amp else None, "channels_last": True}
            for name in ("runner", "raw"):
                for key in ("images_per_second", "seconds_per_epoch", "first_epoch_seconds"):
                    row[f"{name}_{key}"] = spread([r[key] for r in got[name]])
            row["ratio"] = spread(
                [a["images_per_second"] / b["images_per_second"] for a, b in zip(got["runner"], got["raw"])]
            )
            rows.append(row)
    best = max(row["runner_images_per_second"]["median"] for row in rows)
    syncs = cuda_syncs_per_step(bench, data_dir, n_train, amp) if cuda else None
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu (--gpu-on-cpu: testing the script only)",
        "train_images": n_train,
        "epochs_per_run": epochs,
        "rows": rows,
        "best_runner_images_per_second": best,
        "cuda_syncs": syncs,
        "goal": GOALS["gpu"],
        "met": (best >= 250_000 and all(row["ratio"]["median"] >= 0.98 for row in rows) and syncs["ok"])
        if cuda
        else None,
    }


def sync_check_steps(n_train: int, batch: int, most: int = 200) -> int:
    """Steps of the shorter of the sync check's two one-epoch runs (the longer takes twice as
    many): a multiple of the NaN check's window, at most ``most``, and small enough that the
    longer run's ``2 * steps * batch`` images are in the training set. Asking for more than the
    set holds would give both runs its whole epoch, the same steps, and a difference of 0."""
    from zoo.runner import CHECK_EVERY

    steps = min(most, n_train // (2 * batch)) // CHECK_EVERY * CHECK_EVERY
    if steps < CHECK_EVERY:
        raise ValueError(
            f"{n_train} training images at batch {batch} cannot give runs of {CHECK_EVERY} and "
            f"{2 * CHECK_EVERY} steps: the sync check needs at least {4 * CHECK_EVERY * batch}"
        )
    return steps


def cuda_syncs_per_step(bench: Bench, data_dir: Path, n_train: int, amp: bool, batch: int = 64) -> dict[str, Any]:
    """Synchronising CUDA calls per training step, as ``torch.cuda.set_sync_debug_mode`` reports
    them: one-epoch runs of ``steps`` and ``2 * steps`` steps (both within the ``n_train`` images
    of ``data_dir``, and checked to have taken them); the difference over ``steps``."""
    from zoo.runner import CHECK_EVERY

    steps = sync_check_steps(n_train, batch)
    counts, taken = [], []
    for n in (steps, 2 * steps):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                epochs, _ = bench.run_zoo(
                    "tudui",
                    data_dir=str(data_dir),
                    batch_size=batch,
                    limit_train=n * batch,
                    limit_val=512,
                    epochs=1,
                    device="cuda",
                    amp=amp,
                )
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
        taken.append(math.ceil(epochs[0][0] / batch))  # the steps of the epoch's images
    if taken != [steps, 2 * steps]:
        raise RuntimeError(f"the sync check's runs asked for {steps} and {2 * steps} steps but took {taken}")
    syncs_per_step = per_step((counts[0], taken[0]), (counts[1], taken[1]))
    return {
        "syncs": counts,
        "steps": taken,
        "syncs_per_step": syncs_per_step,
        "allowed_per_step": 1 / CHECK_EVERY,
        "ok": syncs_per_step <= 1 / CHECK_EVERY,
    }


# -- the report --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": commit,
    }


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _s(stat: dict[str, Any], digits: int = 0, scale: float = 1.0) -> str:
    """``median (min-max)``."""
    return f"{_n(stat['median'] * scale, digits)} ({_n(stat['min'] * scale, digits)}-{_n(stat['max'] * scale, digits)})"


def _met(result: dict[str, Any]) -> str:
    return {True: "**met**", False: "**missed**", None: "-"}[result.get("met")]


def markdown(report: dict[str, Any]) -> str:
    m, r = report["machine"], report["results"]
    lines = [
        f"## Results of {m['date']} ({report['mode']})",
        "",
        f"{m['cpu']}, {m['usable_cores']} of {m['cores']} cores usable, torch {m['torch']} ({m['torch_threads']} "
        f"threads), Python {m['python']}, {m['platform']}; GPU: {m['gpu'] or 'none'}; commit {m['commit']}. "
        f"Values: median (min-max) of the repeats; load average (1 min) around each section in brackets.",
        "",
    ]
    MiB = 2**20

    def load(name: str) -> str:
        before, after = report["load"][name]
        return f"[load {before:.1f} -> {after:.1f}]"

    if "fastpaths" in r:
        lines += [
            "### 0. Fast paths (checks on the runner's code path, not timings)",
            "",
            "| check | result | how |",
            "|---|---|---|",
        ]
        for name, check in r["fastpaths"]["checks"].items():
            detail = {k: v for k, v in check.items() if k not in ("how", "ok")}
            lines.append(f"| {name} | {'ok' if check['ok'] else '**FAILED**'} {json.dumps(detail)} | {check['how']} |")
        lines.append("")
    if "overhead" in r:
        lines += [
            f"### 1. Runner overhead: SGD on in-memory CIFAR-10-format data, CPU {load('overhead')}",
            "",
            "Each row is one runner run with a raw-loop epoch after each of its epochs; the ratio is the "
            "median of the per-pair ratios, with its 95% confidence interval.",
            "",
            "| model | batch | steps x pairs | compile | recipe | runner images/s | raw loop images/s | "
            "runner / raw (95% CI) | overhead per step (us) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in r["overhead"]["rows"]:
            low, high = row["ratio_ci95"]
            lines.append(
                f"| {row['model']} | {row['batch_size']} | {row['steps']} x {row['pairs']} | "
                f"{'yes' if row['compile'] else 'no'} | {row['recipe'] or '-'} | "
                f"{_s(row['runner_images_per_second'])} | {_s(row['raw_images_per_second'])} | "
                f"{row['ratio']['median']:.3f} ({low:.3f}-{high:.3f}) | {_s(row['overhead_us_per_step'])} |"
            )
        lines.append("")
        for goal in r["overhead"]["goals"]:
            lines.append(f"Goal: {goal['goal']}: {_met(goal)} (confidence interval: {goal['verdict']}).")
        lines.append("")
    if "seed" in r:
        s = r["seed"]
        lines += [
            f"### 2. One CIFAR-10-format epoch ({_n(s['train_images'])} train + {_n(s['test_images'])} test "
            f"images), CPU, wall clock of a fresh process {load('seed')}",
            "",
            "| | wall seconds | training images/s | training seconds | everything else (s) |",
            "|---|---|---|---|---|",
        ]
        for name, label in (("zoo", "`zoo run tudui sgd --epochs 1`"), ("seed", "the seed's routine")):
            x = s[name]
            rest = [w - t for w, t in zip(x["seconds"]["values"], x["train_seconds"]["values"])]
            lines.append(
                f"| {label} | {_s(x['seconds'], 1)} | {_s(x['images_per_second'])} | "
                f"{_s(x['train_seconds'], 1)} | {_s(spread(rest), 1)} |"
            )
        lines += [
            "",
            f"Speed-up (seed seconds / zoo seconds, per interleaved pair): {_s(s['speedup'], 3)}. "
            f"Goal: {s['goal']}: {_met(s)}.",
            "",
        ]
        if "list" in r:  # the zoo's fixed cost against import torch's, measured in section 3
            rest = statistics.median(w - t for w, t in zip(s["zoo"]["seconds"]["values"],
                                                           s["zoo"]["train_seconds"]["values"]))  # fmt: skip
            torch_s = r["list"]["import_torch_seconds"]["median"]
            lines += [f"`zoo run`'s everything else is {rest / torch_s:.2f}x `import torch` ({torch_s:.2f} s).", ""]
    if "list" in r:
        x = r["list"]
        lines += [
            f"### 3. Listing, fresh processes {load('list')}",
            "",
            "| | seconds |",
            "|---|---|",
            f"| `zoo list --json` ({x.get('entries', '?')} entries) | {_s(x['zoo_list_seconds'], 3)} |",
            f'| `python -c "import torch"` | {_s(x["import_torch_seconds"], 3)} |',
        ]
        if "timm" in x:
            timm = x["timm"]
            lines.append(f"| `zoo list --json` with zoo-timm ({timm['entries']} entries) | {_s(timm['seconds'], 3)} |")
        lines += ["", f"Ratio: {_s(x['ratio'], 3)}."]
        if "timm" in x:
            lines[-1] += f" With zoo-timm: {_s(x['timm']['ratio'], 3)}."
        lines += [f"Goal: {x['goal']}: {_met(x)}.", ""]
    if "startup" in r:
        x = r["startup"]
        lines += [
            f"### 6. Fixed costs, fresh processes {load('startup')}",
            "",
            "| command | seconds | / `import torch` | peak RSS (MiB) |",
            "|---|---|---|---|",
            f"| `zoo run tudui sgd --data digits --epochs 1`, all but its training (wall {_s(x['run']['wall'], 2)}) "
            f"| {_s(x['run']['seconds'], 2)} | {_s(x['run']['ratio'], 2)} | {_s(x['run']['max_rss'], scale=1 / MiB)} |",
            f"| `zoo show adam` | {_s(x['show']['seconds'], 2)} | {_s(x['show']['ratio'], 2)} | "
            f"{_s(x['show']['max_rss'], scale=1 / MiB)} |",
            f"| `zoo predict` one image | {_s(x['predict']['seconds'], 2)} | {_s(x['predict']['ratio'], 2)} | "
            f"{_s(x['predict']['max_rss'], scale=1 / MiB)} |",
            f'| `python -c "import torch"` | {_s(x["import_torch_seconds"], 2)} | 1 | |',
            "",
            f"Goal: {x['goal']}: {_met(x)}.",
            "",
        ]
    if "memory" in r:
        x = r["memory"]
        lines += [
            "### 4. Peak memory (max RSS of the process)",
            "",
            "| process | peak RSS (MiB) |",
            "|---|---|",
            f'| `python -c "import torch"` | {_n(x["import_torch_max_rss"] / MiB)} |',
            f"| `zoo run tudui sgd --epochs 1` | {_s(x['zoo_max_rss'], scale=1 / MiB)} |",
            f"| the seed's routine | {_s(x['seed_max_rss'], scale=1 / MiB)} |",
            "",
            f"The training set as uint8 is {_n(x['train_uint8_bytes'] / MiB)} MiB (test set "
            f"{_n(x['test_uint8_bytes'] / MiB)} MiB); the zoo's run peaks "
            f"{x['zoo_above_import_torch_per_train_set']:.2f}x the training set above `import torch`. "
            f"Goal: {x['goal']}: {_met(x)}.",
            "",
        ]
    if "gpu" in r:
        x = r["gpu"]
        lines += [f"### 5. GPU {load('gpu')}", ""]
        if "skipped" in x:
            lines += [
                f"{x['skipped']}. The section is ready: `python bench/run.py --only gpu [--compile]` on a "
                f"machine with an NVIDIA GPU.",
                "",
            ]
        else:
            lines += [
                f"{x['device']}: Tudui, {_n(x['train_images'])} images on the device, {x['epochs_per_run']} "
                f"epochs per run, the first not counted.",
                "",
                "| batch | compile | runner images/s | raw loop images/s | runner / raw | runner s/epoch | "
                "raw s/epoch | first epoch s (runner / raw) |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for row in x["rows"]:
                lines.append(
                    f"| {row['batch_size']} | {'yes' if row['compile'] else 'no'} | "
                    f"{_s(row['runner_images_per_second'])} | "
                    f"{_s(row['raw_images_per_second'])} | {_s(row['ratio'], 3)} | "
                    f"{_s(row['runner_seconds_per_epoch'], 3)} | {_s(row['raw_seconds_per_epoch'], 3)} | "
                    f"{_n(row['runner_first_epoch_seconds']['median'], 2)} / "
                    f"{_n(row['raw_first_epoch_seconds']['median'], 2)} |"
                )
            if x.get("cuda_syncs"):
                c = x["cuda_syncs"]
                lines += [
                    "",
                    f"Host syncs (torch.cuda.set_sync_debug_mode) in one-epoch runs of {c['steps'][0]} and "
                    f"{c['steps'][1]} steps: {c['syncs'][0]} and {c['syncs'][1]}, so {c['syncs_per_step']:.3f} per "
                    f"step (the NaN check's window allows {c['allowed_per_step']:.3f}): "
                    f"{'ok' if c['ok'] else '**FAILED**'}.",
                ]
            lines += ["", f"Goal: {x['goal']}: {_met(x)}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The zoo's benchmarks (issue 5), side by side on this machine.",
        epilog="See the module docstring and BENCHMARKS.md.",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the whole 50,000-image epoch, more steps and repeats "
        "(about 13 minutes on 2 cores; default: a 10,000-image epoch, about 4)",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "bench" / "results"), help="results and data (default: bench/results)"
    )
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows (overhead and gpu)")
    parser.add_argument(
        "--repeats",
        type=int,
        help="interleaved pairs of sections 2, 3, 5 and 6 (default: 5, --full 7; section 1: its own)",
    )
    parser.add_argument("--threads", type=int, help="torch threads, here and in every child (default: torch's)")
    parser.add_argument("--gpu-batch-sizes", help="comma-separated batch sizes of the gpu section (default 64,512)")
    parser.add_argument("--gpu-on-cpu", action="store_true", help="run the gpu section on the CPU (tests the script)")
    args = parser.parse_args(argv)

    profile = FULL if args.full else DEFAULT
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats:
        profile = Profile(**{**profile.__dict__, "repeats": args.repeats, "seed_repeats": args.repeats})
    wanted = set(SECTIONS if not args.only else (s.strip() for s in args.only.split(",")))
    unknown = wanted - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}: choose from {', '.join(SECTIONS)}")
    if "memory" in wanted:
        wanted |= {"seed", "list"}

    Path(args.out).mkdir(parents=True, exist_ok=True)
    bench = Bench(args, profile)
    report: dict[str, Any] = {
        "mode": "full" if args.full else "default",
        "machine": machine(),
        "results": {},
        "load": {},
    }
    log(f"bench: {report['mode']} run on {report['machine']['cpu']}, work in {bench.work}")
    sections = {
        "fastpaths": bench_fastpaths,
        "overhead": bench_overhead,
        "seed": bench_seed,
        "list": bench_list,
        "startup": bench_startup,
        "memory": bench_memory,
        "gpu": bench_gpu,
    }
    started = time.perf_counter()
    for name in SECTIONS:
        if name in wanted:
            before = os.getloadavg()[0]
            section_start = time.perf_counter()
            bench.results[name] = sections[name](bench)
            report["load"][name] = (before, os.getloadavg()[0])
            log(f"  {name}: done in {time.perf_counter() - section_start:.0f}s")
    report["results"] = bench.results
    report["seconds"] = time.perf_counter() - started
    shutil.rmtree(bench.work, ignore_errors=True)  # run directories and logs; kept when a section fails

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    text = markdown(report)
    json_path, md_path = Path(args.out) / f"bench-{stamp}.json", Path(args.out) / f"bench-{stamp}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(text + "\n")
    print(text)
    log(f"bench: {report['seconds']:.0f}s; wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

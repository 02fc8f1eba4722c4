"""The runner's own cost per training step in CPU instructions: reproducible on a busy machine.

    python bench/instructions.py [--batch 1] [--steps 100] [--model bench-linear] [--dynamo]

Wall-clock ratios on a shared 2-core VM move by several percent from pair to pair (BENCHMARKS.md,
"Noise"); an instruction count does not. This runs the runner (``zoo.runner.run``) and the raw loop
(``bench/raw_loop.py``) each in its own process under ``valgrind --tool=callgrind`` with
instrumentation off, switched on (through callgrind's client requests, from a tiny C library
compiled here) only around one-epoch runs of ``steps`` and ``2 * steps`` steps. The difference
over ``steps`` is the instructions of one step, whatever start-up, validation and checkpoints
cost; runner minus raw is the loop's own work. Batch 1 keeps torch's share of a step small.
``--dynamo`` imports ``torch._dynamo`` first in both, as in bench/run.py's section 1 (where the raw
loop's optimizer has imported it); without it the runner's optimizer steps without dynamo
(zoo/eager.py) and the raw loop's does not. Needs valgrind, its headers and a C compiler; about
3 minutes a process on a quiet 2-core machine. CPU only, one torch thread.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DATA = BENCH / "results" / "data"

_CONTROL = """
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void cg_stop(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
"""


def child(args: argparse.Namespace) -> None:
    """Under valgrind: a warm-up run, then runs of ``steps`` and ``2 * steps`` steps, instrumented."""
    import torch

    torch.set_num_threads(1)
    if args.dynamo:
        import torch._dynamo  # noqa: F401
    sys.path.insert(0, str(BENCH))
    import raw_loop
    from run import BenchPlugin, build_linear, cifar_dir
    from zoo.plugins import get_plugin_host
    from zoo.registry import get_registry, reset_registry
    from zoo.runner import RunConfig, run

    control = ctypes.CDLL(args.control)
    get_plugin_host().register(BenchPlugin(), "bench")
    reset_registry()
    data_dir = cifar_dir(DATA, max(2 * args.steps * args.batch, 64), 64)
    work = Path(tempfile.mkdtemp())
    dataset = get_registry().load_dataset("cifar10", train=True, root=str(data_dir))
    runs = [0]

    def runner(steps: int) -> None:
        runs[0] += 1
        run(RunConfig(model=args.model, optimizer="sgd", data="cifar10", data_dir=str(data_dir), quiet=True,
                      out=str(work / f"run-{runs[0]}"), batch_size=args.batch, limit_train=args.batch * steps,
                      limit_val=64, epochs=1, device="cpu"))  # fmt: skip

    def raw(steps: int) -> None:
        from zoo_tudui.model import Tudui

        tensors = dataset.subset(args.batch * steps).to_device(torch.device("cpu"))
        torch.manual_seed(0)
        convolves = args.model == "tudui"
        model = Tudui(10).to(memory_format=torch.channels_last) if convolves else build_linear(10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        raw_loop.train_epochs(model, optimizer, *tensors, batch_size=args.batch, epochs=1,
                              generator=torch.Generator().manual_seed(0), channels_last=convolves)  # fmt: skip

    contender = runner if args.child == "runner" else raw
    contender(2)  # imports, first kernels and allocations
    for steps in (args.steps, 2 * args.steps):
        # The collector's full passes over torch's half a million objects would land in one run and
        # not the other: frozen, it scans only what the runs themselves allocate.
        gc.collect()
        gc.freeze()
        control.cg_start()
        contender(steps)
        control.cg_stop(f"steps-{steps}".encode())


def instructions(name: str, args: argparse.Namespace, control: Path, out: Path) -> float:
    """Instructions per step of ``name`` (runner or raw), from its two dumps."""
    prefix = out / f"callgrind.{name}"
    argv = [sys.executable, __file__, "--child", name, "--control", str(control), "--batch", str(args.batch),
            "--steps", str(args.steps), "--model", args.model] + (["--dynamo"] if args.dynamo else [])  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    got = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={prefix}.%p", *argv],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if got.returncode != 0:
        raise RuntimeError(f"valgrind {name} exited {got.returncode}: {got.stderr[-2000:]}")
    totals = {}
    for dump in out.glob(f"callgrind.{name}.*.*"):
        text = dump.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: Client Request: steps-(\d+)", text, re.M)
        total = re.search(r"^totals: (\d+)", text, re.M)
        if trigger and total:
            totals[int(trigger.group(1))] = int(total.group(1))
    if sorted(totals) != [args.steps, 2 * args.steps]:
        raise RuntimeError(f"expected dumps of {args.steps} and {2 * args.steps} steps, found {sorted(totals)}")
    return (totals[2 * args.steps] - totals[args.steps]) / args.steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--model", default="bench-linear", choices=("bench-linear", "tudui"))
    parser.add_argument("--dynamo", action="store_true", help="import torch._dynamo first in both processes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--control", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "control.c").write_text(_CONTROL)
        control = out / "libcontrol.so"
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(control), str(out / "control.c")], check=True)
        per_step = {name: instructions(name, args, control, out) for name in ("runner", "raw")}
    overhead = per_step["runner"] - per_step["raw"]
    dynamo = ", torch._dynamo imported" if args.dynamo else ""
    print(f"{args.model}, batch {args.batch}, steps {args.steps} and {2 * args.steps}{dynamo}: instructions a "
          f"step: runner {per_step['runner']:,.0f}, raw loop {per_step['raw']:,.0f}; the runner's own "
          f"{overhead:,.0f} ({overhead / per_step['raw']:.1%} of the raw step)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

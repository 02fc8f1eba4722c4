"""The CUDA path end to end: train, checkpoint, resume, validate, predict, and load on CPU.

    python scripts/cuda_e2e.py [--out DIR] [--compile] [--json FILE]

Runs on any machine with an NVIDIA GPU and prints one line per check plus a JSON summary
(also written to ``--json``, default ``bench/results/cuda_e2e.json``). Without a GPU it prints
why it skipped and exits 0; ``--allow-cpu`` runs the same checks on the CPU (to test the script
itself). Exit status 1 when a check fails.

Checks:
  1. ``tudui sgd --data fake`` on cuda with ``--amp`` (bf16) for 2 epochs, then ``--resume`` to 3;
  2. a straight 3-epoch run; on the GPU bitwise equality is not promised (cuDNN picks
     kernels freely), so the difference is reported, and accuracies must agree closely;
  3. the checkpoint opens with ``weights_only=True`` holding CPU tensors, and the model it
     rebuilds on the CPU (``map_location``) gives the GPU's validation accuracy;
  4. ``predict`` on generated RGBA/grayscale/palette/JPEG images agrees between cuda and cpu;
  5. a SIGTERM mid-epoch on cuda leaves a checkpoint that ``--resume`` finishes;
  6. VGG16 (the seed's ``classifier[6]`` edit) trains one short epoch on cuda and its
     checkpoint loads strictly into a plain torchvision ``vgg16()`` on the CPU;
  7. throughput of Tudui on the full fake set, float32 vs ``--amp`` (and ``--compile``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # datafiles.write_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="working directory (default: a temporary one)")
    parser.add_argument("--compile", action="store_true", help="also measure --compile")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "cuda_e2e.json"))
    parser.add_argument("--allow-cpu", action="store_true", help="run the checks on the CPU when there is no GPU")
    args = parser.parse_args(argv)

    if torch.cuda.is_available():
        device = "cuda"
    elif args.allow_cpu:
        device = "cpu"
    else:
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
        print(f"cuda_e2e: skipped: no CUDA device visible (torch {torch.__version__}, built with {built})")
        return 0

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="zoo-cuda-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ZOO_DATA", str(work / "data"))
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "checks": {},
    }
    failures: list[str] = []

    def check(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        start = time.perf_counter()
        try:
            detail = fn()
            status = "ok"
        except Exception as exc:  # report every check, then fail at the end
            detail, status = {"error": f"{type(exc).__name__}: {exc}"}, "FAILED"
            failures.append(name)
        detail["seconds"] = round(time.perf_counter() - start, 2)
        results["checks"][name] = {"status": status, **detail}
        print(f"{status:6} {name}: {json.dumps(detail)}", flush=True)

    from zoo.checkpoint import load_checkpoint
    from zoo.predict import predict
    from zoo.registry import model_from_checkpoint
    from zoo.runner import Interrupted, RunConfig, run, validate

    amp = device == "cuda" and torch.cuda.is_bf16_supported()

    def config(out: Path, **kw: Any) -> RunConfig:
        fields = dict(
            model="tudui",
            optimizer="sgd",
            data="fake",
            epochs=3,
            batch_size=64,
            limit_val=200,
            out=str(out),
            device=device,
            amp=amp,
            quiet=True,
        )
        return RunConfig(**{**fields, **kw})

    def train_and_resume() -> dict[str, Any]:
        first = run(config(work / "resumed", epochs=2))
        final = run(config(work / "resumed", epochs=3, resume=True))
        straight = run(config(work / "straight", epochs=3))
        a = torch.load(work / "resumed" / "last.pt", weights_only=True)["model"]
        b = torch.load(work / "straight" / "last.pt", weights_only=True)["model"]
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        assert final["epochs"] == 3 and first["epochs"] == 2
        assert abs(final["val_accuracy"] - straight["val_accuracy"]) <= 0.05, (final, straight)
        return {
            "amp": amp,
            "val_accuracy": final["val_accuracy"],
            "straight_val_accuracy": straight["val_accuracy"],
            "max_weight_difference_vs_straight": diff,
            "bitwise_equal": diff == 0.0,
        }

    def load_on_cpu() -> dict[str, Any]:
        path = work / "resumed" / "last.pt"
        raw = torch.load(path, weights_only=True)  # no map_location: the tensors are already on the CPU
        assert all(t.device.type == "cpu" for t in raw["model"].values())
        model = model_from_checkpoint(load_checkpoint(path, map_location="cpu"))
        assert next(model.parameters()).device.type == "cpu"
        on_gpu = validate(path, device=device, limit_val=200)
        on_cpu = validate(path, device="cpu", limit_val=200)
        assert abs(on_gpu["val_accuracy"] - on_cpu["val_accuracy"]) <= 0.02, (on_gpu, on_cpu)
        return {"gpu": on_gpu, "cpu": on_cpu}

    def predict_both() -> dict[str, Any]:
        import datafiles

        images = [
            datafiles.write_image(work / "images" / name, mode, colour=i)
            for i, (name, mode) in enumerate(
                [("rgba.png", "RGBA"), ("gray.png", "L"), ("palette.png", "P"), ("photo.jpg", "RGB")]
            )
        ]
        path = work / "resumed" / "best.pt"
        gpu, errors = predict(path, images, device=device, top=3)
        cpu, _ = predict(path, images, device="cpu", top=3)
        assert not errors and [r["label"] for r in gpu] == [r["label"] for r in cpu]
        worst = max(abs(g["probability"] - c["probability"]) for g, c in zip(gpu, cpu))
        return {"labels": [r["label"] for r in gpu], "max_probability_difference": worst}

    def sigterm_then_resume() -> dict[str, Any]:
        # The runner's test hook sends the SIGTERM after step 20 (epoch 2, step 4 of 16).
        os.environ["ZOO_TEST_KILL_WORKER"] = "0:20:SIGTERM"
        try:
            run(config(work / "signal", epochs=2))
            raise AssertionError("the SIGTERM did not stop the run")
        except Interrupted as exc:
            code = exc.exit_code
        finally:
            del os.environ["ZOO_TEST_KILL_WORKER"]
        partial = torch.load(work / "signal" / "last.pt", weights_only=True)["partial"]
        final = run(config(work / "signal", epochs=2, resume=True))
        assert code == 143 and (partial["epoch"], partial["step"]) == (2, 4) and final["epochs"] == 2
        return {"exit_code": code, "stopped_at": f"epoch {partial['epoch']} step {partial['step']}"}

    def vgg_interop() -> dict[str, Any]:
        from torch import nn
        from torchvision.models import vgg16

        summary = run(
            config(
                work / "vgg", model="vgg16-replace-classifier", epochs=1, batch_size=32, limit_train=256, limit_val=64
            )
        )
        plain = vgg16()
        plain.classifier[6] = nn.Linear(4096, 10)
        plain.load_state_dict(torch.load(work / "vgg" / "last.pt", weights_only=True)["model"], strict=True)
        return {"images_per_second": summary["images_per_second"], "val_accuracy": summary["val_accuracy"]}

    def throughput() -> dict[str, Any]:
        out: dict[str, Any] = {}
        variants = [("float32", {"amp": False}), ("amp_bf16", {"amp": amp})]
        if args.compile:
            variants.append(("amp_compile", {"amp": amp, "compile": True}))
        for name, extra in variants:
            summary = run(config(work / f"speed-{name}", epochs=2, batch_size=256, **extra))
            out[name] = round(summary["images_per_second"])
        return {"tudui_images_per_second": out}

    check("train_amp_resume", train_and_resume)
    check("load_on_cpu", load_on_cpu)
    check("predict_cuda_vs_cpu", predict_both)
    check("sigterm_resume", sigterm_then_resume)
    check("vgg16_interop", vgg_interop)
    check("throughput", throughput)

    results["failed"] = failures
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"cuda_e2e: {'FAILED ' + ', '.join(failures) if failures else 'all checks passed'} "
        f"on {results['device']}; results in {args.json}; work in {work}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

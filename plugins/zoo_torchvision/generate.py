"""Write ``catalogue.json``: torchvision's classifiers as the zoo lists them, read from the
installed torchvision so that listing them never imports it.

    python -m zoo_torchvision.generate           # rewrite catalogue.json
    python -m zoo_torchvision.generate --check   # exit 1 if it differs from torchvision

Per model: the native input size (the default weights' centre crop: 224 for most, 299 for
inception_v3, 518 for vit_h_14), the minimum input size (the weights' ``min_size``), the
parameter count at 1000 classes (the weights' ``num_params``; counted on the meta device for a
model without weights) and every set of ImageNet weights (enum name, URL, file name), the
default first. tests/test_catalogue.py fails when the installed torchvision differs from it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

CATALOGUE = Path(__file__).with_name("catalogue.json")


def _weights_row(weights: Any, default: Any) -> dict[str, Any]:
    meta = weights.meta
    metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
    acc1 = metrics.get("acc@1")
    return {
        "name": weights.name,
        "url": weights.url,
        "file": weights.url.rsplit("/", 1)[-1],
        "input_size": int(weights.transforms.keywords["crop_size"]),
        "min_size": list(meta["min_size"]),
        "params": int(meta["num_params"]),
        "acc1": acc1 if isinstance(acc1, (int, float)) and math.isfinite(acc1) else None,  # vgg16 features: NaN
        "default": weights is default,
    }


def _counted_params(name: str) -> int:
    """Parameters at 1000 classes of a model torchvision publishes no weights for."""
    import torch
    from torchvision import models

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = models.get_model(name, weights=None, num_classes=1000)
    return sum(p.numel() for p in model.parameters())


def catalogue() -> dict[str, Any]:
    """Every classifier of ``torchvision.models.list_models(module=torchvision.models)``."""
    from torchvision import models

    table: dict[str, Any] = {}
    for name in models.list_models(module=models):
        try:
            enum = models.get_model_weights(name)
        except (ValueError, KeyError):
            enum = None
        rows = []
        if enum is not None:
            default = enum.DEFAULT
            rows = [_weights_row(w, default) for w in [default, *(w for w in enum if w is not default)]]
        first = rows[0] if rows else None
        table[name] = {
            "input_size": first["input_size"] if first else 224,
            "min_size": first["min_size"] if first else [1, 1],
            "params": first["params"] if first else _counted_params(name),
            "weights": rows,
        }
    return table


def document() -> dict[str, Any]:
    import torchvision

    return {
        "generated_by": "python -m zoo_torchvision.generate",
        "torchvision": torchvision.__version__.split("+")[0],
        "models": catalogue(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo_torchvision.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if catalogue.json differs from torchvision")
    parser.add_argument("-o", "--output", type=Path, default=CATALOGUE, help="default: the plugin's catalogue.json")
    args = parser.parse_args(argv)
    doc = document()
    if args.check:
        saved = json.loads(args.output.read_text(encoding="utf-8"))
        if saved.get("models") != doc["models"]:
            print(f"{args.output} differs from torchvision {doc['torchvision']}: regenerate it", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(doc['models'])} models of torchvision {doc['torchvision']} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""An example third-party zoo plugin: one model, one optimizer, one dataset.

Only the public API is used (``zoo.hookimpl`` and, inside the loader, ``zoo.data``), and nothing
heavy is imported at module level: builders are import paths resolved when a run needs them.
"""

from zoo import hookimpl


@hookimpl
def register_models(register):
    register(
        "example-mlp",
        "zoo_example.parts:mlp",
        summary="a two-layer MLP for small grayscale images",
        input_size=(1, 16, 16),
        default_dataset="example-stripes",
    )


@hookimpl
def register_optimizers(register):
    register(
        "example-signsgd",
        "zoo_example.parts:SignSGD",
        summary="sign-SGD: each weight moves by lr in the direction of its gradient's sign",
        defaults={"lr": 0.01},
    )


@hookimpl
def register_datasets(register):
    register(
        "example-stripes",
        "zoo_example.parts:stripes",
        summary="16x16 horizontal vs vertical stripes, generated (no files)",
        num_classes=2,
        input_size=(1, 16, 16),
        classes=["horizontal", "vertical"],
    )


@hookimpl
def on_epoch_end(run, epoch, metrics):
    # An observer: it sees every epoch's metrics. This one keeps a one-line-per-epoch log
    # beside the run's own files.
    from pathlib import Path

    with open(Path(run.run_dir) / "example-plugin.log", "a") as log:
        log.write(f"epoch {epoch} val_accuracy {metrics['val_accuracy']:.4f}\n")

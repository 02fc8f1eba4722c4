"""torchvision's VGG16 as a zoo plugin. Its seed variants (add_module, append, replace) are
data in registry.yaml, not code."""

from zoo import hookimpl


@hookimpl
def register_models(register):
    register(
        "vgg16",
        "zoo_vgg.models:vgg16",
        summary="torchvision VGG16 (138M parameters at 1000 classes); --weights imagenet for pretrained",
        input_size=(3, 32, 32),
        default_dataset="cifar10",
    )

"""The course network "Tudui", as a zoo plugin (the model is built only when a run asks)."""

from zoo import hookimpl


@hookimpl
def register_models(register):
    register(
        "tudui",
        "zoo_tudui.model:Tudui",
        summary="The course's CIFAR-10 CNN: 3 x (Conv5x5 + MaxPool), Linear(1024, 64), Linear(64, classes)",
        input_size=(3, 32, 32),
        default_dataset="cifar10",
        params=209_928,  # at 1000 classes, as torchvision and timm count (145,578 at CIFAR-10's 10)
    )

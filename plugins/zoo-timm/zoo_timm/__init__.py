"""timm's models as zoo models, under the plugin name ``timm``.

Registering imports neither torch nor timm: the names and input sizes come from a JSON cache
(``zoo_timm.cache``), written the first time from timm itself. Each model is built by
``timm.create_model(name, num_classes=...)`` (no pretrained weights; ``img_size=`` the run's
``--input-size`` for a model timm fixes to one size), through an import path that is resolved
only when a run asks for that model.
"""

from zoo import hookimpl
from zoo_timm.cache import catalogue


@hookimpl
def register_models(register):
    for name, info in catalogue().items():
        size = tuple(info["input_size"])
        # timm's smallest input, where it names one. A model timm fixes to one size (most ViTs) is
        # built for the run's (zoo_timm.models): a smaller one too, if the model can take it (a
        # ViT: a multiple of its patch size), which the build and its dry forward pass tell.
        minimum = info.get("min_input_size")
        register(
            name,
            f"zoo_timm.models:{name}",
            summary=f"timm's {name} ({size[1]}x{size[2]} native input)",
            input_size=size,
            min_input_size=tuple(minimum[-2:]) if minimum else None,
        )

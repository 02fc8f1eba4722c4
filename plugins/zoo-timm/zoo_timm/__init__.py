"""timm's models as zoo models, under the plugin name ``timm``.

Registering imports neither torch nor timm: the names and input sizes come from a JSON cache
(``zoo_timm.cache``), written the first time from timm itself. Each model is built by
``timm.create_model(name, num_classes=...)`` (no pretrained weights), through an import path
that is resolved only when a run asks for that model.
"""

from zoo import hookimpl
from zoo_timm.cache import catalogue


@hookimpl
def register_models(register):
    for name, info in catalogue().items():
        size = tuple(info["input_size"])
        # timm's smallest input; a model built for one fixed size (most ViTs) takes no smaller one
        minimum = info.get("min_input_size") or (size if info.get("fixed_input_size") else None)
        register(
            name,
            f"zoo_timm.models:{name}",
            summary=f"timm's {name} ({size[1]}x{size[2]} native input)",
            input_size=size,
            min_input_size=tuple(minimum[-2:]) if minimum else None,
        )

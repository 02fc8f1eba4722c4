"""The registry: every entry builds, registry.yaml is checked with line numbers, the seed's
three VGG16 edits work and its naive top-level add_module is refused."""

from __future__ import annotations

import textwrap

import pytest
import torch

from zoo.errors import DuplicateNameError, UnknownNameError, UsageError
from zoo.preflight import check_compatible
from zoo.registry import get_registry

TORCH_OPTIMIZERS = sorted(
    n
    for n, c in vars(torch.optim).items()
    if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer
)


@pytest.fixture
def registry(builtin_registry):
    return builtin_registry


def each(names: list[str], check) -> None:
    """``check(name)`` for every name; fails once, naming every name that failed and why."""
    failed = {}
    for name in names:
        try:
            check(name)
        except Exception as exc:  # collected, and reported below
            failed[name] = f"{type(exc).__name__}: {exc}"
    assert not failed, failed


def test_registry_holds_the_seed(registry):
    models = {e.name for e in registry.entries("model")}
    assert {"tudui", "vgg16", "vgg16-add-linear", "vgg16-classifier-add-linear", "vgg16-replace-classifier"} <= models
    assert {"cifar10", "digits", "fake", "imagefolder"} <= set(registry.datasets)
    assert registry.optimizer("sgd").defaults == {"lr": 0.01}  # the seed's SGD(lr=0.01)


def test_every_torch_optimizer_is_discovered(registry):
    # discovered from torch's source, so it follows the installed torch, not a hand-written list
    plugin_optimizers = sorted(
        e.summary.removeprefix("torch.optim.") for e in registry.entries("optimizer") if e.plugin == "torch-optim"
    )
    assert plugin_optimizers == TORCH_OPTIMIZERS
    assert len(TORCH_OPTIMIZERS) >= 15


def builds_with_batch_by_classes_output(registry, name: str) -> None:
    entry = registry.model(name)
    model = registry.build_model(name, 7)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, *entry.input_size))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def on_meta(registry, name: str, num_classes: int = 10, **kwargs):
    """``registry.build_model`` on the meta device: the edits, the dry forward pass and its checks
    on shapes alone, without initialising VGG16's 138M weights (~2.5 s each on two cores). The
    VGG16 variants are built for real by test_every_model_builds_with_batch_by_classes_output and
    trained by tests/test_checkpoint.py."""
    with torch.device("meta"):
        return registry.build_model(name, num_classes, **kwargs)


def test_tudui_builds_with_batch_by_classes_output(registry):
    builds_with_batch_by_classes_output(registry, "tudui")


@pytest.mark.slow  # three VGG16s and a ResNet-18 (torchvision's 80: tests/test_catalogue.py, on the meta device)
def test_every_model_builds_with_batch_by_classes_output(registry):
    names = [e.name for e in registry.entries("model") if e.plugin != "torchvision"]
    each(names, lambda name: builds_with_batch_by_classes_output(registry, name))


def test_every_optimizer_constructs_or_says_why_not(registry):
    model = registry.build_model("tudui", 10)

    def constructs(name: str) -> None:
        factory = registry.optimizer_factory(name)
        defaults = registry.optimizer(name).defaults
        reason = check_compatible(model, name, factory, defaults)
        if reason is None:
            optimizer = registry.make_optimizer(name, model.parameters())
            assert isinstance(optimizer, torch.optim.Optimizer)
            assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
        else:
            assert name in ("sparseadam", "muon"), reason
            assert len(reason) > 20

    each([e.name for e in registry.entries("optimizer")], constructs)


def test_unknown_names_suggest_the_closest(registry):
    with pytest.raises(UnknownNameError, match=r"unknown model 'vgg-16'; did you mean 'vgg16'\? \(zoo list models\)"):
        registry.model("vgg-16")
    with pytest.raises(UnknownNameError, match="did you mean 'adam'"):
        registry.optimizer("adamm")


def test_a_name_of_any_kind_is_reported_as_the_closest_kind(registry):
    # zoo show takes a name of any kind: the message is the registry's, of the kind suggested
    with pytest.raises(UnknownNameError) as caught:
        registry.find("vgg-16")
    assert str(caught.value) == "unknown model 'vgg-16'; did you mean 'vgg16'? (zoo list models)"
    with pytest.raises(UnknownNameError) as caught:
        registry.find("sgd-momentun")
    assert str(caught.value) == "unknown optimizer 'sgd-momentun'; did you mean 'sgd-momentum'? (zoo list optimizers)"
    with pytest.raises(UnknownNameError) as caught:
        registry.find("qqqqqq")
    assert str(caught.value) == (
        "unknown model, optimizer, dataset, scheduler, augmentation or recipe 'qqqqqq' (zoo list)"
    )


def test_list_filters_by_kind_and_glob_in_natural_order(registry):
    names = [e.name for e in registry.entries("model", "vgg*")]
    assert names[:4] == ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn"]  # vgg11 before vgg16, as timm sorts
    assert "vgg16" in names and all(n.startswith("vgg") for n in names) and "tudui" not in names


# -- the seed's VGG16 edits ---------------------------------------------------------------------


def write(tmp_path, text: str):
    path = tmp_path / "mine.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


NAIVE = """\
models:
  vgg16-naive:
    base: vgg16
    base_classes: 1000
    edits:
      - add_module: add_linear
        layer: Linear
        args: [1000, $num_classes]
"""


def test_naive_top_level_add_module_is_refused_with_the_fix(tmp_path):
    registry = get_registry([write(tmp_path, NAIVE)])
    with pytest.raises(UsageError) as caught:
        on_meta(registry, "vgg16-naive")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'mine.yaml'}:3: model 'vgg16-naive'")
    assert "never called" in message and "output stays (2, 1000)" in message and "append: add_linear" in message


def test_append_keeps_the_seed_state_dict_keys_and_runs_the_module(registry):
    model = on_meta(registry, "vgg16-add-linear")  # build_model checks that add_linear runs
    keys = list(model.state_dict())
    assert keys[-2:] == ["add_linear.weight", "add_linear.bias"]  # as vgg16.add_module('add_linear', ...)
    assert model.classifier[6].out_features == 1000


def test_replace_matches_the_seed_classifier_6_edit(registry):
    import torchvision

    model = on_meta(registry, "vgg16-replace-classifier")
    with torch.device("meta"):  # a strict load checks names and shapes, which the meta device has
        seed = torchvision.models.vgg16()
        seed.classifier[6] = torch.nn.Linear(4096, 10)
    seed.load_state_dict(model.state_dict(), strict=True)


def test_classifier_add_module_appends_inside_the_sequential(registry):
    model = on_meta(registry, "vgg16-classifier-add-linear")
    assert list(model.classifier._modules)[-1] == "add_linear"


# -- registry.yaml errors name file:line ----------------------------------------------------------

BAD_FILES = {
    "yaml-syntax": ("models:\n  x: [1, 2\n", ":3: invalid YAML"),
    "unknown-section": ("modles: {}\n", ":1: unknown section(s) ['modles']"),
    "unknown-base": (
        "models:\n  mine:\n    base: vgg-16\n",
        ":3: model 'mine': base must be a plugin's model: unknown model 'vgg-16'; did you mean 'vgg16'?",
    ),
    "unknown-layer": (
        "models:\n  mine:\n    base: tudui\n    edits:\n      - append: extra\n"
        "        layer: Linaer\n        args: [10, 10]\n",
        ":5: unknown layer 'Linaer': expected a torch.nn class; did you mean 'Linear'?",
    ),
    "not-a-layer": (
        "models:\n  mine:\n    base: tudui\n    edits:\n      - append: extra\n        layer: functional\n",
        ":5: unknown layer 'functional'",
    ),
    "two-ops": (
        "models:\n  mine:\n    base: tudui\n    edits:\n      - {append: a, replace: b, layer: ReLU}\n",
        ":5: an edit needs exactly one of",
    ),
    "bad-placeholder": (
        "models:\n  mine:\n    base: tudui\n    edits:\n      - {append: a, layer: Linear, args: [10, $classes]}\n",
        ":5: unknown placeholder '$classes'",
    ),
    "duplicate-key": ("models:\n  mine:\n    base: tudui\n    base: vgg16\n", ":4: invalid YAML: duplicate key 'base'"),
    "bad-name": ("models:\n  Mine:\n    base: tudui\n", ":3: invalid model name 'Mine'"),
    "unknown-key": ("models:\n  mine:\n    base: tudui\n    edit: []\n", ":3: unknown key(s) ['edit']"),
    "bad-hparams": (
        "optimizers:\n  fast:\n    base: sgd\n    hparams: [1, 2]\n",
        ":3: hparams of optimizer 'fast' must be a mapping",
    ),
    "duplicate-name": ("models:\n  tudui:\n    base: vgg16\n", "registered twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_registry_file_names_the_line(tmp_path, case):
    text, expected = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        get_registry([path])
    assert expected in str(caught.value)
    if case != "duplicate-name":
        assert str(caught.value).startswith(path + ":")
    else:
        assert isinstance(caught.value, DuplicateNameError)


BAD_BUILDS = {
    "missing-path": (
        "replace: classifier.9\n        layer: Linear\n        args: [4096, $num_classes]",
        "no module 'classifier.9' in the model: classifier has no child '9' (its children: 0, 1, 2, 3, 4, 5, 6)",
    ),
    "wrong-shape": (
        "replace: classifier.6\n        layer: Linear\n        args: [4096, 7]",
        "outputs shape (2, 7) for a batch of 2, expected (2, 10)",
    ),
    "wrong-arg-type": (
        "replace: classifier.6\n        layer: Linear\n        args: [4096, ten]",
        "cannot build Linear(4096, 'ten')",
    ),
    "wrong-input-width": (
        "replace: classifier.6\n        layer: Linear\n        args: [1000, $num_classes]",
        "fails a dry forward pass",
    ),
    "freeze-nothing": ("freeze: 'head.*'", "matches no parameter"),
}


@pytest.mark.parametrize("case", sorted(BAD_BUILDS))
def test_bad_edit_is_refused_when_built(tmp_path, case):
    edit, expected = BAD_BUILDS[case]
    path = write(tmp_path, f"models:\n  mine:\n    base: vgg16\n    edits:\n      - {edit}\n")
    registry = get_registry([path])
    with pytest.raises(UsageError) as caught:
        on_meta(registry, "mine")
    assert expected in str(caught.value)
    assert str(caught.value).startswith(path + ":")


def test_freeze_and_user_presets(tmp_path, monkeypatch):
    path = write(
        tmp_path,
        """\
        models:
          tudui-frozen:
            base: tudui
            summary: Tudui with frozen convolutions
            edits:
              - freeze: ['model.0.*', 'model.2.*']
        optimizers:
          slow-sgd:
            base: sgd
            hparams: {lr: 0.001, momentum: 0.5}
    """,
    )
    monkeypatch.setenv("ZOO_REGISTRY", path)
    registry = get_registry()
    model = registry.build_model("tudui-frozen", 10)
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen == ["model.0.bias", "model.0.weight", "model.2.bias", "model.2.weight"]
    assert registry.optimizer("slow-sgd").defaults == {"lr": 0.001, "momentum": 0.5}
    assert registry.model("tudui-frozen").plugin == path

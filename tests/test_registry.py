"""The model registry: every name resolves in one place, to the right loader, prompt sets, grids and exact density."""
import pytest
import torch

from sharp_utils import registry
from sharp_utils.pipeline import PipelineLoadError
from sharp_utils.tradeoff import SETTINGS


def test_every_stand_in_resolves_with_its_parts():
    for name, s in registry.SPECS.items():
        assert registry.spec(name) is s and s.checkpoint is not None and s.checkpoint.exists(), name
        assert s.training_data is not None
        if s.exact is not None:  # its own density is the first option of each
            assert registry.spec(f"exact:{name}").options == tuple(o[0] for o in s.exact_options)
    assert registry.design("minisd") == "v2" and registry.design("exact:minisd-coupled:appc") == "coupled"
    assert registry.own_exact_options("minisd-coupled") == ("coupled", "single")
    assert registry.own_exact_options("exact:minisd:appc:single") == ("appc", "single")


def test_exact_names_are_checked_against_the_options():
    s = registry.spec("exact:minisd-coupled:appc")
    assert (s.base, s.options, s.family) == ("minisd-coupled", ("appc", "single"), "minisd")
    for bad in ("exact:mnist", "exact:minisd:trained", "exact:minisd:appc:single:extra", "exact:toy2d"):
        with pytest.raises(PipelineLoadError, match="exact:minisd"):
            registry.spec(bad)


def test_anything_else_is_a_stable_diffusion_folder():
    s = registry.spec("/models/sd-v1-4")
    assert s.family == "sd" and s.text_to_image and s.grids is None
    assert registry.mitigation_grids("/models/sd-v1-4") == SETTINGS["sd1"]
    assert registry.mitigation_grids("minisd") is registry.SPECS["minisd"].grids
    assert registry.mitigation_grids("exact:minisd-coupled") is registry.SPECS["minisd-coupled"].grids
    with pytest.raises(ValueError, match="split"):
        registry.prompt_records("minisd", "test")
    with pytest.raises(ValueError, match="no prompt sets"):
        registry.prompt_records("toy2d")


def test_toy_models_are_not_text_to_image():
    with pytest.raises(PipelineLoadError, match="not a text-to-image model"):
        registry.load_text_to_image("mnist-appc")


def test_mnist_exact_densities_are_their_pools():
    """exact:mnist-<design> is toy.mnist_exact of that pool (the oracle: the same data and pool weights)."""
    from sharp_utils.toy import mnist_exact

    for design in ("coupled", "appc"):
        got, want = registry.load_model(f"exact:mnist-{design}"), mnist_exact(design)
        assert torch.equal(got.data, want.data)
        assert torch.equal(got.conditions[None][1], want.conditions[None][1])
    other = registry.load_model("exact:mnist-appc:coupled")  # the App. C model's exact density, coupled pool
    assert torch.equal(other.data, mnist_exact("coupled").data)


def test_exact_pipelines_are_named_as_the_registry_resolves_them():
    learned = registry.load_model("minisd")
    for options in ((), ("appc",), ("coupled", "single")):
        ex = registry.exact_pipeline("minisd", learned, *options)
        assert ex.name == ":".join(["exact", "minisd", *options])
        assert registry.spec(ex.name).options == registry.own_exact_options(ex.name)

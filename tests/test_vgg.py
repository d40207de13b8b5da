import hashlib

import pytest
import torch
from safetensors.torch import save_file

from cartoon.errors import RuntimeFailure, UsageError
from cartoon.params import VggParams
from cartoon.vgg import RandomWeightsWarning, VGGFeatures, load_vgg, resolve_weights, torchvision_cache_path

# torchvision's vgg19 layout: features.0 is conv1_1 (3->64), features.2 is conv1_2 (64->64).
SMALL_SHAPES = {"features.0.weight": (64, 3, 3, 3), "features.0.bias": (64,),
                "features.2.weight": (64, 64, 3, 3), "features.2.bias": (64,)}


def _fake_state(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(shape, generator=generator) for key, shape in SMALL_SHAPES.items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored: not a feature layer
    return state


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def _assert_loaded(features: VGGFeatures, state: dict[str, torch.Tensor]) -> None:
    own = features.features.state_dict()
    for key in ("0.weight", "0.bias", "2.weight", "2.bias"):
        assert torch.equal(own[key], state[f"features.{key}"])


def test_params_path_pth_is_loaded_exactly(tmp_path):
    state = _fake_state()
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    features = load_vgg(VggParams(weights=str(path)), layer="relu1_2")
    _assert_loaded(features, state)
    assert features.source == "imagenet:" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_params_path_safetensors(tmp_path):
    state = _fake_state(2)
    path = tmp_path / "vgg.safetensors"
    save_file(state, str(path))
    _assert_loaded(load_vgg(VggParams(weights=str(path)), layer="relu1_2"), state)


def test_torchvision_cache_is_used_when_no_path():
    state = _fake_state(3)
    cached = torchvision_cache_path()
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    _assert_loaded(load_vgg(VggParams(), layer="relu1_2"), state)


def test_params_path_wins_over_cache(tmp_path):
    cached = torchvision_cache_path()
    cached.parent.mkdir(parents=True)
    torch.save(_fake_state(4), cached)
    mine = _fake_state(5)
    torch.save(mine, tmp_path / "mine.pth")
    _assert_loaded(load_vgg(VggParams(weights=str(tmp_path / "mine.pth")), layer="relu1_2"), mine)


def test_random_fallback_only_when_allowed():
    with pytest.raises(RuntimeFailure, match="allow_random"):
        resolve_weights(VggParams())
    with pytest.warns(RandomWeightsWarning, match="RANDOM"):
        features = load_vgg(VggParams(allow_random=True, seed=7))
    assert features.source == "random:7"
    with pytest.warns(RandomWeightsWarning):
        again = load_vgg(VggParams(allow_random=True, seed=7))
    assert torch.equal(features.features[0].weight, again.features[0].weight)  # seeded


def test_missing_path_and_incomplete_file(tmp_path):
    with pytest.raises(UsageError, match="vgg.weights"):
        resolve_weights(VggParams(weights=str(tmp_path / "absent.pth")))
    torch.save(_fake_state(), tmp_path / "small.pth")
    with pytest.raises(RuntimeFailure, match="lack"):
        load_vgg(VggParams(weights=str(tmp_path / "small.pth")), layer="conv4_4")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeFailure, match="cannot read"):
        resolve_weights(VggParams(weights=str(tmp_path / "junk.pth")))


def test_conv4_4_prefix_size_and_frozen():
    with pytest.warns(RandomWeightsWarning):
        features = load_vgg(VggParams(allow_random=True))
    assert sum(p.numel() for p in features.parameters()) == 10_585_152
    assert not any(p.requires_grad for p in features.parameters())
    features.train()
    assert not features.training
    out = features(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 512, 4, 4)


def test_random_fallback_is_calibrated_to_unit_scale():
    """Raw random VGG features are tiny; the fallback rescales layers so content losses bite."""
    with pytest.warns(RandomWeightsWarning):
        features = load_vgg(VggParams(allow_random=True, seed=3))
    noise = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(9)) * 2 - 1
    assert 0.7 < features(noise).std().item() < 1.5  # raw random weights give about 0.3


def test_random_layer_applies_to_the_random_fallback_only(tmp_path):
    with pytest.warns(RandomWeightsWarning):
        random = load_vgg(VggParams(allow_random=True, random_layer="relu1_2"), layer="conv4_4")
    assert random.layer == "relu1_2" and random.source == "random:0"
    assert random(torch.zeros(1, 3, 16, 16)).shape == (1, 64, 16, 16)  # conv1_2 resolution, not conv4_4's
    path = tmp_path / "vgg.pth"
    torch.save(_fake_state(), path)
    real = load_vgg(VggParams(weights=str(path), allow_random=True, random_layer="relu1_2"), layer="relu1_2")
    assert real.source.startswith("imagenet:")
    with pytest.raises(RuntimeFailure, match="lack"):  # real weights keep the method's layer (deeper than the file)
        load_vgg(VggParams(weights=str(path), random_layer="relu1_2"), layer="conv4_4")


def test_fp32_precision_keeps_features_in_fp32_under_bf16_autocast(tmp_path):
    """vgg.precision: fp32 runs the features outside autocast: the values of an fp32 pass, while
    auto follows autocast into bf16 (whose rounding can swamp a content term near zero)."""
    path = tmp_path / "vgg.pth"
    torch.save(_fake_state(), path)
    auto = load_vgg(VggParams(weights=str(path)), layer="relu1_2")
    fp32 = load_vgg(VggParams(weights=str(path), precision="fp32"), layer="relu1_2")
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    reference = auto(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_auto, under_fp32 = auto(images), fp32(images.bfloat16())
    assert under_auto.dtype == torch.bfloat16 and under_fp32.dtype == torch.float32
    assert not torch.equal(under_auto.float(), reference)
    assert torch.allclose(under_fp32, fp32(images.bfloat16().float()))
    assert torch.allclose(under_fp32, reference, atol=0.05 * reference.abs().max().item())

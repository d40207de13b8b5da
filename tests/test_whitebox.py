import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from cartoon.guided_filter import box_mean, guided_filter
from cartoon.methods import (
    available_methods,
    get_method,
    load_run_params,
    method_params,
)
from cartoon.methods.base import count_parameters
from cartoon.methods.whitebox import (
    GRAY_RANGES,
    Discriminator,
    Generator,
    GeneratorParams,
    TrainParams,
    WhiteBox,
    WhiteBoxParams,
    chroma_l1,
    feature_l1,
    random_gray_weights,
    to_gray,
    tv_loss,
)
from cartoon.params import VggParams
from cartoon.vgg import RandomWeightsWarning, load_vgg

ROOT = Path(__file__).resolve().parents[1]
TERMS = ("d_surface", "d_texture", "d_total", "g_surface", "g_texture", "content", "structure", "tv", "g_total")


def test_registry_finds_whitebox():
    assert available_methods()["whitebox"] is WhiteBox
    assert get_method("whitebox") is WhiteBox
    assert WhiteBox.sets == {"pretrain": ("photo",), "train": ("photo", "cartoon")}
    assert WhiteBox.size_multiple == 4 and WhiteBox.content_layer == "conv4_4"


def test_paper_parameter_counts():
    params = WhiteBoxParams()
    assert params.generator.width == 32 and params.train.disc_width == 32
    assert count_parameters(WhiteBox.build_generator(params)) == 1_467_075
    assert count_parameters(Discriminator(32, in_channels=3)) == 287_137  # surface
    assert count_parameters(Discriminator(32, in_channels=1)) == 287_137 - 2 * 32 * 9  # texture: 1-channel gray


def test_paper_profile_is_valid_and_at_paper_settings():
    params = load_run_params(ROOT / "pipeline/profiles/whitebox-paper-gpu.yaml")
    assert params.model.name == "whitebox"
    assert method_params(params) == WhiteBoxParams()  # the profile spells out the defaults, which are the paper's
    assert params.train.batch_size == 16 and params.resize.size == 256


def test_shapes_and_range():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 44) * 2 - 1
    y = Generator(4, 1)(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert Discriminator(4, 3)(x).shape == (2, 1, 4, 6)  # patch map at 1/8
    assert Discriminator(4, 1)(x[:, :1]).shape == (2, 1, 4, 6)


# --- guided filter --------------------------------------------------------------------------


def _window_mean(x: np.ndarray, i: int, j: int, r: int) -> float:
    h, w = x.shape
    return x[max(i - r, 0) : min(i + r + 1, h), max(j - r, 0) : min(j + r + 1, w)].mean()


def per_pixel_guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s algorithm written with explicit loops over every pixel's (clipped) window."""
    h, w = guide.shape
    a, b = np.zeros((h, w)), np.zeros((h, w))
    for i, j in itertools.product(range(h), range(w)):
        window = (slice(max(i - r, 0), min(i + r + 1, h)), slice(max(j - r, 0), min(j + r + 1, w)))
        gi, pi = guide[window].ravel(), src[window].ravel()
        mean_i, mean_p = gi.mean(), pi.mean()
        cov = (gi * pi).mean() - mean_i * mean_p
        var = (gi * gi).mean() - mean_i**2
        a[i, j] = cov / (var + eps)
        b[i, j] = mean_p - a[i, j] * mean_i
    out = np.zeros((h, w))
    for i, j in itertools.product(range(h), range(w)):
        out[i, j] = _window_mean(a, i, j, r) * guide[i, j] + _window_mean(b, i, j, r)
    return out


@pytest.mark.parametrize(("r", "eps"), [(1, 1e-2), (2, 2e-1), (5, 2e-1)])  # r 5: the running-sum box mean
def test_guided_filter_matches_per_pixel_reference(r, eps):
    rng = np.random.default_rng(0)
    guide = rng.uniform(-1, 1, (2, 3, 9, 11))
    src = rng.uniform(-1, 1, (2, 3, 9, 11))
    out = guided_filter(torch.from_numpy(guide), torch.from_numpy(src), r, eps).numpy()
    for n, c in itertools.product(range(2), range(3)):
        expected = per_pixel_guided_filter(guide[n, c], src[n, c], r, eps)
        assert np.abs(out[n, c] - expected).max() < 1e-5


def test_box_mean_counts_only_pixels_inside():
    ones = torch.ones(1, 1, 5, 6, dtype=torch.float64)
    assert torch.allclose(box_mean(ones, 2), ones)  # border windows are divided by their own size
    x = torch.arange(9, dtype=torch.float64).view(1, 1, 3, 3)
    assert box_mean(x, 1)[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 3 + 4) / 4)


@pytest.mark.parametrize(("shape", "r"), [((2, 3, 9, 11), 3), ((1, 2, 64, 64), 5), ((1, 1, 3, 600), 4)])
def test_running_sum_box_mean_equals_the_average_pool(shape, r):
    """From r = 3 box_mean takes running sums (fp32, fp64 along the 600-pixel axis): the values
    of one clipped average pool, in the input's dtype."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(r)) * 2 - 1
    pooled = torch.nn.functional.avg_pool2d(x.double(), 2 * r + 1, stride=1, padding=r, count_include_pad=False)
    mean = box_mean(x, r)
    assert mean.dtype == torch.float32 and mean.shape == x.shape
    assert (mean.double() - pooled).abs().max().item() < 1e-6


def test_guided_filter_gradcheck():
    generator = torch.Generator().manual_seed(0)
    guide = torch.rand(1, 2, 5, 6, dtype=torch.float64, generator=generator).requires_grad_()
    src = torch.rand(1, 2, 5, 6, dtype=torch.float64, generator=generator).requires_grad_()
    assert torch.autograd.gradcheck(lambda g, s: guided_filter(g, s, 1, 1e-2), (guide, src))
    assert torch.autograd.gradcheck(lambda x: guided_filter(x, x, 2, 2e-1), (guide,))
    assert torch.autograd.gradcheck(lambda x: guided_filter(x, x, 3, 2e-1), (guide,))


# --- representations and losses -------------------------------------------------------------


def test_random_gray_weights_stay_in_their_ranges():
    generator = torch.Generator().manual_seed(0)
    draws = np.array([random_gray_weights(generator) for _ in range(2000)])
    for column, (lo, hi) in enumerate(GRAY_RANGES.values()):  # r, g, b
        assert lo <= draws[:, column].min() and draws[:, column].max() <= hi
        assert draws[:, column].min() < lo + 0.01 and draws[:, column].max() > hi - 0.01  # the whole range is used
    assert GRAY_RANGES == {"r": (0.199, 0.399), "g": (0.487, 0.687), "b": (0.014, 0.214)}


def test_gray_divides_by_the_weight_sum():
    images = torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1)
    gray = to_gray(images, (0.3, 0.6, 0.1))
    assert gray.shape == (1, 1, 1, 1) and gray.item() == pytest.approx((0.3 - 0.6 + 0.05) / 1.0)
    assert torch.allclose(to_gray(torch.ones(2, 3, 4, 4), (0.2, 0.5, 0.1)), torch.ones(2, 1, 4, 4))


def test_reference_normalisations():
    image = torch.tensor([[0.0, 1.0], [3.0, 5.0]]).view(1, 1, 2, 2)
    # mean(dy^2) = (9 + 16) / 2, mean(dx^2) = (1 + 4) / 2, divided by 3 H W = 12
    assert tv_loss(image).item() == pytest.approx((12.5 + 2.5) / 12)
    a, b = torch.zeros(2, 4, 3, 5), torch.full((2, 4, 3, 5), 2.0)
    assert feature_l1(a, b).item() == pytest.approx(2.0 / (4 * 3 * 5))


# --- the method -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def features():
    with pytest.warns(RandomWeightsWarning):
        return load_vgg(VggParams(allow_random=True, seed=0))


def _tiny(features, **train):
    params = WhiteBoxParams(generator=GeneratorParams(width=4, n_blocks=1), train=TrainParams(disc_width=4, workers=2, **train))
    torch.manual_seed(0)
    return WhiteBox(params, features, torch.device("cpu"))


def _batch(n=2, size=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(n, 3, size, size, generator=generator) * 2 - 1 for name in ("photo", "cartoon")}


@pytest.mark.parametrize("superpixel", ["slic", "felzenszwalb"])
def test_train_step_reports_every_term_and_the_weighted_sum(features, superpixel):
    weights = {"tv_weight": 3e3, "surface_weight": 0.3, "texture_weight": 2.0, "content_weight": 50.0, "structure_weight": 70.0}
    method = _tiny(features, superpixel=superpixel, n_segments=8, **weights)
    method.setup("train", epochs=1, steps_per_epoch=1)
    assert set(method.networks) == {"generator", "surface_discriminator", "texture_discriminator"}
    losses = method.step("train", _batch())
    assert set(losses) == set(TERMS)
    assert all(v.ndim == 0 and torch.isfinite(v) and not v.requires_grad for v in losses.values())
    expected = (
        weights["tv_weight"] * losses["tv"]
        + weights["surface_weight"] * losses["g_surface"]
        + weights["texture_weight"] * losses["g_texture"]
        + weights["content_weight"] * losses["content"]
        + weights["structure_weight"] * losses["structure"]
    )
    assert losses["g_total"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses["d_total"].item() == pytest.approx((losses["d_surface"] + losses["d_texture"]).item(), rel=1e-6)


def test_without_a_structure_term_nothing_is_segmented(features, monkeypatch):
    import cartoon.methods.whitebox

    def no_pool(*args, **kwargs):
        raise AssertionError("a superpixel pool was built although structure_weight is 0")

    monkeypatch.setattr(cartoon.methods.whitebox, "StructurePool", no_pool)
    weights = {"tv_weight": 3e3, "surface_weight": 0.3, "texture_weight": 2.0, "content_weight": 50.0}
    method = _tiny(features, structure_weight=0.0, **weights)
    method.setup("train", epochs=1, steps_per_epoch=1)
    assert method.structure_pool is None
    losses = method.step("train", _batch())
    assert set(losses) == set(TERMS) - {"structure"}  # no column that would always read 0
    expected = 3e3 * losses["tv"] + 0.3 * losses["g_surface"] + 2.0 * losses["g_texture"] + 50.0 * losses["content"]
    assert losses["g_total"].item() == pytest.approx(expected.item(), rel=1e-5)
    method.close()


def test_chroma_term_is_the_uv_l1_to_the_photo_and_enters_the_sum(features):
    """chroma_weight (not the paper's): L1 between the U and V channels of output and photo; a
    pure brightness change costs nothing, a hue change does; off (no column) at 0."""
    photo = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    assert chroma_l1(photo, photo).item() == 0
    gray, brighter = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert chroma_l1(brighter, gray).item() == pytest.approx(0, abs=1e-6)  # U and V of grays are 0
    greener = gray.clone()
    greener[:, 1] = 0.5  # G up by 0.25 on the [0, 1] scale: U -0.0722, V -0.1287
    assert chroma_l1(greener, gray).item() == pytest.approx((0.28886916 + 0.51496512) * 0.25 / 2, rel=1e-5)

    weights = {"tv_weight": 3e3, "surface_weight": 0.3, "texture_weight": 2.0, "content_weight": 50.0, "structure_weight": 0.0}
    method = _tiny(features, chroma_weight=7.0, **weights)
    method.setup("train", epochs=1, steps_per_epoch=1)
    losses = method.step("train", _batch())
    assert set(losses) == set(TERMS) - {"structure"} | {"chroma"} and losses["chroma"] > 0
    expected = 3e3 * losses["tv"] + 0.3 * losses["g_surface"] + 2.0 * losses["g_texture"] + 50.0 * losses["content"] + 7.0 * losses["chroma"]
    assert losses["g_total"].item() == pytest.approx(expected.item(), rel=1e-5)
    method.close()


def test_pretrain_optimises_l1_reconstruction(features):
    method = _tiny(features)
    method.setup("pretrain", epochs=1, steps_per_epoch=1)
    batch = _batch()
    with torch.no_grad():
        expected = (method.generator(batch["photo"]) - batch["photo"]).abs().mean().item()
    losses = method.step("pretrain", batch)
    assert set(losses) == {"reconstruction"}  # no VGG pass: only the pixel L1 is computed
    assert losses["reconstruction"].item() == pytest.approx(expected, rel=1e-6)
    assert method.optimizers["generator"].defaults["betas"] == (0.5, 0.99)


def test_inference_step_is_the_test_time_guided_filter(tmp_path):
    from cartoon.artifacts import load_cartoonizer, save_generator
    from cartoon.methods.cartoongan import CartoonGAN

    torch.manual_seed(0)
    generator = Generator(4, 1).eval()
    photo = torch.rand(2, 3, 32, 36) * 2 - 1
    with torch.no_grad():
        raw = generator(photo)
        out = WhiteBox.infer(generator, photo)
    assert (out - raw).abs().max() > 1e-3  # differs from the raw generator output
    torch.testing.assert_close(out, guided_filter(photo, raw, r=1, eps=5e-3))
    # the saved model carries the step: what evaluate and the registered model run
    params = WhiteBoxParams.model_validate({"generator": {"width": 4, "n_blocks": 1}})
    save_generator(tmp_path, generator, {"method": "whitebox", "params": params.model_dump(mode="json"), "size_multiple": 4})
    cartoonizer, _ = load_cartoonizer(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(cartoonizer(photo), out)
        assert torch.equal(CartoonGAN.infer(generator, photo), raw)  # a method without a step: the generator alone
    # test_filter: false (the dehaze profile) saves a model whose step is the raw output
    unfiltered = params.model_copy(update={"generator": params.generator.model_copy(update={"test_filter": False})})
    save_generator(tmp_path / "raw", generator, {"method": "whitebox", "params": unfiltered.model_dump(mode="json"), "size_multiple": 4})
    cartoonizer, _ = load_cartoonizer(tmp_path / "raw")
    with torch.no_grad():
        torch.testing.assert_close(cartoonizer(photo), raw)

import copy
from pathlib import Path

import pytest
import torch

from cartoon.errors import UsageError
from cartoon.methods import (
    available_methods,
    get_method,
    load_run_params,
    method_params,
)
from cartoon.methods.animeganv2 import (
    PRESETS,
    AnimeGANv2,
    AnimeGANv2Params,
    Discriminator,
    Generator,
    TrainParams,
    colour_loss,
    gram,
    rgb_to_yuv,
    tv_loss,
)
from cartoon.methods.base import count_parameters
from cartoon.params import Params, VggParams
from cartoon.vgg import RandomWeightsWarning, load_vgg

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SETS = ("photo", "cartoon", "cartoon_gray", "smooth_gray")
G_TERMS = ("g_adv", "content", "style", "colour", "tv")
D_TERMS = ("d_real", "d_fake", "d_gray", "d_smooth")


def test_registry_finds_animeganv2():
    assert available_methods()["animeganv2"] is AnimeGANv2
    assert get_method("animeganv2") is AnimeGANv2
    assert AnimeGANv2.sets == {"pretrain": ("photo",), "train": TRAIN_SETS}
    assert AnimeGANv2.size_multiple == 4 and AnimeGANv2.content_layer == "conv4_4"


def test_paper_generator_parameter_count():
    params = AnimeGANv2Params()
    assert params.generator.width == 32
    assert count_parameters(AnimeGANv2.build_generator(params)) == 2_143_552


def test_paper_discriminator_parameter_count():
    assert count_parameters(Discriminator(TrainParams().disc_width)) == 1_128_800


def test_paper_profile_is_valid_and_at_paper_settings():
    params = load_run_params(ROOT / "pipeline/profiles/animeganv2-paper-gpu.yaml")
    assert params.model.name == "animeganv2"
    method = method_params(params)
    assert method == AnimeGANv2Params()  # the profile spells out the defaults, which are the paper's
    assert count_parameters(AnimeGANv2.build_generator(method)) == 2_143_552


def test_shapes():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 44) * 2 - 1
    y = Generator(4, 1)(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1
    assert Discriminator(4)(x).shape == (2, 1, 8, 11)  # patch map at 1/4 of the input


def test_gram_by_hand():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    expected = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4
    assert torch.allclose(gram(features), expected.unsqueeze(0))
    assert gram(torch.randn(3, 5, 4, 6)).shape == (3, 5, 5)


def test_yuv_of_primaries_and_white():
    y_row = (0.299, 0.587, 0.114)
    u_row = (-0.14714119, -0.28886916, 0.43601035)
    v_row = (0.61497538, -0.51496512, -0.10001026)
    colours = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1]])  # red, green, blue, white in [-1, 1]
    yuv = rgb_to_yuv(colours.view(4, 3, 1, 1)).view(4, 3)
    for i in range(3):
        assert yuv[i].tolist() == pytest.approx([y_row[i], u_row[i], v_row[i]], abs=1e-6)
    assert yuv[3].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    black = rgb_to_yuv(-torch.ones(1, 3, 2, 2))
    assert torch.allclose(black, torch.zeros_like(black))


def test_colour_loss_l1_on_y_huber_on_u_and_v():
    # Two pixels whose YUV differences are chosen: |d|<1 is quadratic (d^2/2), |d|>1 linear (|d|-1/2).
    diff_yuv = torch.tensor([[0.5, 0.5, 3.0], [-0.2, -2.0, 0.1]])  # pixels x (dY, dU, dV)
    matrix = rgb_to_yuv(torch.eye(3).view(3, 3, 1, 1) * 2 - 1).view(3, 3).T  # columns: YUV of R, G, B
    diff_rgb = torch.linalg.solve(matrix, diff_yuv.T) * 2  # [-1, 1] images: x -> (x + 1) / 2
    photo = torch.zeros(1, 3, 1, 2)
    generated = photo + diff_rgb.view(1, 3, 1, 2)
    y = (0.5 + 0.2) / 2
    u = (0.5 * 0.5**2 + (2.0 - 0.5)) / 2
    v = ((3.0 - 0.5) + 0.5 * 0.1**2) / 2
    assert colour_loss(generated, photo).item() == pytest.approx(y + u + v, rel=1e-5)
    assert colour_loss(photo, photo).item() == 0


def test_tv_by_hand():
    image = torch.tensor([[0.0, 1.0], [3.0, 5.0]]).view(1, 1, 2, 2)
    # vertical differences 3, 4: mean square 12.5, halved; horizontal 1, 2: mean square 2.5, halved
    assert tv_loss(image).item() == pytest.approx(12.5 / 2 + 2.5 / 2)
    assert tv_loss(torch.ones(2, 3, 4, 4)).item() == 0


def test_presets_resolve_and_explicit_values_win():
    default = TrainParams().weights()
    assert (default.adv, default.content, default.style, default.colour, default.tv) == (300, 1.5, 2.5, 15, 1)
    assert (default.real, default.fake, default.gray, default.smooth) == (1.2, 1.2, 1.2, 0.8)
    paprika = TrainParams(preset="paprika").weights()
    assert tuple(paprika)[1:] == (2.0, 0.6, 50.0, 0.1, 1.0, 1.0, 1.0, 0.005)
    assert tuple(TrainParams(preset="shinkai").weights())[1:] == tuple(PRESETS["shinkai"])
    override = TrainParams(preset="paprika", style_weight=7.0, smooth_weight=0.0).weights()
    assert override.style == 7.0 and override.smooth == 0.0 and override.colour == 50.0


def test_unknown_preset_is_rejected_naming_the_key():
    params = Params.model_validate({"model": {"name": "animeganv2"}, "animeganv2": {"train": {"preset": "ghibli"}}})
    with pytest.raises(UsageError, match=r"animeganv2\.train\.preset"):
        method_params(params)


@pytest.fixture(scope="module")
def features():
    with pytest.warns(RandomWeightsWarning):
        return load_vgg(VggParams(allow_random=True), AnimeGANv2.content_layer)


@pytest.fixture
def method(features):
    torch.manual_seed(0)
    params = AnimeGANv2Params.model_validate(
        {"generator": {"width": 4, "n_blocks": 1}, "train": {"disc_width": 4}, "pretrain": {"lr": 1e-3}}
    )
    return AnimeGANv2(params, features, torch.device("cpu"))


def _train_batch(n: int = 2, size: int = 16) -> dict[str, torch.Tensor]:
    return {name: torch.rand(n, 3, size, size) * 2 - 1 for name in TRAIN_SETS}



def test_train_step_reports_every_term_and_updates_both_networks(method):
    method.setup("train", epochs=2, steps_per_epoch=2)
    assert set(method.networks) == {"generator", "discriminator"}
    assert method.optimizers["generator"].param_groups[0]["lr"] == 2e-5
    assert method.optimizers["discriminator"].param_groups[0]["lr"] == 4e-5
    torch.manual_seed(2)
    batch = _train_batch()
    generator_before = copy.deepcopy(method.generator)
    d_before = [p.clone() for p in method.discriminator.parameters()]

    losses = method.step("train", batch)

    assert set(losses) == {*D_TERMS, "d_total", *G_TERMS, "g_total"}
    assert all(v.ndim == 0 and not v.requires_grad for v in losses.values())
    w = method.params.train.weights()
    expected_d = w.adv * (w.real * losses["d_real"] + w.fake * losses["d_fake"] + w.gray * losses["d_gray"] + w.smooth * losses["d_smooth"])
    assert torch.isclose(losses["d_total"], expected_d)
    expected_g = (
        w.adv * losses["g_adv"] + w.content * losses["content"] + w.style * losses["style"]
        + w.colour * losses["colour"] + w.tv * losses["tv"]
    )
    assert torch.isclose(losses["g_total"], expected_g)
    with torch.no_grad():  # the content term is the shared content loss of the generator before its update
        generated = generator_before(batch["photo"])
        assert torch.isclose(losses["content"], method.content_loss(generated, batch["photo"]), rtol=1e-4)
        assert torch.isclose(losses["tv"], tv_loss(generated), rtol=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(generator_before.parameters(), method.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, method.discriminator.parameters()))


def test_preset_changes_the_weights_used(method):
    params = method.params.model_copy(update={"train": TrainParams(disc_width=4, preset="paprika", adv_weight=0.0)})
    other = AnimeGANv2(params, method.features, torch.device("cpu"))
    other.setup("train", epochs=1, steps_per_epoch=1)
    losses = other.step("train", _train_batch())
    assert losses["d_total"].item() == 0
    expected = 2.0 * losses["content"] + 0.6 * losses["style"] + 50.0 * losses["colour"] + 0.1 * losses["tv"]
    assert torch.isclose(losses["g_total"], expected)


def test_discriminator_gradient_clipping(method):
    params = method.params.model_copy(update={"train": TrainParams(disc_width=4, d_grad_clip=1e-3)})
    other = AnimeGANv2(params, method.features, torch.device("cpu"))
    other.setup("train", epochs=1, steps_per_epoch=1)
    original = other.optimise
    norms = {}

    def spy(name, loss):
        original(name, loss)
        if name == "discriminator":
            grads = [p.grad for p in other.discriminator.parameters() if p.grad is not None]
            norms[name] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()

    other.optimise = spy
    other.step("train", _train_batch())
    assert 0 < norms["discriminator"] <= 1e-3 * 1.001

"""Each loss term of each method's train step is computed on the image sets its paper says.

Feeding noise to every set and checking that the total is the sum of the returned terms cannot
tell the sets apart. Here every set is structured so that each term has a distinct value known
by hand, and the networks are stand-ins whose outputs are known functions of their inputs:

* cartoons: two flat colour blocks per image; every row steps once, by +1, +1, -1 in R, G, B;
* edge-smoothed cartoons: the same blurred along rows by [1/4, 1/2, 1/4];
* grayscale sets: 0.299 R + 0.587 G + 0.114 B in all three channels;
* photos: uniform noise; the stand-in generator returns photo / 2;
* discriminators score an image K x its edge energy (squared horizontal steps summed along a
  row, averaged over rows and channels): 1 for a cartoon, 3/8 blurred, 0.772^2 in gray;
* the VGG stand-in is the identity, so content terms compare pixels.

Feeding a term another set than the one named here changes its value and fails a test.
"""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cartoon.guided_filter import guided_filter
from cartoon.methods import animeganv2, available_methods, cartoongan, whitebox
from cartoon.methods.animeganv2 import AnimeGANv2, colour_loss, gram
from cartoon.checkpoints import FiniteGuard
from cartoon.methods.base import NonFiniteLoss
from cartoon.methods.cartoongan import CartoonGAN
from cartoon.methods.whitebox import WhiteBox, surface, to_gray
from tests.conftest import TINY_PARAMS

SIZE = 16
K = 2.0  # the stand-in discriminators' score per unit of edge energy
LUMA = (0.299, 0.587, 0.114)
# (left, right) colour of each cartoon: every channel steps by +1, +1, -1 from left to right.
CARTOON_COLOURS = [((-0.6, -0.2, 0.3), (0.4, 0.8, -0.7)), ((-0.9, -0.5, 0.8), (0.1, 0.5, -0.2))]
GRAY_STEP = LUMA[0] + LUMA[1] - LUMA[2]  # the gray level's step in every row: 0.772
BLUR_ENERGY = 1 / 16 + 1 / 4 + 1 / 16  # a unit step blurred by [1/4, 1/2, 1/4]: steps 1/4, 1/2, 1/4


def colour_blocks(colours: list[tuple[tuple[float, ...], tuple[float, ...]]]) -> torch.Tensor:
    images = torch.empty(len(colours), 3, SIZE, SIZE)
    for image, (left, right) in zip(images, colours):
        image[:, :, : SIZE // 2] = torch.tensor(left).view(3, 1, 1)
        image[:, :, SIZE // 2 :] = torch.tensor(right).view(3, 1, 1)
    return images


def blur_rows(images: torch.Tensor) -> torch.Tensor:
    padded = F.pad(images, (1, 1, 0, 0), mode="replicate")
    return (padded[..., :-2] + 2 * padded[..., 1:-1] + padded[..., 2:]) / 4


def luma(rgb):
    """0.299 R + 0.587 G + 0.114 B of three numbers, or of three channel tensors."""
    return sum(weight * value for weight, value in zip(LUMA, rgb))


def gray3(images: torch.Tensor) -> torch.Tensor:
    return luma(images.split(1, dim=1)).expand(-1, 3, -1, -1)


def edge_energy(images: torch.Tensor) -> torch.Tensor:
    """Per image: squared horizontal steps summed along each row, averaged over rows and channels."""
    return (images[..., 1:] - images[..., :-1]).pow(2).sum(-1).mean(dim=(1, 2))


CARTOONS = colour_blocks(CARTOON_COLOURS)
SMOOTHED = blur_rows(CARTOONS)
PHOTOS = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
SETS = {
    "photo": PHOTOS,
    "cartoon": CARTOONS,
    "smooth": SMOOTHED,
    "cartoon_gray": gray3(CARTOONS),
    "smooth_gray": gray3(SMOOTHED),
}


class EdgeScorer(nn.Module):
    """Stand-in discriminator: one score per image, K x its edge energy. Its parameter enters
    multiplied by 0, so the discriminator loss has something to optimise yet scores never move."""

    def __init__(self, *args: int) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (K * edge_energy(images) + 0 * self.unused).view(-1, 1, 1, 1)


class HalfGenerator(nn.Module):
    """Stand-in generator: G(p) = p / 2 (a parameter, so the generator loss can be optimised)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, photos: torch.Tensor) -> torch.Tensor:
        return self.scale * photos


def _with_stand_ins(monkeypatch, module, method_cls, params: dict):
    """A method in its train phase whose discriminators, generator and VGG are the stand-ins."""
    monkeypatch.setattr(module, "Discriminator", EdgeScorer)
    method = method_cls(method_cls.Params.model_validate(params), nn.Identity(), torch.device("cpu"))
    method.generator = method.networks["generator"] = HalfGenerator()
    method.setup("train", epochs=1, steps_per_epoch=1)
    return method


def _assert_terms(losses: dict[str, torch.Tensor], expected: dict[str, float]) -> None:
    assert set(expected) <= set(losses)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(float(value), rel=1e-5), name


def test_structured_sets_have_the_hand_computed_edge_energies():
    assert edge_energy(CARTOONS).tolist() == pytest.approx([1, 1])
    assert edge_energy(SMOOTHED).tolist() == pytest.approx([BLUR_ENERGY] * 2)
    assert edge_energy(gray3(CARTOONS)).tolist() == pytest.approx([GRAY_STEP**2] * 2)
    assert edge_energy(gray3(SMOOTHED)).tolist() == pytest.approx([GRAY_STEP**2 * BLUR_ENERGY] * 2)
    assert EdgeScorer()(CARTOONS).shape == (2, 1, 1, 1)


def test_cartoongan_discriminator_promotes_edges_and_generator_keeps_content(monkeypatch):
    method = _with_stand_ins(monkeypatch, cartoongan, CartoonGAN, {"generator": {"width": 4, "n_blocks": 1}})
    losses = method.step("train", {name: SETS[name] for name in CartoonGAN.sets["train"]})

    generated = K * edge_energy(PHOTOS / 2)
    expected = {
        "d_real": math.log1p(math.exp(-K)),  # cartoons (energy 1) labelled real: BCE = softplus(-score)
        "d_edge": math.log1p(math.exp(K * BLUR_ENERGY)),  # edge-smoothed cartoons labelled fake: softplus(score)
        "d_fake": F.softplus(generated).mean(),
        "g_adv": F.softplus(-generated).mean(),
        "content": PHOTOS.abs().mean() / 2,  # |G(p) - p| with G(p) = p / 2
    }
    expected["d_total"] = expected["d_real"] + expected["d_edge"] + expected["d_fake"]
    expected["g_total"] = expected["g_adv"] + method.params.train.content_weight * expected["content"]
    _assert_terms(losses, expected)


def test_animeganv2_style_is_of_the_gray_cartoons_and_d_sees_each_set_once(monkeypatch):
    method = _with_stand_ins(monkeypatch, animeganv2, AnimeGANv2, {"generator": {"width": 4, "n_blocks": 1}})
    losses = method.step("train", {name: SETS[name] for name in AnimeGANv2.sets["train"]})

    generated = PHOTOS / 2
    scores = K * edge_energy(generated)
    # A gray image's three feature channels are equal, so every entry of its Gram matrix is
    # mean(gray^2) / 3; half of each cartoon is one gray level, half the other.
    mean_squares = [(luma(left) ** 2 + luma(right) ** 2) / 2 for left, right in CARTOON_COLOURS]
    gray_gram = (torch.tensor(mean_squares) / 3).view(-1, 1, 1).expand(-1, 3, 3)
    expected = {  # LSGAN: mean (score - label)^2
        "d_real": (K * 1 - 1) ** 2,  # colour cartoons, real
        "d_fake": scores.pow(2).mean(),
        "d_gray": (K * GRAY_STEP**2) ** 2,  # gray cartoons, fake
        "d_smooth": (K * GRAY_STEP**2 * BLUR_ENERGY) ** 2,  # gray edge-smoothed cartoons, fake
        "g_adv": (scores - 1).pow(2).mean(),
        "content": PHOTOS.abs().mean() / 2,
        "style": (gram(generated) - gray_gram).abs().mean(),
        "colour": colour_loss(generated, PHOTOS),
        "tv": animeganv2.tv_loss(generated),
    }
    w = method.weights
    expected["d_total"] = w.adv * (
        w.real * expected["d_real"] + w.fake * expected["d_fake"] + w.gray * expected["d_gray"] + w.smooth * expected["d_smooth"]
    )
    expected["g_total"] = (
        w.adv * expected["g_adv"]
        + w.content * expected["content"]
        + w.style * expected["style"]
        + w.colour * expected["colour"]
        + w.tv * expected["tv"]
    )
    _assert_terms(losses, expected)


def test_whitebox_representations_are_of_the_right_images(monkeypatch):
    gray_weights = (0.3, 0.6, 0.1)  # inside GRAY_RANGES; a cartoon's gray steps by (0.3 + 0.6 - 0.1) / 1 = 0.8
    monkeypatch.setattr(whitebox, "random_gray_weights", lambda: gray_weights)
    structured = []

    def one_region(images, *args):
        """Stand-in superpixels: each image painted with its mean colour."""
        structured.append(images.detach().clone())
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)

    method = _with_stand_ins(monkeypatch, whitebox, WhiteBox, {"generator": {"width": 4, "n_blocks": 1}})
    monkeypatch.setattr(method.structure_pool, "submit", lambda images: lambda: one_region(images))
    t = method.params.train
    losses = method.step("train", {name: SETS[name] for name in WhiteBox.sets["train"]})

    output = guided_filter(PHOTOS, PHOTOS / 2, t.output_radius, t.output_eps)  # G(p) filtered, guided by the photo
    real_surface = K * edge_energy(surface(CARTOONS, t.surface_radius, t.surface_eps))
    fake_surface = K * edge_energy(surface(output, t.surface_radius, t.surface_eps))
    fake_texture = K * edge_energy(to_gray(output, gray_weights))
    assert 0 < real_surface.max() < K  # the surface filter softens the cartoons' edges
    features = 3 * SIZE * SIZE  # White-box divides its VGG L1 terms by the feature map's c h w
    expected = {
        "d_surface": 0.5 * ((real_surface - 1).pow(2).mean() + fake_surface.pow(2).mean()),
        "d_texture": 0.5 * ((K * 0.8**2 - 1) ** 2 + fake_texture.pow(2).mean()),
        "g_surface": (fake_surface - 1).pow(2).mean(),
        "g_texture": (fake_texture - 1).pow(2).mean(),
        "content": (PHOTOS - output).abs().mean() / features,
        "structure": (output.mean(dim=(2, 3), keepdim=True) - output).abs().mean() / features,
        "tv": whitebox.tv_loss(output),
    }
    expected["d_total"] = expected["d_surface"] + expected["d_texture"]
    expected["g_total"] = (
        t.tv_weight * expected["tv"]
        + t.surface_weight * expected["g_surface"]
        + t.texture_weight * expected["g_texture"]
        + t.content_weight * expected["content"]
        + t.structure_weight * expected["structure"]
    )
    _assert_terms(losses, expected)
    assert len(structured) == 1 and torch.allclose(structured[0], output)  # superpixels of the output, not of the photo


# --- the NaN guard in the train phase ---------------------------------------------------------


class NaNFeatures(nn.Module):
    """VGG stand-in that turns every generator content term into NaN (no discriminator loss uses VGG)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * float("nan")


def _tiny(name: str, features: nn.Module):
    method_cls = available_methods()[name]
    params = method_cls.Params.model_validate({key: TINY_PARAMS[name][key] for key in ("generator", "train")})
    torch.manual_seed(0)
    method = method_cls(params, features, torch.device("cpu"))
    method.setup("train", epochs=1, steps_per_epoch=1)
    return method


def _guarded_step(method, batch) -> FiniteGuard:
    """One train step watched by the loop's guard, as ``cartoon.training`` runs it."""
    guard = FiniteGuard()
    guard.watch(method.step("train", batch))
    return guard


@pytest.mark.parametrize("name", list(available_methods()))
def test_nan_photo_in_train_step_is_caught_by_the_guard_naming_every_term(name):
    """The step itself runs on without reading the loss back (no wait for the device); the guard
    names the non-finite terms at its check, which the loop runs before anything is saved."""
    method = _tiny(name, nn.Identity())
    batch = {key: SETS[key] for key in method.sets["train"]} | {"photo": torch.full_like(PHOTOS, float("nan"))}
    guard = _guarded_step(method, batch)
    with pytest.raises(NonFiniteLoss, match=r"g_total.* at step 1$"):
        guard.verify(1)


@pytest.mark.parametrize("name", list(available_methods()))
def test_nan_generator_loss_is_caught_and_finite_terms_are_not_named(name):
    method = _tiny(name, NaNFeatures())
    guard = _guarded_step(method, {key: SETS[key] for key in method.sets["train"]})
    with pytest.raises(NonFiniteLoss, match="g_total") as caught:
        guard.verify(1)
    assert "d_total" not in str(caught.value)  # the discriminators' losses use no VGG and stayed finite


def test_guard_names_the_steps_since_its_last_check_and_then_starts_afresh():
    guard = FiniteGuard(verified_through=4)
    guard.watch({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    guard.verify(5)
    for value in (1.0, float("inf"), 1.0):
        guard.watch({"a": torch.tensor(value), "b": torch.tensor(2.0)})
    with pytest.raises(NonFiniteLoss, match=r"in a at a step from 6 to 8"):
        guard.verify(8)
    guard.watch({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    guard.verify(9)  # counts were reset at the check

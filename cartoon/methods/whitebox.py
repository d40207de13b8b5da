"""White-box cartoonization: networks, representations, losses and training steps.

Wang and Yu. "Learning to Cartoonize Using White-box Cartoon Representations", CVPR 2020.

The output is pulled towards three "white-box" representations of cartoons:
  surface   the self-guided filter guided_filter(x, x, r=5, eps=0.2) (cartoon.guided_filter),
            judged by the surface discriminator against the same filter of real cartoons;
  structure the superpixel image of the output (cartoon.superpixel: SLIC regions with their
            mean colour by default, or Felzenszwalb + selective-search merging + adaptive
            colouring), used as a VGG target, no gradient; SLIC runs batched on the training
            GPU when there is one, otherwise (and felzenszwalb always) on the CPU, on a pool
            of threads kept for the phase, overlapping the discriminators' update;
  texture   a random grayscale of the output, weights per batch r ~ U[0.199, 0.399],
            g ~ U[0.487, 0.687], b ~ U[0.014, 0.214], gray = (rR + gG + bB) / (r + g + b)
            (the reference divides by the weight sum, so the gray stays in [-1, 1]); the same
            weights for the output and the cartoons of a batch; judged by the texture
            discriminator, which here takes the 1-channel gray (as the reference does).

Generator (U-Net, no normalisation, LeakyReLU 0.2, zero padding), width w (paper 32):
  conv7 3->w ; [conv3 s2 w->w, conv3 w->2w] ; [conv3 s2 2w->2w, conv3 2w->4w] ;
  4 residual blocks at 4w (conv3 - LReLU - conv3, added) ; conv3 4w->2w ;
  bilinear x2 + the 2w stage's output -> conv3 2w->2w, conv3 2w->w ;
  bilinear x2 + the first conv's output -> conv3 w->w -> conv7 w->3 -> tanh.
1,467,075 parameters at w = 32. The reference ends without an activation and relies on the
guided filter; users of the reference report colour blotches from out-of-range values, so the
output here goes through tanh (the guided-filtered training output can still leave [-1, 1]
slightly; images are clamped where they become uint8).

Discriminators (spectral norm on every conv, LeakyReLU 0.2): 3 stages [conv3 s2, conv3 s1] at
w, 2w, 4w (paper 32), then a 1x1 conv to one channel: a patch map at 1/8 of the input.
287,137 parameters with a 3-channel input (surface), 286,561 with the texture's 1 channel.

Losses (reference defaults), with VGG19 conv4_4 features of h x w x c:
  G = tv * TV(out) + surface * mean((D_s(gf(out)) - 1)^2) + texture * mean((D_t(gray(out)) - 1)^2)
      + content * L1(VGG(photo), VGG(out)) / (h w c) + structure * L1(VGG(sp(out)), VGG(out)) / (h w c)
  TV(x) = (mean(dy^2) + mean(dx^2)) / (3 H W)   (the reference's normalisations, kept exactly)
  D = 0.5 [mean((D(real) - 1)^2) + mean(D(fake)^2)] for each discriminator; d_total = sum.
out = guided_filter(photo, G(photo), r=1, eps=1e-2). Weights tv 1e4, surface 0.1, texture 1,
content 200, structure 200. Pretraining: L1(G(photo), photo) (no VGG, no guided filter) is the
only term optimised and logged ("reconstruction").
Generator convs start Glorot-uniform with zero biases, the reference's (TensorFlow's) default.
Adam 2e-4, betas (0.5, 0.99) everywhere. The reference updates G then D, recomputing the
output; here D is updated first on the detached output and G then reuses that forward pass
(the order used by the other methods here; one generator pass per step instead of two).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from cartoon.guided_filter import guided_filter
from cartoon.methods import register
from cartoon.methods.base import (
    Batch,
    Method,
    MethodParams,
    PaletteColours,
    Phase,
    input_skip_field,
    lrelu,
    lsgan,
    output_palette,
    palette_field,
    rgb_to_yuv,
    set_requires_grad,
    tanh_output,
)
from cartoon.params import Section
from cartoon.superpixel import StructurePool

# Random grayscale weight ranges (RGB order), from the reference's colour shift.
GRAY_RANGES = {"r": (0.199, 0.399), "g": (0.487, 0.687), "b": (0.014, 0.214)}


class GeneratorParams(Section):
    width: int = Field(32, ge=4, description="channels of the first U-Net stage; every stage scales with it (paper: 32, 1,467,075 parameters)")
    n_blocks: int = Field(4, ge=0, description="residual blocks at the bottleneck (paper: 4)")
    input_skip: bool = input_skip_field()
    palette_colours: PaletteColours = palette_field()
    test_filter: bool = Field(
        True,
        description="true = paper code: inference guided-filters G(photo) by the photo (r=1, eps=5e-3); false = the raw "
        "output, for styles where that smoothing costs detail (the dehaze profile)",
    )


class PretrainParams(Section):
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of the L1 reconstruction pretraining (paper: 2e-4)")
    betas: tuple[float, float] = Field((0.5, 0.99), description="Adam betas (paper: 0.5, 0.99)")


class TrainParams(Section):
    disc_width: int = Field(32, ge=4, description="channels of both discriminators' first stage (paper: 32, 287,137 parameters each with 3 input channels)")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of G and both discriminators (paper: 2e-4)")
    betas: tuple[float, float] = Field((0.5, 0.99), description="Adam betas of G and both discriminators (paper: 0.5, 0.99)")
    tv_weight: float = Field(1e4, ge=0, description="total-variation weight, TV normalised by 3 H W (paper code: 1e4)")
    surface_weight: float = Field(0.1, ge=0, description="surface (guided-filter) adversarial weight of G (paper code: 0.1)")
    texture_weight: float = Field(1.0, ge=0, description="texture (random grayscale) adversarial weight of G (paper code: 1)")
    content_weight: float = Field(200.0, ge=0, description="content weight, L1 of VGG conv4_4 to the photo / (h w c) (paper code: 200)")
    structure_weight: float = Field(200.0, ge=0, description="structure weight, L1 of VGG conv4_4 to the superpixel image / (h w c) (paper code: 200)")
    chroma_weight: float = Field(
        0.0, ge=0, description="not the paper's (0 = off): L1 between the U and V channels (YUV) of G's output and of "
        "the photo, holding hue where the texture discriminator, which sees grayscale, leaves colour free"
    )
    surface_radius: int = Field(5, ge=1, description="radius of the surface representation's self-guided filter (paper code: 5)")
    surface_eps: float = Field(0.2, gt=0, description="eps of the surface representation's guided filter (paper code: 0.2)")
    output_radius: int = Field(1, ge=0, description="radius of the guided filter on G's training output, guided by the photo; 0 = off (paper code: 1)")
    output_eps: float = Field(1e-2, gt=0, description="eps of the output guided filter (paper code: 1e-2)")
    superpixel: Literal["slic", "felzenszwalb"] = Field(
        "slic", description="structure segmentation: slic (regions painted with their mean) | felzenszwalb (selective-search merging, adaptive colouring) (paper code: slic)"
    )
    n_segments: int = Field(200, ge=1, description="superpixels per image (paper: 200)")
    workers: int = Field(4, ge=1, description="CPU threads computing the superpixel images of a batch beside the step (slic on a GPU runs batched there)")


class WhiteBoxParams(MethodParams):
    generator: GeneratorParams = GeneratorParams()
    pretrain: PretrainParams = PretrainParams()
    train: TrainParams = TrainParams()


# --- networks -------------------------------------------------------------------------------


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), lrelu(), _conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """U-Net with additive skips; any input whose sides are multiples of 4 keeps its size."""

    def __init__(
        self, width: int = 32, n_blocks: int = 4, input_skip: bool = False, test_filter: bool = True, palette_colours: int = 0
    ) -> None:
        super().__init__()
        w = width
        self.input_skip = input_skip
        self.test_filter = test_filter  # read by WhiteBox.infer: the setting travels with the saved generator
        self.stem = nn.Sequential(_conv(3, w, 7), lrelu())
        self.down1 = nn.Sequential(_conv(w, w, stride=2), lrelu(), _conv(w, 2 * w), lrelu())
        self.down2 = nn.Sequential(_conv(2 * w, 2 * w, stride=2), lrelu(), _conv(2 * w, 4 * w), lrelu())
        self.blocks = nn.Sequential(*[ResBlock(4 * w) for _ in range(n_blocks)])
        self.bottleneck_out = nn.Sequential(_conv(4 * w, 2 * w), lrelu())
        self.up1 = nn.Sequential(_conv(2 * w, 2 * w), lrelu(), _conv(2 * w, w), lrelu())
        self.up2 = nn.Sequential(_conv(w, w), lrelu(), _conv(w, 3, 7))  # then tanh (forward)
        self.palette = output_palette(palette_colours)
        for layer in self.modules():  # the reference's (TensorFlow's) default: Glorot-uniform kernels, zero biases
            if isinstance(layer, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        if input_skip:
            nn.init.zeros_(self.up2[-1].weight)

    def forward(self, photo: torch.Tensor) -> torch.Tensor:
        x0 = self.stem(photo)
        x1 = self.down1(x0)
        x = self.bottleneck_out(self.blocks(self.down2(x1)))
        x = self.up1(F.interpolate(x, size=x1.shape[2:], mode="bilinear", align_corners=False) + x1)
        change = self.up2(F.interpolate(x, size=x0.shape[2:], mode="bilinear", align_corners=False) + x0)
        return tanh_output(change, photo, self.input_skip)


class Discriminator(nn.Module):
    """Spectral-normalised patch discriminator: LSGAN scores at 1/8 of the input resolution."""

    def __init__(self, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in (width, 2 * width, 4 * width):
            layers += [spectral_norm(_conv(cin, cout, stride=2)), lrelu(), spectral_norm(_conv(cout, cout)), lrelu()]
            cin = cout
        layers.append(spectral_norm(nn.Conv2d(cin, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --- representations and losses -------------------------------------------------------------


def random_gray_weights(generator: torch.Generator | None = None) -> tuple[float, float, float]:
    """(r, g, b) weights of one random grayscale, each uniform in its GRAY_RANGES interval."""
    u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    return tuple(lo + (hi - lo) * x for x, (lo, hi) in zip(u, GRAY_RANGES.values()))  # type: ignore[return-value]


def to_gray(images: torch.Tensor, weights: tuple[float, float, float]) -> torch.Tensor:
    """N,3,H,W RGB -> N,1,H,W: (r R + g G + b B) / (r + g + b)."""
    r, g, b = weights
    return (r * images[:, 0:1] + g * images[:, 1:2] + b * images[:, 2:3]) / (r + g + b)


def surface(images: torch.Tensor, radius: int = 5, eps: float = 0.2) -> torch.Tensor:
    """Surface representation: the self-guided filter of the images."""
    return guided_filter(images, images, radius, eps)


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """The reference's TV: (mean(dy^2) + mean(dx^2)) / (3 H W), in fp32."""
    images = images.float()
    h, w = images.shape[-2:]
    dy = (images[..., 1:, :] - images[..., :-1, :]).pow(2).mean()
    dx = (images[..., :, 1:] - images[..., :, :-1]).pow(2).mean()
    return (dy + dx) / (3 * h * w)


def chroma_l1(output: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the U and V channels (YUV of the [0, 1] images), in fp32."""
    with torch.autocast(output.device.type, enabled=False):
        return (rgb_to_yuv(output.float())[:, 1:] - rgb_to_yuv(photo.float())[:, 1:]).abs().mean()


def feature_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference's VGG loss: mean |a - b| further divided by the feature map's h w c (in fp32)."""
    return (a.float() - b.float()).abs().mean() / (a.shape[1] * a.shape[2] * a.shape[3])


# --- method ---------------------------------------------------------------------------------


INFER_RADIUS, INFER_EPS = 1, 5e-3  # test-time guided filter of the reference code


@register
class WhiteBox(Method):
    name = "whitebox"
    title = "White-box cartoonization"
    reference = "Wang, Yu. Learning to Cartoonize Using White-box Cartoon Representations. CVPR 2020."
    Params = WhiteBoxParams
    params: WhiteBoxParams
    content_layer = "conv4_4"
    size_multiple = 4
    sets = {"pretrain": ("photo",), "train": ("photo", "cartoon")}
    face_batches = True

    @classmethod
    def build_generator(cls, params: WhiteBoxParams) -> nn.Module:
        g = params.generator
        return Generator(g.width, g.n_blocks, g.input_skip, g.test_filter, g.palette_colours)

    @classmethod
    def infer(cls, generator: nn.Module, photo: torch.Tensor) -> torch.Tensor:
        """G(photo) guided-filtered by the photo with the reference code's test-time setting (r=1,
        eps=5e-3), or G(photo) itself when the generator was built with ``test_filter: false``;
        then its palette step (after the filter, which would blend flat colours with the photo's
        texture again)."""
        output = generator(photo)
        return generator.palette(guided_filter(photo, output, INFER_RADIUS, INFER_EPS) if generator.test_filter else output)

    def setup(self, phase: Phase, epochs: int, steps_per_epoch: int) -> None:
        if phase == "pretrain":
            self.setup_pretrain()
            return
        self.schedulers = {}
        t = self.params.train
        self.surface_disc = Discriminator(t.disc_width, 3).to(self.device)
        self.texture_disc = Discriminator(t.disc_width, 1).to(self.device)
        self.networks["surface_discriminator"] = self.surface_disc
        self.networks["texture_discriminator"] = self.texture_disc
        self.optimizers = {
            name: torch.optim.Adam(net.parameters(), lr=t.lr, betas=t.betas) for name, net in self.networks.items()
        }
        # Without a structure term (the dehaze profile) no superpixel is ever segmented.
        self.structure_pool = StructurePool(t.superpixel, t.n_segments, t.workers) if t.structure_weight > 0 else None

    def close(self) -> None:
        if getattr(self, "structure_pool", None) is not None:
            self.structure_pool.close()

    def output(self, photo: torch.Tensor) -> torch.Tensor:
        """The training output: G(photo), guided-filtered by the photo (r=1, eps=1e-2 by default)."""
        t = self.params.train
        raw = self.synced("generator")(photo)
        return raw if t.output_radius == 0 else guided_filter(photo, raw, t.output_radius, t.output_eps)

    def step(self, phase: Phase, batch: Batch) -> dict[str, torch.Tensor]:
        photo = batch["photo"]
        if phase == "pretrain":
            generated = self.synced("generator")(photo)
            reconstruction = (generated.float() - photo).abs().mean()
            self.optimise("generator", reconstruction)  # pixel L1 only, as in the reference
            return {"reconstruction": reconstruction.detach()}

        t = self.params.train
        cartoon = batch["cartoon"]
        output = self.output(photo)
        # segmented while the discriminators update
        pending_target = self.structure_pool.submit(output) if self.structure_pool is not None else None
        weights = random_gray_weights()  # one grayscale per batch, shared by output and cartoons
        with torch.no_grad():
            real_surface = surface(cartoon, t.surface_radius, t.surface_eps)
            real_texture = to_gray(cartoon, weights)
        fake_surface = surface(output, t.surface_radius, t.surface_eps)
        fake_texture = to_gray(output, weights)

        set_requires_grad(self.surface_disc, True)
        set_requires_grad(self.texture_disc, True)
        surface_disc, texture_disc = self.synced("surface_discriminator"), self.synced("texture_discriminator")
        d_surface = 0.5 * (lsgan(surface_disc(real_surface), 1.0) + lsgan(surface_disc(fake_surface.detach()), 0.0))
        d_texture = 0.5 * (lsgan(texture_disc(real_texture), 1.0) + lsgan(texture_disc(fake_texture.detach()), 0.0))
        d_total = d_surface + d_texture
        # The discriminators share no parameter, so each is updated from its own term (the
        # gradients the sum would give).
        self.optimise("surface_discriminator", d_surface)
        self.optimise("texture_discriminator", d_texture)

        set_requires_grad(self.surface_disc, False)
        set_requires_grad(self.texture_disc, False)
        g_surface = lsgan(self.surface_disc(fake_surface), 1.0)
        g_texture = lsgan(self.texture_disc(fake_texture), 1.0)
        output_features = self.features(output)
        references = photo if pending_target is None else torch.cat([photo, pending_target()])
        with torch.no_grad():
            photo_features, *superpixel_features = self.features(references).split(photo.shape[0])
        content = feature_l1(photo_features, output_features)
        tv = tv_loss(output)
        g_total = (
            t.tv_weight * tv
            + t.surface_weight * g_surface
            + t.texture_weight * g_texture
            + t.content_weight * content
        )
        weighted = {"structure": (t.structure_weight, feature_l1(superpixel_features[0], output_features))} if superpixel_features else {}
        if t.chroma_weight > 0:
            weighted["chroma"] = (t.chroma_weight, chroma_l1(output, photo))
        weighted |= self.extra_generator_terms(batch, output)
        for weight, term in weighted.values():
            g_total = g_total + weight * term
        self.optimise("generator", g_total)
        terms = {
            "d_surface": d_surface, "d_texture": d_texture, "d_total": d_total,
            "g_surface": g_surface, "g_texture": g_texture, "content": content,
            "tv": tv, **{name: term for name, (_, term) in weighted.items()}, "g_total": g_total,
        }
        return {name: value.detach() for name, value in terms.items()}

    def extra_generator_terms(self, batch: Batch, output: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """Generator loss terms a method built on White-box adds, by name: (weight, term). None here."""
        return {}

"""AnimeGANv2: networks, losses and training steps.

Chen, Liu, Chen. "AnimeGAN: A Novel Lightweight GAN for Photo Animation", ISICA 2019, and the
authors' 2020 update ("AnimeGANv2": layer norm instead of instance norm, a smaller generator,
spectral-normalised discriminator, per-style loss weights).

Generator (every conv bias-free with reflect padding, then LayerNorm as GroupNorm(1, C) and
LeakyReLU(0.2)); at width w (paper 32):
  A: w k7 -> 2w k3 s2 -> 2w;  B: 4w s2 -> 4w;
  C: 4w -> inverted residual 4w->8w -> 3 x inverted residual 8w->8w -> 4w;
  D: bilinear x2 -> 4w -> 4w;  E: bilinear x2 -> 2w -> 2w -> w k7;  1x1 conv w->3, tanh.
An inverted residual block expands 2x with a 1x1 conv (norm, lrelu), filters with a 3x3
depthwise conv (with bias, as in the reference; norm, lrelu) and projects with a bias-free
1x1 conv and norm; the input is added when in == out. At w = 32 the generator has
2,143,552 parameters. Stride-2 convs pad the right and bottom by one pixel (reflect, as the
reference does) and convolve without padding, so H, W that are multiples of 4 map back to H, W.

Discriminator: 3x3 bias-free convs, spectral norm on each, LeakyReLU(0.2), GroupNorm(1, C)
where the reference has layer norm; its patch map is 1/4 of the input. 1,128,800 parameters
at width 32.

Losses (train phase), with VGG19 conv4_4 features and Gram(F) = F F^T / (C H W):
  G = adv * mean((D(G(p)) - 1)^2) + content * L1(VGG(G(p)), VGG(p))
      + style * L1(Gram(VGG(G(p))), Gram(VGG(cartoon_gray)))
      + colour * [L1(Y) + Huber(U) + Huber(V)](G(p), p) + tv * TV(G(p))
  D = adv * [real * mean((D(cartoon) - 1)^2) + fake * mean(D(G(p))^2)
             + gray * mean(D(cartoon_gray)^2) + smooth * mean(D(smooth_gray)^2)]
adv = 300 for both; the other eight weights come from a style preset (Hayao, Paprika, Shinkai)
unless set explicitly. Initialisation phase: the generator trained on the content loss alone,
unweighted (the reference scales it by the content weight; under Adam that changes almost
nothing, and unweighted keeps the pretrain stage independent of train.* params) with Adam
2e-4; train phase: Adam 2e-5 (G), 4e-5 (D), betas (0.5, 0.999), no schedule.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from cartoon.methods import register
from cartoon.methods.base import (
    Batch,
    Method,
    MethodParams,
    PaletteColours,
    Phase,
    init_normal,
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


class LossWeights(NamedTuple):
    """The loss weights of one style: four for the generator's terms, four for the discriminator's."""

    content: float
    style: float
    colour: float
    tv: float
    real: float
    fake: float
    gray: float
    smooth: float


# The v2 reference's per-style settings (README / train scripts).
PRESETS: dict[str, LossWeights] = {
    "hayao": LossWeights(content=1.5, style=2.5, colour=15.0, tv=1.0, real=1.2, fake=1.2, gray=1.2, smooth=0.8),
    "paprika": LossWeights(content=2.0, style=0.6, colour=50.0, tv=0.1, real=1.0, fake=1.0, gray=1.0, smooth=0.005),
    "shinkai": LossWeights(content=1.2, style=2.0, colour=10.0, tv=1.0, real=1.7, fake=1.7, gray=1.7, smooth=1.0),
}


class ResolvedWeights(NamedTuple):
    adv: float
    content: float
    style: float
    colour: float
    tv: float
    real: float
    fake: float
    gray: float
    smooth: float


class GeneratorParams(Section):
    width: int = Field(
        32, ge=4, description="channels of the first generator stage; every stage scales with it (paper: 32, 2,143,552 parameters)"
    )
    n_blocks: int = Field(4, ge=1, description="inverted residual blocks in stage C (paper: 4)")
    input_skip: bool = input_skip_field()
    palette_colours: PaletteColours = palette_field()


class PretrainParams(Section):
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of the initialisation phase (paper: 2e-4)")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas (paper: 0.5, 0.999)")


def _weight(description: str) -> float | None:
    return Field(None, ge=0, description=f"{description}; null = take it from train.preset")


class TrainParams(Section):
    disc_width: int = Field(32, ge=4, description="channels of the discriminator's first conv (paper: 32, 1,128,800 parameters)")
    lr_g: float = Field(2e-5, gt=0, description="Adam learning rate of the generator (paper: 2e-5)")
    lr_d: float = Field(4e-5, gt=0, description="Adam learning rate of the discriminator (paper: 4e-5)")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas of G and D (paper: 0.5, 0.999)")
    d_grad_clip: float | None = Field(None, gt=0, description="clip D's gradient norm to this (null = off, as in the paper)")
    preset: Literal["hayao", "paprika", "shinkai"] = Field(
        "hayao",
        description="style preset supplying every weight left null (content, style, colour, tv; real, fake, gray, smooth): "
        "hayao 1.5, 2.5, 15, 1; 1.2, 1.2, 1.2, 0.8 | paprika 2.0, 0.6, 50, 0.1; 1.0, 1.0, 1.0, 0.005 | "
        "shinkai 1.2, 2.0, 10, 1; 1.7, 1.7, 1.7, 1.0",
    )
    adv_weight: float = Field(300.0, ge=0, description="weight of the LSGAN terms of G and of D (paper: 300)")
    content_weight: float | None = _weight("content (VGG conv4_4 L1 to the photo) weight")
    style_weight: float | None = _weight("style (Gram of VGG conv4_4 vs grayscale cartoon, L1) weight")
    colour_weight: float | None = _weight("colour (YUV: L1 on Y, Huber on U and V) weight")
    tv_weight: float | None = _weight("total-variation weight")
    real_weight: float | None = _weight("D weight of cartoons scored as real")
    fake_weight: float | None = _weight("D weight of generated images scored as fake")
    gray_weight: float | None = _weight("D weight of grayscale cartoons scored as fake")
    smooth_weight: float | None = _weight("D weight of grayscale edge-smoothed cartoons scored as fake")

    def weights(self) -> ResolvedWeights:
        """Every loss weight, explicit values overriding the preset's."""
        preset = PRESETS[self.preset]
        chosen = {
            name: explicit if (explicit := getattr(self, f"{name}_weight")) is not None else default
            for name, default in preset._asdict().items()
        }
        return ResolvedWeights(adv=self.adv_weight, **chosen)


class AnimeGANv2Params(MethodParams):
    generator: GeneratorParams = GeneratorParams()
    pretrain: PretrainParams = PretrainParams()
    train: TrainParams = TrainParams()


# --- networks -------------------------------------------------------------------------------


class ConvNormLReLU(nn.Sequential):
    """Bias-free conv with reflect padding ('same' for stride 1, right/bottom by 1 for stride 2), layer norm, LeakyReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, bias: bool = False) -> None:
        if stride == 1:
            pad = nn.ReflectionPad2d(kernel // 2)
        elif stride == 2 and kernel == 3:
            pad = nn.ReflectionPad2d((0, 1, 0, 1))  # (left, right, top, bottom): H -> H / 2 for even H
        else:
            raise ValueError(f"unsupported kernel {kernel} / stride {stride}")
        super().__init__(
            pad,
            nn.Conv2d(cin, cout, kernel, stride, 0, groups=groups, bias=bias),
            nn.GroupNorm(1, cout, affine=True),
            lrelu(),
        )


class InvertedResBlock(nn.Module):
    """MobileNetV2-style block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when in == out."""

    def __init__(self, cin: int, cout: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = cin == cout
        self.body = nn.Sequential(
            ConvNormLReLU(cin, hidden, kernel=1),
            ConvNormLReLU(hidden, hidden, groups=hidden, bias=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.GroupNorm(1, cout, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class Upsample(nn.Module):
    """Bilinear x2 resize (align_corners=False), then a conv block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvNormLReLU(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class Generator(nn.Module):
    """Fully convolutional; any input whose sides are multiples of 4 keeps its size."""

    def __init__(self, width: int = 32, n_blocks: int = 4, input_skip: bool = False, palette_colours: int = 0) -> None:
        super().__init__()
        self.input_skip = input_skip
        w = width
        self.block_a = nn.Sequential(ConvNormLReLU(3, w, 7), ConvNormLReLU(w, 2 * w, stride=2), ConvNormLReLU(2 * w, 2 * w))
        self.block_b = nn.Sequential(ConvNormLReLU(2 * w, 4 * w, stride=2), ConvNormLReLU(4 * w, 4 * w))
        self.block_c = nn.Sequential(
            ConvNormLReLU(4 * w, 4 * w),
            InvertedResBlock(4 * w, 8 * w),
            *[InvertedResBlock(8 * w, 8 * w) for _ in range(n_blocks - 1)],
            ConvNormLReLU(8 * w, 4 * w),
        )
        self.block_d = nn.Sequential(Upsample(4 * w, 4 * w), ConvNormLReLU(4 * w, 4 * w))
        self.block_e = nn.Sequential(Upsample(4 * w, 2 * w), ConvNormLReLU(2 * w, 2 * w), ConvNormLReLU(2 * w, w, 7))
        self.out = nn.Sequential(nn.Conv2d(w, 3, 1, bias=False), nn.Tanh())  # the tanh is applied by tanh_output
        self.palette = output_palette(palette_colours)
        if input_skip:
            nn.init.zeros_(self.out[0].weight)

    def forward(self, photo: torch.Tensor) -> torch.Tensor:
        x = photo
        for block in (self.block_a, self.block_b, self.block_c, self.block_d, self.block_e):
            x = block(x)
        change = self.out[0](x)
        return tanh_output(change, photo, self.input_skip)


class Discriminator(nn.Module):
    """Spectral-normalised patch discriminator: LSGAN scores at 1/4 of the input resolution."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width

        def conv(cin: int, cout: int, stride: int = 1) -> nn.Module:
            layer = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            init_normal(layer)
            return spectral_norm(layer)

        self.net = nn.Sequential(
            conv(3, w), lrelu(),
            conv(w, 2 * w, 2), lrelu(),
            conv(2 * w, 4 * w), nn.GroupNorm(1, 4 * w), lrelu(),
            conv(4 * w, 4 * w, 2), lrelu(),
            conv(4 * w, 8 * w), nn.GroupNorm(1, 8 * w), lrelu(),
            conv(8 * w, 8 * w), nn.GroupNorm(1, 8 * w), lrelu(),
            conv(8 * w, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --- losses ---------------------------------------------------------------------------------

def gram(features: torch.Tensor) -> torch.Tensor:
    """Per-sample Gram matrix F F^T / (C H W) of N,C,H,W features: N,C,C, always in fp32: its
    sums run over H W products, which bf16's 8-bit mantissa would round to a few digits."""
    n, c, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        flat = features.float().reshape(n, c, h * w)
        return flat @ flat.transpose(1, 2) / (c * h * w)


def colour_loss(generated: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """L1 on Y plus Huber (delta 1) on U and on V, between the generated image and the photo
    (in fp32 under autocast: a cheap term whose small differences matter)."""
    with torch.autocast(generated.device.type, enabled=False):
        a, b = rgb_to_yuv(generated.float()), rgb_to_yuv(photo.float())
        return (
            F.l1_loss(a[:, 0], b[:, 0])
            + F.huber_loss(a[:, 1], b[:, 1], delta=1.0)
            + F.huber_loss(a[:, 2], b[:, 2], delta=1.0)
        )


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """mean(dh^2) / 2 + mean(dw^2) / 2 over vertically and horizontally adjacent pixels (fp32)."""
    images = images.float()
    dh = images[..., 1:, :] - images[..., :-1, :]
    dw = images[..., :, 1:] - images[..., :, :-1]
    return dh.pow(2).mean() / 2 + dw.pow(2).mean() / 2


# --- method ---------------------------------------------------------------------------------


@register
class AnimeGANv2(Method):
    name = "animeganv2"
    title = "AnimeGANv2"
    reference = (
        "Chen, Liu, Chen. AnimeGAN: A Novel Lightweight GAN for Photo Animation. ISICA 2019 "
        "(v2: the authors' 2020 update)."
    )
    Params = AnimeGANv2Params
    params: AnimeGANv2Params
    content_layer = "conv4_4"
    size_multiple = 4
    sets = {"pretrain": ("photo",), "train": ("photo", "cartoon", "cartoon_gray", "smooth_gray")}

    @classmethod
    def build_generator(cls, params: AnimeGANv2Params) -> nn.Module:
        g = params.generator
        return Generator(g.width, g.n_blocks, g.input_skip, g.palette_colours)

    @property
    def weights(self) -> ResolvedWeights:
        return self.params.train.weights()

    def derived_params(self) -> dict[str, float]:
        return {f"{self.name}.train.resolved.{key}": value for key, value in self.weights._asdict().items()}

    def setup(self, phase: Phase, epochs: int, steps_per_epoch: int) -> None:
        if phase == "pretrain":
            self.setup_pretrain()
            return
        self.schedulers = {}
        t = self.params.train
        self.discriminator = Discriminator(t.disc_width).to(self.device)
        self.networks["discriminator"] = self.discriminator
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=t.lr_g, betas=t.betas),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=t.lr_d, betas=t.betas),
        }
        if t.d_grad_clip is not None:
            parameters, limit = list(self.discriminator.parameters()), t.d_grad_clip

            def clip(*_: object) -> None:  # runs inside optimise(), between backward and the update
                nn.utils.clip_grad_norm_(parameters, limit)

            self.optimizers["discriminator"].register_step_pre_hook(clip)

    def step(self, phase: Phase, batch: Batch) -> dict[str, torch.Tensor]:
        photo = batch["photo"]
        if phase == "pretrain":
            # Unweighted: the pretrain stage must not depend on train.* (DVC tracks it on
            # generator + pretrain params only), and Adam is nearly invariant to the scale anyway.
            content = self.content_loss(self.synced("generator")(photo), photo)
            self.optimise("generator", content)
            return {"content": content.detach()}

        w = self.weights
        generated = self.synced("generator")(photo)
        set_requires_grad(self.discriminator, True)
        # One pass over all four sets (layer norm is per sample, so this equals four passes).
        inputs = [batch["cartoon"], generated.detach(), batch["cartoon_gray"], batch["smooth_gray"]]
        scores = self.synced("discriminator")(torch.cat(inputs)).split([x.shape[0] for x in inputs])
        d_real = lsgan(scores[0], 1.0)
        d_fake = lsgan(scores[1], 0.0)
        d_gray = lsgan(scores[2], 0.0)
        d_smooth = lsgan(scores[3], 0.0)
        d_loss = w.adv * (w.real * d_real + w.fake * d_fake + w.gray * d_gray + w.smooth * d_smooth)
        self.optimise("discriminator", d_loss)

        set_requires_grad(self.discriminator, False)
        g_adv = lsgan(self.discriminator(generated), 1.0)
        # Content and style share one VGG pass over G(p); the content term is exactly
        # Method.content_loss (L1 of the features), computed here to avoid a second pass.
        generated_features = self.features(generated)
        with torch.no_grad():
            photo_features = self.features(photo)
            gray_gram = gram(self.features(batch["cartoon_gray"]))
        content = (generated_features.float() - photo_features.float()).abs().mean()
        style = (gram(generated_features) - gray_gram).abs().mean()
        colour = colour_loss(generated, photo)
        tv = tv_loss(generated)
        g_loss = w.adv * g_adv + w.content * content + w.style * style + w.colour * colour + w.tv * tv
        self.optimise("generator", g_loss)
        terms = {
            "d_real": d_real, "d_fake": d_fake, "d_gray": d_gray, "d_smooth": d_smooth, "d_total": d_loss,
            "g_adv": g_adv, "content": content, "style": style, "colour": colour, "tv": tv, "g_total": g_loss,
        }
        return {name: value.detach() for name, value in terms.items()}

"""CartoonGAN (Chen, Lai, Liu, CVPR 2018): networks, losses and training steps.

Generator (paper Fig. 2): flat conv 7x7 -> two down-convolutions -> residual blocks ->
two up-convolutions -> conv 7x7 -> tanh, instance norm and ReLU throughout. At width 64
with 8 blocks of 2 convolutions it has 11,120,195 parameters; each further 3x3 convolution in
the blocks adds 590,080 (the experiment report's variants: 10x2 13,480,515; 10x3 19,381,315). Discriminator: a patch classifier with
LeakyReLU(0.2) whose map is 1/4 of the input (1,128,385 parameters at width 32).

Losses (paper Eq. 2-5): G = adversarial + omega * L1(VGG19 conv4_4(G(p)), VGG19 conv4_4(p)),
omega = 10; D is edge-promoting: real cartoons are real, generated images and edge-smoothed
cartoons are fake. Initialisation phase (Sec. 3.3): the generator trained on the content
loss alone.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

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
    output_palette,
    palette_field,
    set_requires_grad,
    tanh_output,
)
from cartoon.params import Section


class GeneratorParams(Section):
    width: int = Field(64, ge=4, description="channels of the first generator stage (paper: 64)")
    n_blocks: int = Field(8, ge=0, description="residual blocks (paper: 8)")
    block_convs: Literal[2, 3] = Field(
        2, description="3x3 convolutions per residual block (paper: 2; 3 = the experiment report's deeper block)"
    )
    upsample: Literal["transpose", "resize"] = Field(
        "transpose", description="transpose = paper; resize = nearest x2 then conv (no checkerboard artifacts)"
    )
    input_skip: bool = input_skip_field()
    palette_colours: PaletteColours = palette_field()


class PretrainParams(Section):
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of the initialisation phase (paper: 2e-4)")
    betas: tuple[float, float] = (0.5, 0.999)


class TrainParams(Section):
    disc_width: int = Field(32, ge=4, description="channels of the discriminator's first conv (paper: 32)")
    content_weight: float = Field(10.0, ge=0, description="omega, weight of the content loss (paper: 10)")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of G and D (paper: 2e-4)")
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay_at: tuple[float, ...] = Field(
        (0.5, 0.75), description="fractions of the train epochs where the lr is multiplied by 0.1 (paper: 50/100, 75/100)"
    )


class CartoonGANParams(MethodParams):
    generator: GeneratorParams = GeneratorParams()
    pretrain: PretrainParams = PretrainParams()
    train: TrainParams = TrainParams()


def _conv_norm_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.InstanceNorm2d(cout), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """``convs`` conv-IN layers with ReLU between them (none after the last), added to the input."""

    def __init__(self, channels: int, convs: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(convs):
            layers += [nn.Conv2d(channels, channels, 3, 1, 1), nn.InstanceNorm2d(channels)]
            if index < convs - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _up(cin: int, cout: int, mode: str) -> nn.Module:
    if mode == "transpose":
        return nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1))


class Generator(nn.Module):
    """Fully convolutional; any input whose sides are multiples of 4 keeps its size."""

    def __init__(
        self, width: int = 64, n_blocks: int = 8, upsample: str = "transpose", input_skip: bool = False, block_convs: int = 2,
        palette_colours: int = 0,
    ) -> None:
        super().__init__()
        w = width
        self.input_skip = input_skip
        self.net = nn.Sequential(
            *_conv_norm_relu(3, w, 7),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.InstanceNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.Conv2d(4 * w, 4 * w, 3, 1, 1), nn.InstanceNorm2d(4 * w), nn.ReLU(inplace=True),
            *[ResidualBlock(4 * w, block_convs) for _ in range(n_blocks)],
            _up(4 * w, 2 * w, upsample), nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.InstanceNorm2d(2 * w), nn.ReLU(inplace=True),
            _up(2 * w, w, upsample), nn.Conv2d(w, w, 3, 1, 1), nn.InstanceNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, 3, 7, 1, 3),
        )
        self.palette = output_palette(palette_colours)
        init_normal(self)
        if input_skip:
            nn.init.zeros_(self.net[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh_output(self.net(x), x, self.input_skip)


class Discriminator(nn.Module):
    """Patch discriminator: logits at 1/4 of the input resolution."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1), lrelu(),
            nn.Conv2d(w, 2 * w, 3, 2, 1), lrelu(),
            nn.Conv2d(2 * w, 4 * w, 3, 1, 1), nn.InstanceNorm2d(4 * w), lrelu(),
            nn.Conv2d(4 * w, 4 * w, 3, 2, 1), lrelu(),
            nn.Conv2d(4 * w, 8 * w, 3, 1, 1), nn.InstanceNorm2d(8 * w), lrelu(),
            nn.Conv2d(8 * w, 8 * w, 3, 1, 1), nn.InstanceNorm2d(8 * w), lrelu(),
            nn.Conv2d(8 * w, 1, 3, 1, 1),
        )
        init_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of the logits against a constant label, in fp32 under autocast."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@register
class CartoonGAN(Method):
    name = "cartoongan"
    title = "CartoonGAN"
    reference = "Chen, Lai, Liu. CartoonGAN: Generative Adversarial Networks for Photo Cartoonization. CVPR 2018."
    Params = CartoonGANParams
    params: CartoonGANParams

    @classmethod
    def build_generator(cls, params: CartoonGANParams) -> nn.Module:
        g = params.generator
        return Generator(g.width, g.n_blocks, g.upsample, g.input_skip, g.block_convs, g.palette_colours)

    def setup(self, phase: Phase, epochs: int, steps_per_epoch: int) -> None:
        p = self.params.pretrain if phase == "pretrain" else self.params.train
        self.optimizers = {"generator": torch.optim.Adam(self.generator.parameters(), lr=p.lr, betas=p.betas)}
        self.schedulers = {}
        if phase == "train":
            self.discriminator = Discriminator(p.disc_width).to(self.device)
            self.networks["discriminator"] = self.discriminator
            self.optimizers["discriminator"] = torch.optim.Adam(self.discriminator.parameters(), lr=p.lr, betas=p.betas)
            milestones = sorted({max(1, round(f * epochs)) for f in p.lr_decay_at if round(f * epochs) < epochs})
            self.schedulers = {
                name: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
                for name, opt in self.optimizers.items()
            }

    def step(self, phase: Phase, batch: Batch) -> dict[str, torch.Tensor]:
        photo = batch["photo"]
        if phase == "pretrain":
            loss = self.content_loss(self.synced("generator")(photo), photo)
            self.optimise("generator", loss)
            return {"content": loss.detach()}

        generated = self.synced("generator")(photo)
        set_requires_grad(self.discriminator, True)
        discriminator = self.synced("discriminator")
        d_real = _bce(discriminator(batch["cartoon"]), 1.0)
        d_fake = _bce(discriminator(generated.detach()), 0.0)
        d_edge = _bce(discriminator(batch["smooth"]), 0.0)
        d_loss = d_real + d_fake + d_edge
        self.optimise("discriminator", d_loss)

        set_requires_grad(self.discriminator, False)
        g_adv = _bce(self.discriminator(generated), 1.0)
        content = self.content_loss(generated, photo)
        g_loss = g_adv + self.params.train.content_weight * content
        self.optimise("generator", g_loss)
        return {
            "d_real": d_real.detach(), "d_fake": d_fake.detach(), "d_edge": d_edge.detach(), "d_total": d_loss.detach(),
            "g_adv": g_adv.detach(), "content": content.detach(), "g_total": g_loss.detach(),
        }

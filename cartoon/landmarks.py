"""Five facial landmarks by MTCNN's O-Net (Zhang, Zhang, Li and Qiao 2016), differentiable end to end.

The face method's landmark loss and the face metrics both read faces through this network:
48x48 RGB crops, normalised as (x - 127.5) * 0.0078125, give a face probability, a box
regression and five points (eyes, nose tip, mouth corners, left and right as seen) as
fractions of the crop. 389,040 parameters.

Weights are never downloaded. They are the ones the ``facenet-pytorch`` wheel ships as
``facenet_pytorch/data/onet.pt`` (located with ``importlib.util.find_spec``, without importing
the package), or any file ``landmarks.weights`` names; either is read with ``weights_only`` and
checked tensor by tensor. Their sha256 identifies them in run tags and metrics.

Crops are taken by differentiable sampling (``crop_faces``), so gradients reach the image a
crop came from: the landmark loss moves the generator's output, not only O-Net's input.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cartoon.errors import RuntimeFailure, UsageError
from cartoon.weights import check_state, file_sha256, read_state_dict

ONET_SIZE = 48
# Crops are sampled at 3x and area-pooled to 48: a 3x3 average per output pixel, so a crop
# scaled down from a large face is not aliased (bilinear sampling alone would skip pixels).
SUPERSAMPLE = 3
# [-1, 1] images to O-Net's input: pixel = (x + 1) * 127.5, then (pixel - 127.5) * 0.0078125.
INPUT_SCALE = 127.5 * 0.0078125
PACKAGE_FILE = ("facenet_pytorch", "data", "onet.pt")
# facenet-pytorch 2.5.3's onet.pt; other files are accepted, and their own digest is reported.
KNOWN_SHA256 = "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"


class ONet(nn.Module):
    """O-Net's layers, named as in the published state dict (conv1..4, prelu1..5, dense5, dense6_1..3)."""

    def __init__(self) -> None:
        super().__init__()
        channels = [3, 32, 64, 64]
        for index, (cin, cout) in enumerate(zip(channels, channels[1:]), start=1):
            setattr(self, f"conv{index}", nn.Conv2d(cin, cout, 3))
            setattr(self, f"prelu{index}", nn.PReLU(cout))
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(128 * 3 * 3, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)  # face / not face
        self.dense6_2 = nn.Linear(256, 4)  # box regression
        self.dense6_3 = nn.Linear(256, 10)  # x1..x5, y1..y5 as fractions of the crop
        self.pools = [nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(2, 2, ceil_mode=True)]

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crops (N x 3 x 48 x 48, already normalised) to (face probability N, box N x 4, landmarks N x 5 x 2)."""
        x = crops
        for index, pool in enumerate(self.pools, start=1):
            x = pool(getattr(self, f"prelu{index}")(getattr(self, f"conv{index}")(x)))
        x = self.prelu4(self.conv4(x))
        # The weights were trained (in Caffe) on features flattened as N x W x H x C; PyTorch's
        # N x C x H x W order would feed every dense weight the wrong input, silently.
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        probability = F.softmax(self.dense6_1(x), dim=1)[:, 1]
        points = self.dense6_3(x).view(-1, 2, 5).transpose(1, 2)
        return probability, self.dense6_2(x), points


@dataclass(frozen=True)
class LandmarkModel:
    """A loaded O-Net, frozen, with where its weights came from."""

    network: ONet
    path: Path
    sha256: str

    @property
    def source(self) -> str:
        return f"onet:{self.sha256[:12]}"


def packaged_weights() -> Path | None:
    """facenet-pytorch's onet.pt if the package is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec(PACKAGE_FILE[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*PACKAGE_FILE[1:])
    return path if path.is_file() else None


def resolve_weights(override: str | Path | None) -> Path:
    """``landmarks.weights`` when set, else the file facenet-pytorch ships; a clear error if neither."""
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise UsageError(f"landmarks.weights: file not found: {path}")
        return path
    packaged = packaged_weights()
    if packaged is None:
        raise RuntimeFailure(
            "no O-Net weights: install facenet-pytorch 2.5.x (pip install 'facenet-pytorch>=2.5.3,<2.6'; its wheel "
            "ships data/onet.pt), or set landmarks.weights to an onet.pt or .safetensors file"
        )
    return packaged


def load_onet(override: str | Path | None = None, device: torch.device | str = "cpu") -> LandmarkModel:
    """O-Net with checked weights, in eval mode and without gradients of its own (gradients
    still flow through it to the images it reads)."""
    path = resolve_weights(override)
    network = ONet()
    state = read_state_dict(path, "O-Net")
    check_state(network.state_dict(), state, "O-Net", path)
    network.load_state_dict(state)
    network.eval().requires_grad_(False)
    return LandmarkModel(network.to(device), path, file_sha256(path))


def crop_faces(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """O-Net inputs for one square box per image, by differentiable sampling.

    ``images``: N x 3 x H x W in [-1, 1]. ``boxes``: N x 4 (left, top, right, bottom) in pixel
    units where pixel (i, j) covers [j, j + 1] x [i, i + 1]. Sampled at 144 px and area-pooled
    to 48; outside the image, the border pixel repeats.
    """
    n, _, height, width = images.shape
    steps = (torch.arange(ONET_SIZE * SUPERSAMPLE, device=images.device, dtype=images.dtype) + 0.5) / (ONET_SIZE * SUPERSAMPLE)
    boxes = boxes.to(images.dtype)
    xs = boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])  # N x S, pixel units
    ys = boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])
    grid = torch.stack(torch.broadcast_tensors(
        (2 * xs / width - 1)[:, None, :], (2 * ys / height - 1)[:, :, None]), dim=-1)  # fmt: skip
    sampled = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.avg_pool2d(sampled, SUPERSAMPLE) * INPUT_SCALE


def to_pixels(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Landmarks as crop fractions (N x 5 x 2) to image pixel coordinates of their boxes."""
    origin, size = boxes[:, None, :2], (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    return origin + points * size


def detect_landmarks(model: LandmarkModel, images: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(face probability N, landmarks N x 5 x 2 in pixels) of one box per image."""
    probability, _, points = model.network(crop_faces(images, boxes))
    return probability, to_pixels(points, boxes)


def landmark_loss(model: LandmarkModel, photos: torch.Tensor, outputs: torch.Tensor, boxes: torch.Tensor,
                  min_probability: float) -> torch.Tensor:
    """L1 between the output's landmarks and the photo's, as fractions of the box, counted only
    for faces the photo shows clearly (O-Net's face probability >= ``min_probability``); 0 with
    no such face. The photo side is a fixed target (no gradient)."""
    with torch.no_grad():
        probability, _, target = model.network(crop_faces(photos, boxes))
    _, _, points = model.network(crop_faces(outputs, boxes))
    counted = (probability >= min_probability).to(points.dtype)
    per_face = (points.float() - target.float()).abs().mean(dim=(1, 2))
    return (per_face * counted).sum() / counted.sum().clamp(min=1.0)

"""MTCNN's O-Net: loading checked weights, and (with facenet-pytorch's real weights) that its
landmarks are MTCNN's, that it tells faces from non-faces, and that its loss moves images."""

import hashlib
import pickle

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import data

from cartoon import landmarks
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.landmarks import ONet, crop_faces, detect_landmarks, landmark_loss, load_onet, packaged_weights


def _random_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return ONet().state_dict()


def test_onet_has_the_published_parameter_count():
    assert sum(p.numel() for p in ONet().parameters()) == 389_040


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_loads_a_file_with_the_right_keys_and_shapes(tmp_path, suffix):
    state = _random_state()
    path = tmp_path / f"onet{suffix}"
    torch.save(state, path) if suffix == ".pt" else save_file(state, str(path))
    model = load_onet(path)
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.source == f"onet:{model.sha256[:12]}"
    assert not any(p.requires_grad for p in model.network.parameters())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("dense6_3.weight"), "lack 1 tensors, e.g. dense6_3.weight"),
        (lambda s: s.update({"dense5.weight": torch.zeros(256, 1000)}), r"dense5.weight .* shape \(256, 1000\), expected \(256, 1152\)"),
        (lambda s: s.update({"dense7.weight": torch.zeros(1)}), "unexpected tensors, e.g. dense7.weight"),
    ],
)
def test_refuses_a_wrong_file_with_a_clear_error(tmp_path, change, message):
    state = _random_state()
    change(state)
    path = tmp_path / "onet.pt"
    torch.save(state, path)
    with pytest.raises(RuntimeFailure, match=message):
        load_onet(path)


def test_refuses_a_pickle_that_is_not_plain_tensors(tmp_path):
    path = tmp_path / "onet.pt"
    path.write_bytes(pickle.dumps({"conv1.weight": object()}))
    with pytest.raises(RuntimeFailure, match="cannot read O-Net weights"):
        load_onet(path)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="landmarks.weights: file not found"):
        load_onet(tmp_path / "absent.pt")
    monkeypatch.setattr(landmarks, "packaged_weights", lambda: None)
    with pytest.raises(RuntimeFailure, match="install facenet-pytorch"):
        load_onet()


def test_crop_samples_the_box_and_keeps_gradients():
    image = torch.linspace(-1, 1, 96).repeat(1, 3, 96, 1).requires_grad_(True)  # a horizontal ramp
    crops = crop_faces(image, torch.tensor([[0.0, 0.0, 96.0, 96.0]]))
    assert crops.shape == (1, 3, 48, 48)
    # area pooling of the ramp: each output column is the mean of two input columns (inside the
    # image: the outermost samples fall beyond the first pixel centre, where the border repeats)
    expected = image[0, 0, 0].detach().view(48, 2).mean(1) * landmarks.INPUT_SCALE
    assert torch.allclose(crops[0, 0, 10, 1:-1], expected[1:-1], atol=1e-5)
    crops.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


needs_weights = pytest.mark.skipif(packaged_weights() is None, reason="facenet-pytorch (a dependency) is not installed")


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1


@needs_weights
def test_astronaut_landmarks_match_the_packages_own_mtcnn():
    from facenet_pytorch import MTCNN

    image = data.astronaut()
    boxes, _, points = MTCNN(device="cpu").detect(image, landmarks=True)
    box = torch.tensor(np.asarray(boxes[0], np.float32))[None]
    probability, ours = detect_landmarks(load_onet(), _tensor(image), box)
    assert probability.item() > 0.99
    assert np.abs(ours[0].numpy() - np.asarray(points[0], np.float32)).max() < 4.0


@needs_weights
def test_onet_tells_lfw_faces_from_non_faces():
    images = torch.from_numpy(data.lfw_subset()).float()[:, None].repeat(1, 3, 1, 1) * 2 - 1  # 100 faces, then 100 not
    probability, _, _ = load_onet().network(crop_faces(images, torch.tensor([[0.0, 0.0, 25.0, 25.0]]).repeat(200, 1)))
    assert probability[:100].mean() > 0.9
    assert probability[100:].mean() < 0.1


def _translate(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Content moved by ``shift`` (dx, dy) pixels, differentiably."""
    _, _, height, width = images.shape
    theta = torch.cat([torch.eye(2), torch.stack([-2 * shift[0] / width, -2 * shift[1] / height])[:, None]], dim=1)
    grid = F.affine_grid(theta[None], list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


@needs_weights
def test_landmark_loss_alone_recovers_a_known_shift():
    face = _tensor(cv2.resize(data.astronaut()[40:200, 140:300], (128, 128), interpolation=cv2.INTER_AREA))
    moved = _translate(face, torch.tensor([10.0, -6.0]))
    box = torch.tensor([[24.0, 20.0, 104.0, 100.0]])
    model = load_onet()
    correction = torch.zeros(2, requires_grad=True)
    optimiser = torch.optim.Adam([correction], lr=0.5)
    for _ in range(60):
        loss = landmark_loss(model, face, _translate(moved, correction), box, min_probability=0.9)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert torch.allclose(correction.detach(), torch.tensor([-10.0, 6.0]), atol=1.0)


@needs_weights
def test_landmark_loss_ignores_boxes_without_a_clear_face():
    model = load_onet()
    noise = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    box = torch.tensor([[0.0, 0.0, 64.0, 64.0]]).repeat(2, 1)
    assert landmark_loss(model, noise, noise.flip(-1), box, min_probability=0.99).item() == 0.0

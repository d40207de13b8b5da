"""The face method: White-box plus the O-Net landmark term, on face batches only."""

import numpy as np
import pytest
import torch

from cartoon.batches import face_boxes
from cartoon.data.faces import cartoon_face
from cartoon.landmarks import packaged_weights
from cartoon.methods import available_methods, load_run_params, method_params
from cartoon.methods.base import count_parameters
from cartoon.vgg import RandomWeightsWarning, load_vgg
from tests.conftest import write_params

pytestmark = pytest.mark.skipif(packaged_weights() is None, reason="facenet-pytorch (a dependency) is not installed")


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    return load_run_params(write_params(tmp_path_factory.mktemp("params") / "params.yaml", model={"name": "facecartoon"}))


def _method(params, **train):
    with pytest.warns(RandomWeightsWarning):
        features = load_vgg(params.vgg)
    own = method_params(params)
    own = own.model_copy(update={"train": own.train.model_copy(update=train)})
    torch.manual_seed(0)
    method = available_methods()["facecartoon"](own, features, torch.device("cpu"))
    method.load_pretrained(params, "train")
    method.setup("train", 1, 1)
    return method


def _faces(n: int = 2, size: int = 64) -> torch.Tensor:
    rng = np.random.default_rng(0)
    from cartoon.data.faces import align

    crops = [align(*cartoon_face(rng, 128), size)[0] for _ in range(n)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_same_generator_as_white_box_and_report_weights_by_default():
    face, white_box = available_methods()["facecartoon"], available_methods()["whitebox"]
    defaults = face.Params()
    assert count_parameters(face.build_generator(defaults)) == count_parameters(white_box.build_generator(white_box.Params()))
    t = defaults.train
    assert (t.tv_weight, t.surface_weight, t.texture_weight, t.content_weight, t.structure_weight) == (1e5, 0.2, 5.0, 20.0, 0.6)
    assert face.face_batches


def test_landmark_term_is_zero_on_scenery_and_measured_on_faces(params):
    method = _method(params)
    photos = _faces()
    scenery = {"photo": photos, "cartoon": photos.flip(-1)}
    losses = method.step("train", scenery)
    assert losses["landmark"].item() == 0.0
    faces = {**scenery, "face_boxes": face_boxes(photos)}
    losses = method.step("train", faces)
    assert losses["landmark"].item() > 0.0  # the untrained output moves the landmarks
    assert method.tags()["landmarks.sha256"] == method.landmarks.sha256


def test_landmark_term_alone_trains_the_generator(params):
    """With every other weight at 0 the generator is updated by the landmark term alone, and the
    term falls: its gradient reaches the generator through the crops and O-Net."""
    method = _method(params, tv_weight=0.0, surface_weight=0.0, texture_weight=0.0, content_weight=0.0,
                     structure_weight=0.0, landmark_weight=1.0, lr=1e-3)  # fmt: skip
    photos = _faces()
    batch = {"photo": photos, "cartoon": photos, "face_boxes": face_boxes(photos)}
    first = method.step("train", batch)["landmark"].item()
    for _ in range(15):
        last = method.step("train", batch)["landmark"].item()
    assert first > 0 and last < 0.7 * first


def test_paper_profile_has_the_reports_settings():
    from pathlib import Path

    profile = load_run_params(Path(__file__).parents[1] / "pipeline/profiles/face-paper-gpu.yaml")
    assert profile.model.name == "facecartoon" and profile.resize.size == 128
    t = method_params(profile).train
    assert (t.tv_weight, t.surface_weight, t.texture_weight, t.content_weight, t.structure_weight) == (1e5, 0.2, 5.0, 20.0, 0.6)
    assert not profile.vgg.allow_random


def test_training_without_face_batches_is_a_usage_error(tmp_path):
    from cartoon.errors import UsageError
    from cartoon.methods.facecartoon import FaceCartoon
    from cartoon.params import LoopParams
    from cartoon.training import _face_sets

    method = FaceCartoon.__new__(FaceCartoon)  # only its class settings are read
    with pytest.raises(UsageError, match="facecartoon trains on face batches"):
        _face_sets(method, "train", {"photo": tmp_path, "cartoon": tmp_path}, ("photo", "cartoon"), LoopParams(face_every=5))
    assert _face_sets(method, "pretrain", {"photo": tmp_path}, ("photo",), LoopParams(face_every=5)) == {}

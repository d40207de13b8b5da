"""Face metrics: O-Net's normalised five-point error and the share of faces still detected."""

import json

import cv2
import numpy as np
import pytest
from skimage import data
from typer.testing import CliRunner

from cartoon.cli import app
from cartoon.data.faces import FaceDetector
from cartoon.data.imageio import write_png
from cartoon.face_metrics import FaceMeter, iou, normalised_error, square_box
from cartoon.landmarks import load_onet, packaged_weights

needs_weights = pytest.mark.skipif(packaged_weights() is None, reason="facenet-pytorch (a dependency) is not installed")


def test_hand_values():
    assert square_box((10, 20, 30, 60)) == (0.0, 20.0, 40.0, 60.0)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    photo = np.array([[0, 0], [10, 0], [5, 5], [2, 8], [8, 8]], float)
    assert normalised_error(photo, photo + [3, 4]) == pytest.approx(0.5)  # every point 5 px off, eyes 10 px apart


@pytest.fixture(scope="module")
def meter_parts():
    return load_onet(), FaceDetector(min_size=24, min_score=0.9)


@needs_weights
def test_a_kept_face_scores_zero_error_and_a_lost_one_is_not_detected(meter_parts):
    photo = data.astronaut()[:300, 100:400]
    kept = FaceMeter(*meter_parts)
    kept.add(photo, photo.copy())
    assert kept.summary() == {"faces": 1, "onet_error": 0.0, "onet_share_above_0.08": 0.0, "detected_share": 1.0}
    moved = FaceMeter(*meter_parts)
    moved.add(photo, np.roll(photo, (12, -9), axis=(0, 1)))  # the face moved by 15 px: about 0.35 eye distances
    assert moved.summary()["onet_error"] > 0.2 and moved.summary()["onet_share_above_0.08"] == 1.0
    lost = FaceMeter(*meter_parts)
    lost.add(photo, cv2.blur(photo, (41, 41)))
    assert lost.summary()["detected_share"] == 0.0


@needs_weights
def test_no_face_means_no_figures(meter_parts):
    meter = FaceMeter(*meter_parts)
    meter.add(data.coffee(), data.coffee())
    assert meter.summary() is None


@needs_weights
@pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")
def test_evaluate_reports_faces_when_the_photos_show_them(project):
    runner = CliRunner()
    assert runner.invoke(app, ["pretrain", "--photos", "photo.npy", "--out", "gen"]).exit_code == 0
    write_png(project / "mine" / "astronaut.png", np.ascontiguousarray(data.astronaut()[:256, 128:384]))
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "mine", "--out", "res"])
    assert result.exit_code == 0, result.output
    faces = json.loads((project / "res/metrics.json").read_text())["faces"]
    assert faces["faces"] == 1 and 0 <= faces["detected_share"] <= 1 and faces["onet_error"] >= 0
    info = json.loads((project / "res/evaluation.json").read_text())
    assert info["faces"].startswith("onet:") and info["faces_dlib68"].startswith("absent")
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "test", "--out", "res2"])  # noise: no face
    assert "faces" not in json.loads((project / "res2/metrics.json").read_text())
    assert json.loads((project / "res2/evaluation.json").read_text())["faces"] == "absent: no face found in the photos"

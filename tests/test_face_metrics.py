"""Face metrics: O-Net's normalised five-point error, the share of faces still detected, and
dlib's independent 68-point error (the faces68 extra, part of the test extra)."""

import importlib.util
import json

import cv2
import numpy as np
import pytest
from skimage import data
from typer.testing import CliRunner

from cartoon.cli import app
from cartoon.data.faces import FaceDetector
from cartoon.data.imageio import write_png
from cartoon import face_metrics
from cartoon.face_metrics import FaceMeter, dlib68_error, iou, load_dlib68, normalised_error, packaged_dlib68, square_box
from cartoon.landmarks import load_onet, packaged_weights

needs_weights = pytest.mark.skipif(packaged_weights() is None, reason="facenet-pytorch (a dependency) is not installed")
HAS_DLIB68 = importlib.util.find_spec("dlib") is not None and packaged_dlib68() is not None
needs_dlib68 = pytest.mark.skipif(not HAS_DLIB68, reason="the faces68 extra (dlib-bin, face-recognition-models) is not installed")


def test_hand_values():
    assert square_box((10, 20, 30, 60)) == (0.0, 20.0, 40.0, 60.0)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    photo = np.array([[0, 0], [10, 0], [5, 5], [2, 8], [8, 8]], float)
    assert normalised_error(photo, photo + [3, 4]) == pytest.approx(0.5)  # every point 5 px off, eyes 10 px apart
    points = np.zeros((68, 2))
    points[36], points[45], points[39], points[42] = (0, 0), (20, 0), (5, 0), (15, 0)  # outer, inner eye corners
    assert dlib68_error(points, points + [6, 8]) == pytest.approx(0.5)  # 10 px off over the outer corners' 20 px
    one = points.copy()
    one[30] += [0, 68 * 4]  # one point (the nose tip) 272 px off: mean 4 px
    assert dlib68_error(points, one) == pytest.approx(0.2)


def test_without_the_extra_the_68_point_check_says_why(monkeypatch):
    monkeypatch.setattr(face_metrics, "packaged_dlib68", lambda: None)
    assert load_dlib68() == (None, "no 68-point model: install the faces68 extra (pip install -e '.[faces68]')")
    assert load_dlib68("missing.dat")[1] == "evaluate.dlib_predictor: file not found: missing.dat"


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
@needs_dlib68
def test_dlib68_scores_a_kept_face_zero_and_a_moved_one_high(meter_parts):
    dlib68, reason = load_dlib68()
    assert reason == "" and dlib68.source.startswith("dlib68:")
    photo = data.astronaut()[:300, 100:400]
    kept = FaceMeter(*meter_parts, dlib68=dlib68)
    kept.add(photo, photo.copy())
    assert kept.summary()["dlib68_error"] == 0.0 and kept.summary()["dlib68_share_above_0.08"] == 0.0
    moved = FaceMeter(*meter_parts, dlib68=dlib68)
    moved.add(photo, np.roll(photo, (12, -9), axis=(0, 1)))
    # 15 px is 0.245 outer-corner distances; read in the photo's square (held still), dlib's cascade
    # follows the moved face only part of the way: 0.20 here (O-Net's 0.34 eye-centre distances is all of it)
    assert moved.summary()["dlib68_error"] > 0.15 and moved.summary()["dlib68_share_above_0.08"] == 1.0


@needs_weights
def test_no_face_means_no_figures(meter_parts):
    meter = FaceMeter(*meter_parts)
    meter.add(data.coffee(), data.coffee())
    assert meter.summary() is None


@needs_weights
@pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")
def test_evaluate_reports_faces_when_the_photos_show_them(project, monkeypatch):
    runner = CliRunner()
    assert runner.invoke(app, ["pretrain", "--photos", "photo.npy", "--out", "gen"]).exit_code == 0
    write_png(project / "mine" / "astronaut.png", np.ascontiguousarray(data.astronaut()[:256, 128:384]))
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "mine", "--out", "res"])
    assert result.exit_code == 0, result.output
    faces = json.loads((project / "res/metrics.json").read_text())["faces"]
    assert faces["faces"] == 1 and 0 <= faces["detected_share"] <= 1 and faces["onet_error"] >= 0
    info = json.loads((project / "res/evaluation.json").read_text())
    assert info["faces"].startswith("onet:")
    if HAS_DLIB68:  # the test extra installs it
        assert faces["dlib68_error"] >= 0 and 0 <= faces["dlib68_share_above_0.08"] <= 1
        assert info["faces_dlib68"] == load_dlib68()[0].source
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "test", "--out", "res2"])  # noise: no face
    assert "faces" not in json.loads((project / "res2/metrics.json").read_text())
    info = json.loads((project / "res2/evaluation.json").read_text())
    assert info["faces"] == "absent: no face found in the photos"
    if HAS_DLIB68:
        assert info["faces_dlib68"] == "absent: no face found in the photos"
    else:  # no dlib, or no model file
        assert info["faces_dlib68"].startswith("absent: ") and "pip install -e '.[faces68]'" in info["faces_dlib68"]
    monkeypatch.setattr(face_metrics, "packaged_dlib68", lambda: None)  # as without the extra
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "mine", "--out", "res3"])
    assert result.exit_code == 0, result.output
    faces = json.loads((project / "res3/metrics.json").read_text())["faces"]
    assert faces["faces"] == 1 and "onet_error" in faces and not any(key.startswith("dlib68") for key in faces)
    info = json.loads((project / "res3/evaluation.json").read_text())
    assert info["faces"].startswith("onet:")
    assert info["faces_dlib68"] == "absent: no 68-point model: install the faces68 extra (pip install -e '.[faces68]')"

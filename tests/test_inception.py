"""FID and KID in evaluate: the fast FID equals torch-fidelity's, the FID Inception loads from a
file the test makes (never downloaded), and without weights the figures are absent with a reason."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cartoon.cli import app
from cartoon.errors import RuntimeFailure
from cartoon.evaluate import _inception
from cartoon.inception import (
    CACHE_FILES,
    InceptionFeatures,
    distances,
    frechet_distance,
)
from cartoon.params import Params
from tests.conftest import write_params

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")


@pytest.mark.parametrize(("n", "m", "dims"), [(5, 7, 16), (40, 30, 64), (90, 60, 32)])
def test_frechet_distance_equals_torch_fidelity(n, m, dims):
    from torch_fidelity.metric_fid import (
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(n, dims)), rng.normal(0.5, 2.0, size=(m, dims))
    stats = [fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b)]
    expected = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_tells_a_shifted_set_from_a_resample():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 32))
    same = distances(base[:30], base[30:])
    shifted = distances(base[:30], base[30:] + 3.0)
    assert shifted["kid"] > 10 * abs(same["kid"]) and shifted["fid"] > 10 * same["fid"]
    assert shifted["kid_std"] > 0 and same["kid_std"] > 0  # subsets of half the set: resamplings differ


def test_fid_spread_shrinks_as_the_sets_grow():
    rng = np.random.default_rng(1)
    small = distances(rng.normal(size=(20, 8)), rng.normal(size=(20, 8)))
    large = distances(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)))
    assert small["fid_std"] > 3 * large["fid_std"] > 0
    assert distances(rng.normal(size=(20, 8)), rng.normal(size=(20, 8)))["fid_std"] == pytest.approx(small["fid_std"], rel=1.0)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised FID Inception saved as torch-fidelity's file would be (the real one
    is 91 MB of ImageNet weights that tests may not download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as module

    torch.manual_seed(0)  # the same random network every run: the blur test's ordering must not vary
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        patch.setattr(torch, "load", lambda *args, **kwargs: {})
        network = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused")
    path = tmp_path_factory.mktemp("hub") / CACHE_FILES[1]
    torch.save(network.state_dict(), path)
    return path


def test_evaluate_reports_fid_and_kid_with_the_weights_file(project, inception_file):
    write_params(project / "params.yaml", evaluate={"grid_images": 2, "inception_weights": str(inception_file)})
    assert runner.invoke(app, ["pretrain", "--photos", "photo.npy", "--out", "gen"]).exit_code == 0
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "test", "--out", "res", "--cartoons", "cartoon.npy"])
    assert result.exit_code == 0, result.output
    figures = json.loads((project / "res/metrics.json").read_text())["fid_kid"]
    assert figures["images"] == 3 and figures["cartoon_images"] == 6 and figures["inception"].startswith("fid-inception:")
    assert figures["fid_to_photos"] > 0 and figures["fid_to_cartoons"] > 0
    assert np.isfinite([figures["kid_to_photos"], figures["kid_to_cartoons"], figures["kid_std_to_cartoons"]]).all()
    assert figures["fid_std_to_photos"] > 0 and figures["fid_std_to_cartoons"] > 0
    info = json.loads((project / "res/evaluation.json").read_text())
    assert info["inception"].startswith("fid-inception:")


def test_without_weights_fid_is_absent_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    inception, reason = _inception(Params())
    assert inception is None and "no FID Inception weights" in reason and CACHE_FILES[0] in reason
    assert _inception(Params(evaluate={"fid": False})) == (None, "evaluate.fid is off")


def test_configured_weights_file_missing_exits_2_before_any_work(project):
    write_params(project / "params.yaml", evaluate={"inception_weights": "nowhere/inception.pth"})
    result = runner.invoke(app, ["evaluate", "--model", "no-model-needed", "--photos", "test", "--out", "res"])
    assert result.exit_code == 2 and "evaluate.inception_weights" in result.output


def test_a_file_of_other_weights_is_refused_naming_it(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(RuntimeFailure, match="does not hold FID Inception weights"):
        InceptionFeatures(path)


def test_references_add_psnr_and_ssim_matched_by_stem(project):
    from cartoon.data.imageio import read_rgb, write_png

    assert runner.invoke(app, ["pretrain", "--photos", "photo.npy", "--out", "gen"]).exit_code == 0
    refs = project / "refs"
    write_png(refs / "000.png", read_rgb(project / "test/000.png"))  # the input itself as the expected output
    write_png(refs / "001.png", np.zeros((32, 32, 3), np.uint8))
    write_png(refs / "unmatched.png", np.zeros((32, 32, 3), np.uint8))
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "test", "--out", "res", "--references", "refs"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((project / "res/metrics.json").read_text())
    assert metrics["paired"]["images"] == 2
    # 000's input equals its reference (100 dB, SSIM 1); 001's noise input against black: about 4.8 dB, SSIM near 0
    assert 51 < metrics["paired_input"]["psnr"] < 54 and 0.45 < metrics["paired_input"]["ssim"] < 0.55
    assert 0 < metrics["paired"]["psnr"] < metrics["paired_input"]["psnr"] and -1 <= metrics["paired"]["ssim"] < 1
    write_png(project / "others" / "zzz.png", np.zeros((32, 32, 3), np.uint8))
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "test", "--out", "res", "--references", "others"])
    assert result.exit_code == 2 and "matches a photo by file stem" in result.output


def test_fid_of_a_set_to_itself_is_zero_and_grows_with_blur(inception_file):
    import cv2
    from skimage import data

    inception = InceptionFeatures(inception_file)
    photos = [cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA) for image in (data.astronaut(), data.chelsea(), data.coffee(), data.rocket())]
    features = np.array([inception(photo) for photo in photos])

    def blurred(sigma: float) -> np.ndarray:
        return np.array([inception(cv2.GaussianBlur(photo, (0, 0), sigma)) for photo in photos])

    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    light, heavy = frechet_distance(features, blurred(0.7)), frechet_distance(features, blurred(3.0))
    assert 0 < light < heavy


def test_psnr_and_ssim_match_hand_values():
    from cartoon.metrics import paired

    grey = np.full((32, 32, 3), 100, np.uint8)
    assert paired(grey + 10, grey)["psnr"] == pytest.approx(10 * np.log10(255**2 / 100))  # MSE 100: 28.13 dB
    assert paired(grey, grey) == {"psnr": 100.0, "ssim": 1.0}
    # SSIM of two flat images: luminance term only, (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), C1 = (0.01 * 255)^2
    c1 = (0.01 * 255) ** 2
    assert paired(grey + 10, grey)["ssim"] == pytest.approx((2 * 110 * 100 + c1) / (110**2 + 100**2 + c1), rel=1e-6)

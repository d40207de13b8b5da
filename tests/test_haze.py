"""Dehazing as a style: the haze model, builtin hazy photos paired with clear references by origin,
references kept for held-out photos only, and paired evaluation on the stores resize writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cartoon.cli import app
from cartoon.data.builtin import builtin_items
from cartoon.data.crawl import crawl, load_sources
from cartoon.data.haze import SETTINGS, Haze, apply_haze, depth_map, draw_haze
from cartoon.data.resize import resize, square
from cartoon.data.store import read_store, write_store
from cartoon.errors import UsageError
from cartoon.params import CrawlParams, ResizeParams
from tests.conftest import write_params

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")


def test_depth_is_smooth_in_range_and_far_at_the_top():
    depth = depth_map(np.random.default_rng(0), 64, 48)
    assert depth.shape == (64, 48) and depth.min() == 0 and depth.max() == pytest.approx(1)
    assert depth[:16].mean() > depth[-16:].mean() + 0.3  # the ramp: far at the top
    assert np.abs(np.diff(depth, axis=0)).max() < 0.1 and np.abs(np.diff(depth, axis=1)).max() < 0.1  # no edges


def test_thin_and_dense_transmission_ranges_ordering_and_seed():
    means = {}
    for setting, ranges in SETTINGS.items():
        hazes = [draw_haze(np.random.default_rng([seed]), 48, 48, setting) for seed in range(20)]
        for haze in hazes:
            assert 0 < haze.transmission.min() and haze.transmission.max() <= 1
            assert ranges.beta[0] <= haze.beta <= ranges.beta[1]
            assert haze.transmission.min() == pytest.approx(np.exp(-haze.beta), rel=1e-5)  # depth reaches 1
            assert (haze.airlight <= 1).all() and (haze.airlight >= ranges.airlight[0] * 0.96 - 1e-6).all()
            assert np.ptp(haze.airlight) < 0.1  # near white/grey, a slight tint only
        means[setting] = np.mean([haze.transmission.mean() for haze in hazes])
    assert 0.5 < means["thin"] < 0.75 and 0.2 < means["dense"] < 0.4
    again, other = (draw_haze(np.random.default_rng([seed]), 48, 48, "thin") for seed in (3, 4))
    first = draw_haze(np.random.default_rng([3]), 48, 48, "thin")
    assert np.array_equal(first.transmission, again.transmission) and np.array_equal(first.airlight, again.airlight)
    assert not np.array_equal(first.transmission, other.transmission)


def test_scattering_model_recovers_transmission_and_airlight_and_keeps_clear_pixels():
    """Hazing a black and a white image with one haze gives I0 = A (1 - t) and I1 = t + A (1 - t):
    their difference is t, and A follows; where t = 1 the image is unchanged."""
    rng = np.random.default_rng(0)
    haze = draw_haze(rng, 32, 32, "thin")
    black, white = apply_haze(np.zeros((32, 32, 3), np.uint8), haze), apply_haze(np.full((32, 32, 3), 255, np.uint8), haze)
    recovered_t = (white.astype(float) - black).mean(axis=2) / 255
    assert np.abs(recovered_t - haze.transmission).max() < 1.5 / 255  # rounding to uint8 only
    hazy_enough = haze.transmission < 0.7
    recovered_a = (black[hazy_enough] / 255 / (1 - haze.transmission[hazy_enough, None])).mean(axis=0)
    assert np.abs(recovered_a - haze.airlight).max() < 0.01
    photo = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    clear = Haze(np.ones((32, 32), np.float32), haze.airlight, 0.0)
    assert np.array_equal(apply_haze(photo, clear), photo)
    thin, dense = (apply_haze(photo, draw_haze(np.random.default_rng(1), 32, 32, setting)) for setting in ("thin", "dense"))
    assert photo.std() > thin.std() > dense.std()  # haze takes contrast away, dense more


def test_builtin_hazy_photos_pair_with_clear_references_by_name():
    hazy = list(builtin_items("photo", 6, 32, 0, style="haze", haze="dense"))
    references = list(builtin_items("reference", 6, 32, 0, style="clear"))
    plain = list(builtin_items("photo", 6, 32, 0))
    assert [name for name, _ in hazy] == [name for name, _ in references] == [name for name, _ in plain]
    assert all(np.array_equal(ref, clear) for (_, ref), (_, clear) in zip(references, plain))  # the same crops
    for (_, haze), (_, ref) in zip(hazy, references):
        assert not np.array_equal(haze, ref) and haze.mean() > ref.mean() - 1  # airlight brightens
    clear_targets = [name for name, _ in builtin_items("cartoon", 3, 32, 0, style="clear")]
    assert clear_targets == ["clear/china#crop000", "clear/flower#crop001", "clear/motorcycle#crop002"]  # other photographs
    with pytest.raises(UsageError, match="style 'celshade' for the photo domain"):
        list(builtin_items("photo", 1, 16, 0, style="celshade"))


def _write(path: Path, sources: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


HAZY = {"name": "hazy", "kind": "builtin", "domain": "photo", "count": 10, "size": 32, "seed": 0, "style": "haze"}
REFS = {"name": "refs", "kind": "builtin", "domain": "reference", "count": 10, "size": 32, "seed": 0}
CLEAR = {"name": "clear", "kind": "builtin", "domain": "cartoon", "count": 3, "size": 32, "seed": 0, "style": "clear"}


@pytest.mark.parametrize(("sources", "message"), [
    ([HAZY | {"seed": 1}, REFS], "no builtin photo source with the same seed, size and photos"),
    ([HAZY, {"kind": "local", "domain": "reference", "path": "."}], "reference domain is for builtin sources"),
    ([HAZY | {"style": "clear", "haze": "dense"}], "haze applies with style: haze only"),
    ([CLEAR | {"style": "scenes", "domain": "reference"}], "does not apply to the reference domain"),
])  # fmt: skip
def test_sources_refuse_references_that_pair_with_no_photo(tmp_path, sources, message):
    with pytest.raises(UsageError, match=message):
        load_sources(_write(tmp_path / "sources.yaml", sources))


@pytest.fixture(scope="module")
def resized(tmp_path_factory) -> tuple[Path, object]:
    """The real crawl and resize stages on 10 hazy crops (2 of each of the 5 photo sources),
    their references and 3 clear targets."""
    folder = tmp_path_factory.mktemp("dehaze")
    sources = _write(folder / "sources.yaml", [HAZY, CLEAR, REFS])
    crawl(sources, folder / "raw", CrawlParams(workers=2, near_duplicate_distance=-1))
    manifest = resize(folder / "raw", folder / "data", ResizeParams(size=16, test_fraction=0.4, seed=0, workers=2))
    return folder / "data", manifest


def test_resize_keeps_references_of_held_out_photos_named_by_the_photo(resized, capsys):
    out, manifest = resized
    photos = manifest[manifest.domain == "photo"].set_index("origin")
    test_photos = read_store(out / "photo/test.npy")
    references = read_store(out / "reference/test.npy")
    assert 0 < len(test_photos.names) < 10 and sorted(references.names) == sorted(test_photos.names)
    clear = {f"builtin:{name}": square(image, 16) for name, image in builtin_items("reference", 10, 32, 0)}
    refs = manifest[manifest.domain == "reference"]
    for row in refs.to_dict("records"):
        photo = photos.loc[row["origin"]]
        if photo["split"] == "test":
            assert row["status"] == "ok" and row["paired_with"] == photo["item_id"]
            assert np.array_equal(references.pixels[references.names.index(photo["item_id"])], clear[row["origin"]])
        else:
            assert row["status"] == "dropped" and row["reason"].startswith("its photo is a training photo")
            assert row["path"] == "" and row["paired_with"] == ""


def test_evaluate_scores_outputs_and_inputs_against_the_references(resized, project):
    out, _ = resized
    write_params(project / "params.yaml", evaluate={"faces": "off", "fid": False})  # neither is under test here
    assert runner.invoke(app, ["pretrain", "--photos", "photo.npy", "--out", "gen"]).exit_code == 0
    args = ["evaluate", "--model", "gen", "--photos", str(out / "photo/test.npy"), "--out", "res"]
    result = runner.invoke(app, [*args, "--references", str(out / "reference/test.npy")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((project / "res/metrics.json").read_text())
    assert metrics["paired"]["images"] == metrics["images"] == len(read_store(out / "photo/test.npy").names)
    assert 5 < metrics["paired_input"]["psnr"] < 40 and 0 < metrics["paired_input"]["ssim"] < 1  # hazy vs clear
    assert "photos matched" in json.loads((project / "res/evaluation.json").read_text())["references"]

    write_store(project / "none.npy", [], np.zeros((0, 16, 16, 3), np.uint8))  # the default data: no references
    assert runner.invoke(app, [*args, "--references", "none.npy"]).exit_code == 0
    assert "paired" not in json.loads((project / "res/metrics.json").read_text())
    assert "is empty" in json.loads((project / "res/evaluation.json").read_text())["references"]
    (project / "empty").mkdir()
    result = runner.invoke(app, [*args, "--references", "empty"])
    assert result.exit_code == 2 and "matches a photo by file stem" in result.output

"""The resize stage: square crops of the right size in image stores, and a split that is stable and seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cartoon.data.crawl import crawl
from cartoon.data.imageio import decode_image
from cartoon.data.resize import MANIFEST_COLUMNS, depicted_photograph, resize, source_photograph, split_photos, square
from cartoon.data.store import read_store
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.params import CrawlParams, ResizeParams


def save_noise(path: Path, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def crawled(tmp_path: Path, photos: int, cartoons: int) -> Path:
    """A raw dir made by the real crawl stage from generated local folders (licence: the domain's name)."""
    for i in range(photos):
        save_noise(tmp_path / "in" / "photo" / f"p{i:02d}.png", 40 + i, 30, seed=i)
    for i in range(cartoons):
        save_noise(tmp_path / "in" / "cartoon" / f"c{i:02d}.png", 30, 50, seed=1000 + i)
    sources = [{"kind": "local", "domain": d, "path": f"in/{d}", "licence": f"{d} licence"} for d in ("photo", "cartoon")]
    (tmp_path / "in" / "photo").mkdir(parents=True, exist_ok=True)
    (tmp_path / "in" / "cartoon").mkdir(parents=True, exist_ok=True)
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    crawl(tmp_path / "sources.yaml", tmp_path / "raw", CrawlParams())
    return tmp_path / "raw"


STORES = ["cartoon/train.npy", "face_cartoon/train.npy", "face_photo/train.npy", "photo/test.npy", "photo/train.npy",
          "reference/test.npy"]


def pixels_of(out: Path, manifest: pd.DataFrame, item_id: str) -> np.ndarray:
    """An item's resized pixels, found through the manifest (the index of record)."""
    row = manifest.set_index("item_id").loc[item_id]
    return read_store(out / row["path"]).pixels[row["row"]]


def test_outputs_are_square_stores_indexed_by_the_manifest(tmp_path, capsys):
    raw = crawled(tmp_path, photos=5, cartoons=3)
    out = tmp_path / "data"
    manifest = resize(raw, out, ResizeParams(size=32, test_fraction=0.2, seed=0))

    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert (manifest.licence == manifest.domain + " licence").all()  # attribution carried from the crawl manifest
    assert (manifest.status == "ok").all() and len(manifest) == 8
    assert manifest.split.tolist().count("test") == 1 and set(manifest[manifest.domain == "cartoon"].split) == {"train"}
    for row in manifest.to_dict("records"):
        assert row["path"] == f"{row['domain']}/{row['split']}.npy"
    for path, rows in manifest.groupby("path"):
        store = read_store(out / path)
        assert store.pixels.shape == (len(rows), 32, 32, 3)
        assert store.names == sorted(rows.item_id) == rows.sort_values("row").item_id.tolist()  # rows in item_id order
        assert rows.row.tolist() == list(range(len(rows)))
    photo = manifest[manifest.domain == "photo"].sort_values("width")
    assert photo.width.tolist() == [40, 41, 42, 43, 44] and set(photo.height) == {30}  # original sizes
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted(["manifest.csv", *STORES, *(name.replace(".npy", ".names.txt") for name in STORES)])
    for face in ("face_photo", "face_cartoon"):  # always there for the training stages' deps, with no rows
        assert read_store(out / face / "train.npy").pixels.shape == (0, 32, 32, 3)
    assert manifest.equals(manifest.sort_values(["domain", "split", "item_id"], ignore_index=True))
    assert "resize: 5 photos (4 train, 1 test), 3 cartoons at 32x32, 0 rejected" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 3])
def test_rerun_is_byte_identical_whatever_the_workers(tmp_path, workers):
    raw = crawled(tmp_path, photos=9, cartoons=4)
    resize(raw, tmp_path / "a", ResizeParams(size=16, workers=1))
    resize(raw, tmp_path / "b", ResizeParams(size=16, workers=workers))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_centre_crop_after_scaling_the_shorter_side(tmp_path):
    raw = crawled(tmp_path, photos=2, cartoons=1)
    stripes = np.zeros((100, 300, 3), dtype=np.uint8)
    stripes[:, :100] = (255, 0, 0)
    stripes[:, 100:200] = (0, 255, 0)
    stripes[:, 200:] = (0, 0, 255)
    tiny = np.full((10, 20, 3), 77, dtype=np.uint8)  # enlarged, not padded
    crawl_manifest = pd.read_csv(raw / "manifest.csv", dtype=str)
    stripes_id, tiny_id = crawl_manifest[crawl_manifest.domain == "photo"].item_id
    Image.fromarray(stripes).save(raw / "images" / "photo" / f"{stripes_id}.png")
    Image.fromarray(tiny).save(raw / "images" / "photo" / f"{tiny_id}.png")
    manifest = resize(raw, tmp_path / "data", ResizeParams(size=30, test_fraction=0.0))
    first = pixels_of(tmp_path / "data", manifest, stripes_id)
    second = pixels_of(tmp_path / "data", manifest, tiny_id)
    assert np.all(first == (0, 255, 0))  # only the middle (green) third survives the crop
    assert np.all(second == 77)


def own_sources(ids):
    return {item_id: item_id for item_id in ids}


def test_split_is_seeded_and_sized():
    ids = [f"{i:016x}" for i in range(20)]
    first = split_photos(own_sources(ids), 0.2, seed=1)
    assert first == split_photos(own_sources(reversed(ids)), 0.2, seed=1)  # order of the input is irrelevant
    assert list(first.values()).count("test") == 4
    assert first != split_photos(own_sources(ids), 0.2, seed=2)
    assert list(split_photos(own_sources(ids), 0.0, seed=1).values()).count("test") == 0
    assert list(split_photos(own_sources(ids[:2]), 0.01, seed=1).values()).count("test") == 1  # at least one
    assert list(split_photos(own_sources(ids[:2]), 0.9, seed=1).values()).count("test") == 1  # training keeps one
    assert split_photos(own_sources(ids[:1]), 0.5, seed=1) == {ids[0]: "train"}
    assert list(split_photos(own_sources(ids[:10]), 0.25, seed=1).values()).count("test") == 3  # 2.5 rounds up


@pytest.mark.parametrize("seed", range(10))
def test_split_keeps_every_source_photograph_on_one_side(seed):
    origins = {f"id{s}{c}": f"builtin:photo{s}#crop{c:03d}" for s in range(7) for c in range(3 + s)}
    origins |= {f"clip{f}": f"clip.mp4#frame={f}" for f in range(6)} | {"lone": "/data/lone.jpg"}
    split = split_photos({item: source_photograph(origin) for item, origin in origins.items()}, 0.3, seed)
    sides: dict[str, set[str]] = {}
    for item, origin in origins.items():
        sides.setdefault(source_photograph(origin), set()).add(split[item])
    assert len(sides) == 9 and all(len(side) == 1 for side in sides.values())
    assert {"train", "test"} == set(split.values())
    n_test = list(split.values()).count("test")
    assert abs(n_test - 0.3 * len(origins)) <= max(len(group) for group in sides) / 2 + 6  # near the fraction


def test_resize_holds_out_whole_source_photographs(tmp_path):
    raw = crawled(tmp_path, photos=12, cartoons=2)
    manifest = pd.read_csv(raw / "manifest.csv", dtype=str, keep_default_na=False)
    photos = manifest.domain == "photo"
    manifest.loc[photos, "origin"] = [f"builtin:source{i % 3}#crop{i:03d}" for i in range(int(photos.sum()))]
    manifest.to_csv(raw / "manifest.csv", index=False)
    out = resize(raw, tmp_path / "data", ResizeParams(size=16, test_fraction=0.3))
    photos = out[(out.domain == "photo") & (out.status == "ok")]
    per_source = photos.groupby(photos.origin.map(source_photograph)).split.nunique()
    assert (per_source == 1).all() and set(photos.split) == {"train", "test"}


@pytest.mark.parametrize("seed", range(10))
def test_adding_a_photo_moves_at_most_the_one_it_displaces(seed):
    ids = [f"{i:016x}" for i in range(20)]
    for new in (f"{n:016x}" for n in range(100, 110)):
        before = split_photos(own_sources(ids), 0.2, seed)
        after = split_photos(own_sources([*ids, new]), 0.2, seed)
        moved = [i for i in ids if before[i] != after[i]]
        assert all(before[i] == "test" for i in moved)  # nobody is pulled from train into test
        assert len(moved) <= 1 and (not moved or after[new] == "test")


def test_resize_split_is_deterministic_and_seed_dependent(tmp_path):
    raw = crawled(tmp_path, photos=20, cartoons=2)
    one = resize(raw, tmp_path / "a", ResizeParams(size=16, seed=3))
    again = resize(raw, tmp_path / "b", ResizeParams(size=16, seed=3))
    other = resize(raw, tmp_path / "c", ResizeParams(size=16, seed=4))
    assert one.equals(again)
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()
    assert (one.split == "test").sum() == 4
    assert set(one[one.split == "test"].item_id) != set(other[other.split == "test"].item_id)


def test_stale_outputs_are_removed(tmp_path):
    raw = crawled(tmp_path, photos=3, cartoons=1)
    out = tmp_path / "data"
    stale = out / "photo" / "test" / "gone.png"  # the per-image layout of earlier versions
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    resize(raw, out, ResizeParams(size=16))
    assert not stale.parent.exists()
    assert sorted(p.name for p in out.rglob("*.npy")) == ["test.npy", "test.npy", "train.npy", "train.npy", "train.npy", "train.npy"]


def test_damaged_stored_file_is_rejected_not_fatal(tmp_path):
    raw = crawled(tmp_path, photos=3, cartoons=1)
    stored = sorted((raw / "images" / "photo").iterdir())
    stored[0].write_bytes(stored[0].read_bytes()[:100])
    stored[1].unlink()
    out = tmp_path / "data"
    manifest = resize(raw, out, ResizeParams(size=16, test_fraction=0.0))
    rejected = manifest[manifest.status == "rejected"].set_index("item_id")
    assert rejected.loc[stored[0].stem, "reason"] == "corrupt or truncated"
    assert rejected.loc[stored[1].stem, "reason"] == "unreadable (FileNotFoundError)"
    assert (rejected.path == "").all() and rejected.row.isna().all() and (manifest.status == "ok").sum() == 2
    ok = manifest[(manifest.status == "ok") & (manifest.domain == "photo")]
    store = read_store(out / "photo" / "train.npy")  # the rejected rows leave no gap
    assert store.names == ok.item_id.tolist() and ok.row.tolist() == [0]
    assert np.array_equal(store.pixels[0], square(decode_image(stored[2].read_bytes(), 10**8), 16))


def test_missing_domain_is_a_runtime_failure(tmp_path):
    raw = crawled(tmp_path, photos=3, cartoons=0)
    with pytest.raises(RuntimeFailure, match="no usable cartoons"):
        resize(raw, tmp_path / "data", ResizeParams(size=16))


def test_all_photos_unusable_after_decoding_is_a_runtime_failure(tmp_path):
    raw = crawled(tmp_path, photos=2, cartoons=1)
    for path in (raw / "images" / "photo").iterdir():
        path.write_bytes(b"garbage")
    with pytest.raises(RuntimeFailure, match="no usable photos"):
        resize(raw, tmp_path / "data", ResizeParams(size=16))
    assert "rejected" in (tmp_path / "data" / "manifest.csv").read_text()  # kept for diagnosis


def test_missing_crawl_output_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="crawl manifest not found"):
        resize(tmp_path / "nothing", tmp_path / "data", ResizeParams())


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path)


def test_face_images_become_aligned_crops_with_landmarks_or_a_reason(tmp_path):
    from skimage import data

    from cartoon.data.builtin import load_builtin_photo
    from cartoon.data.faces import TEMPLATE

    import cv2

    astronaut = data.astronaut()[:300, 100:400]  # a face of about 87 px
    hopper = cv2.resize(load_builtin_photo("grace_hopper")[:512], (300, 300), interpolation=cv2.INTER_AREA)  # about 103 px
    faces = tmp_path / "in" / "face_photo"
    _save(faces / "one.png", astronaut)
    _save(faces / "two.png", np.concatenate([astronaut, hopper], axis=1))
    _save(faces / "none.png", data.coffee())
    _save(faces / "tiny.png", hopper[::3, ::3])  # about 32 px: found, but below min_size
    for i in range(3):
        save_noise(tmp_path / "in" / "photo" / f"p{i}.png", 40, 40, seed=i)
        save_noise(tmp_path / "in" / "cartoon" / f"c{i}.png", 40, 40, seed=10 + i)
    sources = [{"kind": "local", "domain": d, "path": f"in/{d}"} for d in ("photo", "cartoon", "face_photo")]
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    crawl(tmp_path / "sources.yaml", tmp_path / "raw", CrawlParams())
    out = tmp_path / "data"
    manifest = resize(tmp_path / "raw", out, ResizeParams(size=64, faces={"min_size": 40, "min_score": 0.95}))

    face_rows = manifest[manifest.domain == "face_photo"]
    rows = face_rows.set_index(face_rows.origin.map(lambda origin: Path(origin).stem))
    assert rows.loc["none", "reason"] == "no face detected"
    assert rows.loc["tiny", "reason"].startswith("face too small")
    kept = manifest[(manifest.domain == "face_photo") & (manifest.status == "ok")]
    assert sorted(Path(o).stem for o in kept.origin) == ["one", "two", "two"]  # two faces, two rows
    assert kept.item_id.str.endswith("-face1").sum() == 1
    store = read_store(out / "face_photo" / "train.npy")
    assert store.pixels.shape == (3, 64, 64, 3) and store.names == sorted(kept.item_id)
    for row in kept.to_dict("records"):
        assert row["face_score"] >= 0.95
        points = np.array(row["landmarks"].split(), float).reshape(5, 2)
        assert np.abs(points - TEMPLATE * 64).max() < 4  # aligned: the five points sit near the template


def test_face_photos_and_cartoons_of_a_held_out_source_are_rejected(tmp_path):
    sources = [
        {"kind": "builtin", "domain": "photo", "count": 4, "size": 96, "photos": ["astronaut", "coffee"]},
        {"kind": "builtin", "domain": "cartoon", "count": 6, "size": 96, "photos": ["astronaut", "coffee", "china"]},
        {"kind": "builtin", "domain": "face_photo", "count": 4, "size": 160, "photos": ["astronaut", "grace_hopper"]},
    ]
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    crawl(tmp_path / "sources.yaml", tmp_path / "raw", CrawlParams())
    manifest = resize(tmp_path / "raw", tmp_path / "data", ResizeParams(size=32, test_fraction=0.5))
    photos = manifest[manifest.domain == "photo"]
    held_out = {source_photograph(o) for o in photos[photos.split == "test"].origin}
    assert len(held_out) == 1
    faces = manifest[manifest.domain == "face_photo"]
    from_held_out = faces.origin.map(source_photograph).isin(held_out)
    assert from_held_out.any() and (~from_held_out).any()
    assert (faces[from_held_out].reason == "source photograph held out for testing (photo test set)").all()
    assert (faces[~from_held_out].status == "ok").all()
    cartoons = manifest[manifest.domain == "cartoon"]  # cel-shaded renderings: builtin:celshade/coffee#crop001
    rendering_held_out = cartoons.origin.map(depicted_photograph).isin(held_out)
    assert rendering_held_out.sum() == 2 and (~rendering_held_out).sum() == 4
    assert (cartoons[rendering_held_out].reason == "source photograph held out for testing (photo test set)").all()
    assert (cartoons[~rendering_held_out].status == "ok").all()


def test_depicted_photograph_drops_a_builtin_rendering_style_only():
    assert depicted_photograph("builtin:celshade/coffee#crop003") == "builtin:coffee"
    assert depicted_photograph("builtin:coffee#crop003") == "builtin:coffee"
    assert depicted_photograph("https://example.org/a/b.jpg") == "https://example.org/a/b.jpg"

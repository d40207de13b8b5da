"""`cartoon cartoonize` and `cartoon export`: any-size tiling, hostile inputs, output confinement, ONNX parity."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cartoon.artifacts import load_cartoonizer, save_generator
from cartoon.cli import app
from cartoon.data.imageio import read_rgb, write_png
from cartoon.inference import cartoonize
from cartoon.methods import get_method
from cartoon.onnx_export import OnnxCartoonizer, export_onnx
from cartoon.tiling import TiledCartoonizer, TileSettings

runner = CliRunner()
TINY_GENERATORS = {
    "cartoongan": {"width": 4, "n_blocks": 1, "upsample": "resize", "input_skip": False},
    "animeganv2": {"width": 4, "n_blocks": 2},
    "whitebox": {"width": 4, "n_blocks": 1},
}


def save_tiny(folder: Path, name: str, seed: int = 0) -> Path:
    """A randomly initialised tiny generator of method ``name``, saved as training saves one."""
    import torch

    method = get_method(name)
    params = method.Params.model_validate({"generator": TINY_GENERATORS[name]})
    torch.manual_seed(seed)
    config = {"method": name, "params": params.model_dump(mode="json"), "size_multiple": method.size_multiple}
    save_generator(folder, method.build_generator(params), config)
    return folder


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with noise: regions of different statistics, like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(6 * x + 1), np.cos(5 * y), np.sin(4 * (x + y))], axis=-1) * 90 + 128
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(TINY_GENERATORS))
def test_tiled_equals_whole_image(tmp_path, name):
    model, config = load_cartoonizer(save_tiny(tmp_path / "gen", name))
    image = photo(96, 80)
    whole = cartoonize(model, image, config["size_multiple"]).astype(float)
    tiled = TiledCartoonizer(model, config["size_multiple"], TileSettings(tile=64, overlap=32, stats_side=96))(image)
    assert np.abs(tiled - whole).mean() <= 2.0, np.abs(tiled - whole).mean()
    reduced = TiledCartoonizer(model, config["size_multiple"], TileSettings(tile=48, overlap=24, stats_side=48))(image)
    assert reduced.shape == image.shape  # statistics from a downscaled copy: any size runs


@pytest.mark.parametrize("name", sorted(TINY_GENERATORS))
def test_bf16_weights_stay_close_to_fp32(tmp_path, name):
    """--precision bf16 runs the weights in bf16, channels-last, whole-image and tiled, close to
    fp32: on average under one level of 255, at most 8 here (random tiny networks; the paper-size
    generators stay within 0.03 on the [-1, 1] scale, about 4 levels, in benchmarks/bench_train.py)."""
    import torch

    model, config = load_cartoonizer(save_tiny(tmp_path / "gen", name))
    image = photo(96, 80)
    for settings in (TileSettings(), TileSettings(tile=64, overlap=32, stats_side=96)):
        fp32 = TiledCartoonizer(model, config["size_multiple"], settings)
        bf16 = TiledCartoonizer(model, config["size_multiple"], settings, bf16=True)
        weights = [p for p in bf16.model.parameters() if p.dim() == 4]
        assert all(p.dtype == torch.bfloat16 and p.is_contiguous(memory_format=torch.channels_last) for p in weights)
        assert next(model.parameters()).dtype == torch.float32  # the model given is left as it was
        difference = np.abs(bf16(image).astype(int) - fp32(image))
        assert 0 < difference.max() <= 8 and difference.mean() < 1, (difference.max(), difference.mean())


def test_per_tile_statistics_would_show(tmp_path):
    """The reason for whole-image statistics: instance norm per tile changes the look."""
    model, config = load_cartoonizer(save_tiny(tmp_path / "gen", "cartoongan"))
    image = photo(96, 80)
    whole = cartoonize(model, image, config["size_multiple"]).astype(float)
    per_tile = np.zeros_like(whole)
    for top in (0, 48):
        per_tile[top : top + 48] = cartoonize(model, image[top : top + 48], config["size_multiple"])
    tiled = TiledCartoonizer(model, config["size_multiple"], TileSettings(tile=64, overlap=32, stats_side=96))(image)
    assert np.abs(per_tile - whole).mean() > 3 * np.abs(tiled - whole).mean()


@pytest.mark.parametrize("name", sorted(TINY_GENERATORS))
def test_onnx_matches_pytorch_at_three_sizes(tmp_path, name):
    model, config = load_cartoonizer(save_tiny(tmp_path / "gen", name))
    report = export_onnx(model, config, tmp_path / "model.onnx")
    sizes = report["sizes"]
    assert len(sizes) == 3 and any(row["height"] != row["width"] for row in sizes)
    assert all(row["max_abs_diff"] <= 1e-3 for row in sizes), sizes
    image = photo(30, 22)  # not a multiple of 4: padded and cropped like the PyTorch path
    onnx_out = OnnxCartoonizer(tmp_path / "model.onnx", "cpu")(image).astype(int)
    assert np.abs(onnx_out - cartoonize(model, image, config["size_multiple"])).max() <= 1


def test_folder_layout_is_mirrored(tmp_path):
    gen = save_tiny(tmp_path / "gen", "whitebox")
    for relative in ("a.png", "sub/b.jpg", "sub/deeper/c.png"):
        path = tmp_path / "photos" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(Image.fromarray(photo(20, 28)), "JPEG" if relative.endswith(".jpg") else "PNG"))
    (tmp_path / "photos" / "notes.txt").write_text("not a photo, not picked")
    write_png(tmp_path / "single.png", photo(24, 20))
    result = runner.invoke(app, ["cartoonize", str(tmp_path / "photos"), str(tmp_path / "single.png"),
                                 "--model", str(gen), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = sorted(str(path.relative_to(tmp_path / "out")) for path in (tmp_path / "out").rglob("*") if path.is_file())
    assert written == ["a.png", "single.png", "sub/b.png", "sub/deeper/c.png"]
    assert read_rgb(tmp_path / "out" / "single.png").shape == (24, 20, 3)
    assert "4 done, 0 skipped" in result.output


def test_clashing_names_never_overwrite(tmp_path):
    gen = save_tiny(tmp_path / "gen", "whitebox")
    for day in ("day1", "day2", "day3"):
        write_png(tmp_path / day / "IMG_1.png", photo(20, 20))
    result = runner.invoke(app, ["cartoonize", *(str(tmp_path / day) for day in ("day1", "day2", "day3")),
                                 "--model", str(gen), "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["IMG_1.png", "IMG_1.png-2.png", "IMG_1.png.png"]
    assert "3 done, 0 skipped" in result.output


def test_concurrent_calls_give_each_image_its_own_statistics(tmp_path):
    """The MLflow scoring server answers requests in threads; one tiler serves them all."""
    from concurrent.futures import ThreadPoolExecutor

    model, config = load_cartoonizer(save_tiny(tmp_path / "gen", "cartoongan"))
    tiler = TiledCartoonizer(model, config["size_multiple"], TileSettings(tile=48, overlap=24, stats_side=96))
    images = [photo(96, 80, seed) for seed in range(4)]
    alone = [tiler(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(tiler, images))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


def _hostile_folder(folder: Path) -> None:
    folder.mkdir()
    good = encode(Image.fromarray(photo(32, 32)))
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "page.jpg").write_bytes(b"<!doctype html><html><body>404</body></html>\n")
    (folder / "bomb.png").write_bytes(encode(Image.new("1", (10_000, 5_000))))  # 50 Mpx in a few KB
    (folder / "deep16.png").write_bytes(encode(Image.fromarray(np.linspace(0, 65535, 32 * 24).astype(np.uint16).reshape(24, 32))))
    (folder / "cmyk.jpg").write_bytes(encode(Image.new("CMYK", (16, 12), (0, 200, 200, 0)), "JPEG"))
    (folder / "palette.png").write_bytes(encode(Image.fromarray(photo(20, 16)).convert("P")))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display: a 40 x 20 file shows as 20 wide, 40 high
    (folder / "rotated.jpg").write_bytes(encode(Image.fromarray(photo(20, 40)), "JPEG", exif=exif.tobytes()))


def test_hostile_inputs_are_skipped_with_reasons(tmp_path):
    gen = save_tiny(tmp_path / "gen", "cartoongan")
    _hostile_folder(tmp_path / "photos")
    result = runner.invoke(app, ["cartoonize", str(tmp_path / "photos"), "--model", str(gen), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    assert "4 done, 4 skipped" in result.output
    for name, reason in (("truncated.png", "corrupt or truncated"), ("empty.jpg", "empty file"), ("page.jpg", "not an image"),
                         ("bomb.png", "too many pixels (10000 x 5000 > 40000000)")):
        assert f"{name}: {reason}" in result.output, result.output
    assert read_rgb(tmp_path / "out" / "rotated.png").shape == (40, 20, 3)  # upright, per EXIF
    assert {path.name for path in (tmp_path / "out").iterdir()} == {"deep16.png", "cmyk.png", "palette.png", "rotated.png"}


def test_only_bad_files_exit_1(tmp_path):
    gen = save_tiny(tmp_path / "gen", "whitebox")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "page.jpg").write_text("<html></html>")
    result = runner.invoke(app, ["cartoonize", str(tmp_path / "photos"), "--model", str(gen), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "page.jpg: not an image" in result.output


def _snapshot(root: Path, skip: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if not path.is_relative_to(skip)}


def test_nothing_is_written_outside_out(tmp_path):
    gen = save_tiny(tmp_path / "gen", "whitebox")
    photos, outside = tmp_path / "photos", tmp_path / "outside"
    for relative in ("sub/x.png", "..png", "...png"):
        write_png(photos / relative, photo(12, 12))
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)  # a planted link out of the output folder
    before = _snapshot(tmp_path, out)
    result = runner.invoke(app, ["cartoonize", str(photos), "--model", str(gen), "--out", str(out)])
    assert result.exit_code == 2 and "outside the output folder" in result.output, result.output
    assert not any(outside.iterdir()) and _snapshot(tmp_path, out) == before

    (out / "sub").unlink()
    (photos / "cartoons").mkdir()
    write_png(photos / "cartoons" / "old.png", photo(12, 12))  # the output folder inside the input folder
    result = runner.invoke(app, ["cartoonize", str(photos), "--model", str(gen), "--out", str(photos / "cartoons")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (photos / "cartoons").rglob("*.png")) == sorted(["..png", "...png", "old.png", "x.png"])
    assert _snapshot(tmp_path, photos / "cartoons") == before | {"out"}  # out: the (now empty) first output folder


@pytest.mark.parametrize("arguments", [
    [],  # no inputs
    ["missing-folder"],
    ["photos", "--model", "models:/no-such-model/1"],
    ["photos", "--model", "no-such-folder"],
    ["photos", "--tile", "30"],
    ["photos", "--backend", "onnx", "--model", "gen", "--tile", "64"],
    ["photos", "--backend", "onnx", "--model", "missing.onnx"],
    ["photos", "--backend", "onnx", "--model", "gen.onnx", "--precision", "bf16"],
    ["photos", "--precision", "fp16"],
    ["empty-folder"],
])  # fmt: skip
def test_usage_errors_exit_2(project, arguments):
    save_tiny(project / "gen", "whitebox")
    (project / "empty-folder").mkdir()
    write_png(project / "photos" / "a.png", photo(12, 12))
    result = runner.invoke(app, ["cartoonize", *arguments, "--out", "out"] if arguments else ["cartoonize", "--out", "out"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_export_then_cartoonize_with_onnx_backend(project):
    gen = save_tiny(project / "gen", "animeganv2")
    result = runner.invoke(app, ["export", str(gen), "--format", "onnx", "--out", "gen.onnx"])
    assert result.exit_code == 0, result.output
    write_png(project / "photos" / "a.png", photo(30, 26))
    for backend, model in (("onnx", "gen.onnx"), ("torch", str(gen))):
        result = runner.invoke(app, ["cartoonize", "photos", "--backend", backend, "--model", model, "--out", backend])
        assert result.exit_code == 0, result.output
    assert np.abs(read_rgb(project / "onnx" / "a.png").astype(int) - read_rgb(project / "torch" / "a.png")).max() <= 1
    result = runner.invoke(app, ["cartoonize", "photos", "--model", str(gen), "--out", "bf16", "--precision", "bf16"])
    assert result.exit_code == 0 and "bf16 on cpu" in result.output, result.output
    assert 0 < np.abs(read_rgb(project / "bf16" / "a.png").astype(int) - read_rgb(project / "torch" / "a.png")).max() <= 8


@pytest.mark.parametrize(("reference", "out"), [
    ("models:/no-such-model/1", "x.onnx"),
    ("no-such-folder", "x.onnx"),
    ("gen", "x.txt"),
])  # fmt: skip
def test_export_bad_reference_exits_2(project, reference, out):
    save_tiny(project / "gen", "whitebox")
    result = runner.invoke(app, ["export", reference, "--out", out])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not (project / out).exists()


def test_export_of_a_registered_model_is_logged_to_its_run(project):
    from cartoon import tracking

    gen = save_tiny(project / "gen", "cartoongan")
    tracking.configure()
    client = mlflow.MlflowClient()
    with mlflow.start_run(experiment_id=tracking.experiment_id("tests")) as run:
        mlflow.log_artifacts(str(gen), "generator")
    name = f"cartoon-export-test-{run.info.run_id[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/generator", run.info.run_id).version
    result = runner.invoke(app, ["export", f"models:/{name}/{version}", "--out", "registered.onnx"])
    assert result.exit_code == 0, result.output
    assert [item.path for item in client.list_artifacts(run.info.run_id, "onnx")] == ["onnx/registered.onnx"]

from pathlib import Path

import pytest

from cartoon.errors import UsageError
from cartoon.methods import flat_params, load_run_params, method_params


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_defaults_validate(tmp_path):
    params = load_run_params(_write(tmp_path, "{}\n"))
    assert params.model.name == "cartoongan"
    assert method_params(params).train.content_weight == 10.0
    assert flat_params(params)["cartoongan.generator.n_blocks"] == 8


def test_repository_params_file_is_valid():
    params = load_run_params(Path(__file__).parents[1] / "params.yaml")
    assert params.vgg.allow_random is True  # the offline default must run without weights


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("train: {epochs: zero}\n", "train.epochs"),
        ("train: {epochs: 0}\n", "train.epochs"),
        ("train: {epoch: 3}\n", "train.epoch: unknown key"),
        ("trian: {}\n", "trian: unknown section"),
        ("model: {name: nosuch}\n", "model.name: unknown method 'nosuch'"),
        ("cartoongan: {train: {content_weight: -1}}\n", "cartoongan.train.content_weight"),
        ("cartoongan: {generator: {upsample: bicubic}}\n", "cartoongan.generator.upsample"),
        ("cartoongan: {generator: {block_convs: 4}}\n", "cartoongan.generator.block_convs: Input should be 2 or 3"),
        ("smooth: {kernel_size: 4}\n", "kernel_size must be odd"),
        ("model: {name: whitebox}\nwhitebox: {generator: {palette_colours: 1}}\n", "whitebox.generator.palette_colours: palette_colours must be 0 (off) or at least 2 (got 1)"),
        ("animeganv2: {generator: {palette_colours: -3}}\n", "animeganv2.generator.palette_colours"),
        ("[1, 2]\n", "mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_params_name_the_key(tmp_path, text, named):
    with pytest.raises(UsageError, match="") as info:
        load_run_params(_write(tmp_path, text))
    assert named in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_run_params(tmp_path / "nope.yaml")


def test_paper_profile_is_valid_and_at_paper_settings():
    params = load_run_params(Path(__file__).parents[1] / "pipeline/profiles/paper-gpu.yaml")
    method = method_params(params)
    assert (method.generator.width, method.generator.n_blocks) == (64, 8)
    assert method.train.content_weight == 10.0 and params.train.epochs == 100 and params.pretrain.epochs == 10
    assert params.vgg.allow_random is False and params.resize.size == 256

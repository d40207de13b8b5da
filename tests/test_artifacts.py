"""Saved generators: damaged or missing model files end in one line and an exit code, never a
traceback; written files are readable by other users."""

import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartoon.artifacts import CONFIG_FILE, GENERATOR_FILE, save_generator, write_json
from cartoon.cli import app
from cartoon.methods.cartoongan import CartoonGAN, CartoonGANParams
from tests.conftest import TINY_PARAMS

runner = CliRunner()
TRAIN = ["train", "--photos", "photo.npy", "--cartoons", "cartoon.npy", "--smoothed", "smooth.npy", "--out", "gen"]


def _save_tiny_generator(folder: Path) -> Path:
    params = CartoonGANParams.model_validate({"generator": TINY_PARAMS["cartoongan"]["generator"]})
    config = {"method": "cartoongan", "params": params.model_dump(mode="json"), "size_multiple": CartoonGAN.size_multiple}
    save_generator(folder, CartoonGAN.build_generator(params), config)
    return folder


class Trap:
    """Unpickling this creates the file ``path``: proof that a loader ran pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _pickle(folder: Path) -> None:
    (folder / GENERATOR_FILE).write_bytes(pickle.dumps({"weights": Trap(folder.parent / "unpickled")}))


def _truncate(folder: Path) -> None:
    data = (folder / GENERATOR_FILE).read_bytes()
    (folder / GENERATOR_FILE).write_bytes(data[: len(data) // 2])


def _edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    edit(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def _wider(folder: Path) -> None:
    _edit_config(folder, lambda config: config["params"]["generator"].update(width=8))


def _not_json(folder: Path) -> None:
    (folder / CONFIG_FILE).write_text('{"method": "cartoongan", ')


def _no_params(folder: Path) -> None:
    _edit_config(folder, lambda config: config.pop("params"))


def _unknown_method(folder: Path) -> None:
    _edit_config(folder, lambda config: config.update(method="no-such-method"))


DAMAGE = {
    "pickle": (_pickle, GENERATOR_FILE, "not a readable safetensors file"),
    "truncated": (_truncate, GENERATOR_FILE, "not a readable safetensors file"),
    "width": (_wider, GENERATOR_FILE, "does not fit the cartoongan generator"),
    "not-json": (_not_json, CONFIG_FILE, "is not valid JSON"),
    "no-params": (_no_params, CONFIG_FILE, "lacks the key(s) params"),
    "unknown-method": (_unknown_method, CONFIG_FILE, "unknown method 'no-such-method'"),
}


def _error_lines(result) -> list[str]:
    """stderr without the warnings a command may print before it reaches the model."""
    return [line for line in result.stderr.splitlines() if not line.startswith("WARNING")]


def _assert_one_line_exit(result, code: int, *expected: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # CliRunner reports an uncaught exception as exit code 1 too
    assert "Traceback" not in result.output
    lines = _error_lines(result)
    assert len(lines) == 1, lines
    assert all(text in lines[0] for text in expected), lines[0]


@pytest.mark.parametrize("case", DAMAGE)
def test_evaluate_a_damaged_model_fails_in_one_line_naming_the_file(project, case):
    damage, bad_file, fault = DAMAGE[case]
    model = _save_tiny_generator(project / "gen")
    damage(model)
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "test", "--out", "res"])
    _assert_one_line_exit(result, 1, str(Path("gen") / bad_file), fault)
    assert not (project / "unpickled").exists()


@pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")
@pytest.mark.parametrize("case", ["truncated", "width"])
def test_train_from_a_damaged_pretrained_model_fails_in_one_line(project, case):
    damage, bad_file, fault = DAMAGE[case]
    damage(_save_tiny_generator(project / "pre"))
    result = runner.invoke(app, [*TRAIN, "--init", "pre"])
    _assert_one_line_exit(result, 1, str(Path("pre") / bad_file), fault)


def test_a_pickle_as_weights_is_never_unpickled_and_the_process_prints_one_line(project):
    _pickle(_save_tiny_generator(project / "gen"))
    command = [sys.executable, "-m", "cartoon.cli", "evaluate", "--model", "gen", "--photos", "test", "--out", "res"]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"failed: {Path('gen') / GENERATOR_FILE} is not a readable safetensors file")
    assert not (project / "unpickled").exists()


@pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")
@pytest.mark.parametrize("command", [["evaluate", "--photos", "test", "--model"], [*TRAIN, "--init"]])
def test_a_folder_without_a_model_is_a_usage_error_naming_what_was_looked_for(project, command):
    (project / "empty[old]").mkdir()  # brackets, which the console must not read as markup
    result = runner.invoke(app, [*command, "empty[old]"])
    _assert_one_line_exit(result, 2, "empty[old]", GENERATOR_FILE, CONFIG_FILE)


@pytest.mark.parametrize("reference", ["nowhere", "models:/no-such-model/1", "models:/no-such-model@champion"])
def test_a_model_reference_that_resolves_to_nothing_is_a_usage_error(project, reference):
    result = runner.invoke(app, ["evaluate", "--model", reference, "--photos", "test"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    errors = [line for line in _error_lines(result) if " INFO " not in line]  # MLflow logs creating its tables
    assert len(errors) == 1 and reference in errors[0], errors


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)], ids=["022", "002", "077"])
def test_written_files_have_the_mode_the_umask_gives(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "report.json", {"a": 1})
        _save_tiny_generator(tmp_path / "gen")
    finally:
        os.umask(previous)
    for path in (tmp_path / "report.json", tmp_path / "gen" / GENERATOR_FILE, tmp_path / "gen" / CONFIG_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path

"""The shared training loop: outputs, MLflow records, resume after a kill, NaN handling."""

import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from lightning_fabric import Fabric
from lightning_fabric.plugins.precision import MixedPrecision
from safetensors.torch import load_file

from cartoon import checkpoints, engine
from cartoon.artifacts import save_generator
from cartoon.batches import data_digest, load_image_set
from cartoon.data.imageio import write_png
from cartoon.data.store import read_store, write_store
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.methods import load_run_params, method_params
from cartoon.methods.cartoongan import CartoonGAN
from cartoon.training import PhaseOutputs, _build_method, run_phase
from tests.conftest import write_params

pytestmark = pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")


def _data(root):
    return {"photo": root / "photo.npy", "cartoon": root / "cartoon.npy", "smooth": root / "smooth.npy"}


def _outputs(root, phase, tag=""):
    return PhaseOutputs(root / f"models{tag}" / phase, root / f"reports{tag}" / phase, root / f"ckpt{tag}" / f"{phase}.pt")


def _pretrain(root, params):
    run_phase("pretrain", params, _data(root), _outputs(root, "pretrain"))
    return root / "models" / "pretrain"


def test_pretrain_then_train_writes_outputs_and_tracks(project):
    params = load_run_params("params.yaml")
    init = _pretrain(project, params)
    metrics = run_phase("train", params, _data(project), _outputs(project, "train"), init)

    assert metrics["steps"] == 4  # 8 photos / batch 4 * 2 epochs
    assert set(metrics["final_loss"]) >= {"g_adv", "content", "d_real", "d_fake", "d_edge"}
    assert metrics["vgg_source"] == "random:0"
    config = json.loads((project / "models/train/generator.json").read_text())
    assert config["method"] == "cartoongan" and set(config["cartoon_reference"]) >= {"edge_density", "flatness"}
    assert not (project / "ckpt/train.pt").exists()  # removed once the phase completed

    record = json.loads((project / "reports/train/mlflow_run.json").read_text())
    assert record["registered_model"] == "cartoon-cartoongan" and record["version"] >= 1
    candidate = mlflow.MlflowClient().get_model_version_by_alias("cartoon-cartoongan", "candidate")
    assert str(candidate.version) == str(record["version"]) and record["alias"] == "candidate"  # the newest is the candidate
    run = mlflow.get_run(record["run_id"])
    assert run.data.tags["phase"] == "train" and run.data.tags["vgg.source"] == "random:0"
    assert len(run.data.tags["data.sha256"]) == 64
    assert run.data.params["cartoongan.train.content_weight"] == "10.0"
    sets = {name: load_image_set(path, name) for name, path in _data(project).items()}
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}  # what the runs' Dataset column shows
    assert sorted(inputs) == ["cartoon", "photo", "smooth"]  # the sets CartoonGAN trains on, each once
    for name, logged in inputs.items():
        assert logged.dataset.digest == data_digest({name: sets[name]})[0][:32]  # the set's own content
        assert json.loads(logged.dataset.source) == {"uri": f"{name}.npy"}  # the path in the repo
        assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "training"
    pretrained = mlflow.get_run(json.loads((project / "reports/pretrain/mlflow_run.json").read_text())["run_id"])
    assert [i.dataset.name for i in pretrained.inputs.dataset_inputs] == ["photo"]
    history = mlflow.MlflowClient().get_metric_history(record["run_id"], "loss/g_total")
    assert [m.step for m in history] == [1, 2, 3, 4]
    written = json.loads((project / "reports/train/metrics.json").read_text())
    assert "seconds" not in written and "images_per_second" not in written  # a rerun must compare equal
    assert json.loads((project / "reports/train/timing.json").read_text())["seconds"] > 0
    csv_lines = (project / "reports/train/losses.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,") and len(csv_lines) == 5
    from cartoon.data.imageio import read_rgb

    samples = read_rgb(project / "reports/train/samples.png")  # the final grid, a DVC image plot
    artifact = mlflow.artifacts.download_artifacts(f"runs:/{record['run_id']}/samples/final.png", dst_path=str(project / "dl"))
    assert np.array_equal(samples, read_rgb(Path(artifact)))  # the same grid MLflow holds

    loaded = mlflow.pyfunc.load_model(record["registered_uri"])
    out = loaded.predict(np.zeros((1, 20, 28, 3), np.uint8))  # any size, not a multiple of 4
    assert out.shape == (1, 20, 28, 3) and out.dtype == np.uint8


class Killed(Exception):
    pass


def _patch_step(monkeypatch, at_call: int, action) -> None:
    """Make CartoonGAN.step call ``action(batch)`` on its ``at_call``-th call (kill, poison, ...)."""
    real_step = CartoonGAN.step
    calls = {"n": 0}

    def patched(self, phase, batch):
        calls["n"] += 1
        if calls["n"] == at_call:
            batch = action(batch)
        return real_step(self, phase, batch)

    monkeypatch.setattr(CartoonGAN, "step", patched)


def _kill(batch):
    raise Killed()


def _run_killed(project, params, phase, step, *init):
    """Run ``phase`` killed at its ``step``-th step; the checkpoint it left behind."""
    with pytest.MonkeyPatch.context() as patch:
        _patch_step(patch, step, _kill)
        with pytest.raises(Killed):
            run_phase(phase, params, _data(project), _outputs(project, phase), *init)
    return torch.load(project / f"ckpt/{phase}.pt", weights_only=True)


def test_interrupted_training_resumes_to_the_same_result(project, capsys):
    params = load_run_params("params.yaml")
    init = _pretrain(project, params)
    reference = run_phase("train", params, _data(project), _outputs(project, "train", "-ref"), init)

    saved = _run_killed(project, params, "train", 3, init)
    assert saved["global_step"] == 2

    capsys.readouterr()
    resumed = run_phase("train", params, _data(project), _outputs(project, "train"), init)
    assert "train: resuming from step 2 of its checkpoint" in " ".join(capsys.readouterr().err.split())
    assert resumed["steps"] == reference["steps"]
    a = load_file(project / "models-ref/train/generator.safetensors")
    b = load_file(project / "models/train/generator.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((project / "reports/train/mlflow_run.json").read_text())["run_id"] == saved["run_id"]


def test_checkpoints_carry_the_cuda_rng_state_and_a_resume_restores_it(project, monkeypatch):
    """A resumed GPU run continues the killed run's CUDA random stream (faked here: no GPU needed)."""
    write_params(project / "params.yaml", pretrain={"device": "cpu"})
    params = load_run_params("params.yaml")
    cuda_state = [torch.arange(16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(checkpoints, "_cuda_rng", lambda: cuda_state)
    monkeypatch.setattr(checkpoints, "_restore_cuda_rng", restored.append)
    saved = _run_killed(project, params, "pretrain", 2)
    assert torch.equal(saved["cuda_rng"][0], cuda_state[0])

    run_phase("pretrain", params, _data(project), _outputs(project, "pretrain"))
    assert len(restored) == 1 and torch.equal(restored[0][0], cuda_state[0])


def test_an_fp16_resume_continues_the_gradient_scale(project, monkeypatch):
    """fp16's gradient scaler (scale, growth tracker) is checkpointed and restored, so a resumed run
    scales as an uninterrupted one. Faked on the CPU: Fabric makes "16-mixed" bf16 there, so the
    engine gets an fp16 plugin around a CPU scaler, built explicitly."""
    plugins = []

    def fp16_fabric(**kwargs):
        kwargs.pop("precision")
        plugins.append(MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)))
        return Fabric(**kwargs, plugins=[plugins[-1]])

    def scale(state):
        return state["scale"], state["_growth_tracker"]

    monkeypatch.setattr(engine, "Fabric", fp16_fabric)
    write_params(project / "params.yaml", pretrain={"batch_size": 2})  # 4 steps, one generator update each
    params = load_run_params("params.yaml")
    saved = _run_killed(project, params, "pretrain", 4)["precision_state"]
    assert scale(saved) == (2.0**9, 1)  # 3 updates from 2^8, doubling every 2nd

    at_resume = []
    with monkeypatch.context() as patch:
        _patch_step(patch, 1, lambda batch: at_resume.append(plugins[-1].state_dict()) or batch)
        run_phase("pretrain", params, _data(project), _outputs(project, "pretrain"))
    assert at_resume == [saved]  # restored before the resumed run's first update; a fresh scaler holds (2^8, 0)
    assert scale(plugins[-1].state_dict()) == (2.0**10, 0)  # 4 updates in all, as uninterrupted; fresh: (2^8, 1)


def test_changed_params_do_not_resume_a_stale_checkpoint(project):
    params = load_run_params("params.yaml")
    old_run = _run_killed(project, params, "pretrain", 2)["run_id"]

    write_params(project / "params.yaml", cartoongan={"generator": {"width": 4, "n_blocks": 1, "upsample": "resize"},
                                                      "pretrain": {"lr": 1e-3}})
    run_phase("pretrain", load_run_params("params.yaml"), _data(project), _outputs(project, "pretrain"))
    record = json.loads((project / "reports/pretrain/mlflow_run.json").read_text())
    assert record["run_id"] != old_run  # a fresh run, not a continuation of the other params' run


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(project, monkeypatch):
    params = load_run_params("params.yaml")
    _patch_step(monkeypatch, 2, lambda batch: {k: torch.full_like(v, float("nan")) for k, v in batch.items()})
    with pytest.raises(RuntimeFailure, match="step 2.*last good checkpoint"):
        run_phase("pretrain", params, _data(project), _outputs(project, "pretrain"))
    saved = torch.load(project / "ckpt/pretrain.pt", weights_only=True)
    assert saved["global_step"] == 1
    weights = saved["method"]["net.generator"]
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (project / "models/pretrain").exists()


def _constant_store(path, count, value):
    write_store(path, [f"{index:03d}" for index in range(count)], np.full((count, 32, 32, 3), value, np.uint8))


def _record_batches(monkeypatch):
    """Mean photo and cartoon value of every training batch the method is given."""
    from cartoon.methods.whitebox import WhiteBox

    seen = []
    original = WhiteBox.step

    def spy(self, phase, batch):
        seen.append({name: round(float(images.mean()), 3) for name, images in batch.items()})
        return original(self, phase, batch)

    monkeypatch.setattr(WhiteBox, "step", spy)
    return seen


def _valued_store(path, values):
    """One 32x32 image per value, filled with it: a batch of one tells which image was drawn."""
    write_store(path, [f"{index:03d}" for index in range(len(values))],
                np.stack([np.full((32, 32, 3), value, np.uint8) for value in values]))  # fmt: skip


def test_face_batches_every_nth_batch_and_epochs_still_see_every_photo(project, monkeypatch):
    """White-box's data mix: every face_every-th batch is faces (photo and cartoon), the cadence
    runs across epochs, and the scenery batches of each epoch still cover all photos."""
    photos, faces = [10 + 5 * i for i in range(8)], [200, 210, 220]
    _valued_store(project / "photo.npy", photos)
    _valued_store(project / "cartoon.npy", [60 + i for i in range(8)])
    _valued_store(project / "face_photo.npy", faces)
    _valued_store(project / "face_cartoon.npy", [250, 251, 252])
    data = {name: project / f"{name}.npy" for name in ("photo", "cartoon", "face_photo", "face_cartoon")}
    write_params(project / "params.yaml", model={"name": "whitebox"},
                 train={"epochs": 2, "batch_size": 1, "face_every": 3, "sample_every": 100})  # fmt: skip
    seen = _record_batches(monkeypatch)
    metrics = run_phase("train", load_run_params("params.yaml"), data, _outputs(project, "train"))
    value = lambda batch: round((batch["photo"] + 1) * 127.5)  # noqa: E731
    kinds = ["face" if value(batch) >= 200 else "scene" for batch in seen]
    assert metrics["steps"] == len(seen) == 16 + 7  # 2 epochs of 8 photos, a face batch after every 2
    assert kinds == ["scene", "scene", "face"] * 7 + ["scene", "scene"]
    scenery = [value(batch) for batch in seen if value(batch) < 200]
    assert sorted(scenery[:8]) == photos and sorted(scenery[8:]) == photos  # each epoch: every photo once
    face_values = [value(batch) for batch in seen if value(batch) >= 200]
    assert sorted(face_values[:3]) == faces and sorted(face_values[3:6]) == faces  # passes over the faces
    assert all(round((batch["cartoon"] + 1) * 127.5) >= 250 for batch, kind in zip(seen, kinds) if kind == "face")
    run = mlflow.get_run(json.loads((project / "reports/train/mlflow_run.json").read_text())["run_id"])
    assert run.data.params["data.face_photos"] == "3" and run.data.params["train.face_every"] == "3"


def test_face_every_one_is_refused():
    from cartoon.params import LoopParams

    with pytest.raises(ValueError, match="face_every must be 0"):
        LoopParams(face_every=1)


@pytest.mark.parametrize("empty", ["store", "folder"])
def test_empty_face_sets_train_on_scenery_and_say_so(project, monkeypatch, capsys, empty):
    for name, value in (("photo", 10), ("cartoon", 60)):
        _constant_store(project / f"flat_{name}.npy", 4, value)
    if empty == "store":  # what the resize stage writes when sources.yaml has no faces
        no_faces = project / "no_faces.npy"
        _constant_store(no_faces, 0, 0)
    else:
        no_faces = project / "no_faces"
        no_faces.mkdir()
        (no_faces / "README.txt").write_text("none\n")
    data = {"photo": project / "flat_photo.npy", "cartoon": project / "flat_cartoon.npy",
            "face_photo": no_faces, "face_cartoon": no_faces}  # fmt: skip
    write_params(project / "params.yaml", model={"name": "whitebox"}, train={"epochs": 1, "batch_size": 1, "face_every": 2})
    seen = _record_batches(monkeypatch)
    run_phase("train", load_run_params("params.yaml"), data, _outputs(project, "train"))
    assert len(seen) == 4 and all(batch["photo"] == round(10 / 127.5 - 1, 3) for batch in seen)
    assert "face sets are empty" in capsys.readouterr().err


def test_store_is_memory_mapped_and_batches_read_only_their_rows(project):
    images = load_image_set(project / "photo.npy", "photo")
    assert isinstance(images.pixels, np.memmap)
    index = torch.tensor([5, 1, 5, 0])  # unsorted, with a repeat (small sets wrap within a batch)
    expected = torch.from_numpy(np.array(images.pixels)).permute(0, 3, 1, 2)[index].float() / 127.5 - 1
    batch = images.batch(index, torch.device("cpu"))
    assert batch.is_contiguous() and torch.allclose(batch, expected, atol=1e-6)


def test_folder_and_store_of_the_same_images_train_alike(project):
    """Folders people pass by hand and the pipeline's stores give one digest and the same weights."""
    for name in ("photo", "cartoon", "smooth"):
        store = read_store(project / f"{name}.npy")
        for image_name, pixels in zip(store.names, store.pixels):
            write_png(project / name / f"{image_name}.png", pixels)
    folders = {name: project / name for name in ("photo", "cartoon", "smooth")}
    stores, loaded = ({name: load_image_set(path, name) for name, path in data.items()} for data in (_data(project), folders))
    assert data_digest(stores) == data_digest(loaded)
    old_style = hashlib.sha256()  # the digest of earlier versions, which held N x 3 x H x W tensors
    for name in sorted(stores):
        old_style.update(name.encode() + "\n".join(stores[name].names).encode())
        old_style.update(torch.from_numpy(np.array(stores[name].pixels)).permute(0, 3, 1, 2).contiguous().numpy().tobytes())
    assert data_digest(stores)[0] == old_style.hexdigest()

    params = load_run_params("params.yaml")
    run_phase("pretrain", params, _data(project), _outputs(project, "pretrain", "-store"))
    run_phase("pretrain", params, folders, _outputs(project, "pretrain", "-folder"))
    a = load_file(project / "models-store/pretrain/generator.safetensors")
    b = load_file(project / "models-folder/pretrain/generator.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)



def _save_pretrained(folder, generator_params):
    params = CartoonGAN.Params.model_validate({"generator": generator_params})
    config = {"method": "cartoongan", "params": {"generator": generator_params}, "size_multiple": 4}
    save_generator(folder, CartoonGAN.build_generator(params), config)
    return folder


def test_train_init_compares_architectures_by_validated_params(project):
    """A generator saved before block_convs existed (so 2, the default) initialises train; a 3-conv one is refused."""
    params = load_run_params("params.yaml")
    before = method_params(params).generator.model_dump(mode="json")
    del before["block_convs"]
    _build_method(params, "train", _data(project), torch.device("cpu"), _save_pretrained(project / "old", before))
    deeper = _save_pretrained(project / "deeper", before | {"block_convs": 3})
    with pytest.raises(UsageError, match="different method or architecture"):
        _build_method(params, "train", _data(project), torch.device("cpu"), deeper)

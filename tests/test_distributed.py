"""Data-parallel training: 2 processes x batch 4 compute the gradients of one process x batch 8,
the batch source shards each epoch between the ranks, `cartoon train` with
`train.distributed.nproc_per_node: 2` launches itself under torchrun and reports once, and the
same command killed mid-run and run again ends bitwise where the uninterrupted run ends."""

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from cartoon.batches import BatchSource, load_image_set
from cartoon.checkpoints import Bookkeeper
from cartoon.launch import launch
from cartoon.methods import available_methods, load_run_params
from cartoon.params import DistributedParams, LoopParams
from cartoon.training import PhaseOutputs, run_phase
from tests.conftest import TINY_PARAMS, make_project, write_params
from tests.local_server import start_server

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
PER_RANK = 4
SIZE = 16
# Tiny networks of every method (White-box narrower than the contract tests' 32).
NETWORKS = {name: dict(TINY_PARAMS[name]) for name in ("cartoongan", "animeganv2", "whitebox")}
NETWORKS["whitebox"] = {"generator": {"width": 8, "n_blocks": 1}, "train": {"disc_width": 4, "n_segments": 8, "workers": 1}}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _features() -> nn.Module:
    """A small frozen VGG stand-in (per-sample, like VGG); seeded, so equal in every process."""
    torch.manual_seed(1)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 3, stride=2, padding=1))
    features.requires_grad_(False)
    return features


def _method(name: str):
    method_cls = available_methods()[name]
    torch.manual_seed(0)  # every rank builds the same networks, as run_phase seeds them
    method = method_cls(method_cls.Params.model_validate(NETWORKS[name]), _features(), torch.device("cpu"))
    method.setup("train", epochs=1, steps_per_epoch=1)
    return method


def _global_batch(name: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    sets = available_methods()[name].sets["train"]
    return {key: torch.rand(WORLD * PER_RANK, 3, SIZE, SIZE, generator=generator) * 2 - 1 for key in sets}


def _gradients(method) -> dict[str, torch.Tensor]:
    """Each network's gradient of its update in the step just taken, as one vector."""
    return {name: torch.cat([p.grad.flatten() for p in net.parameters()]) for name, net in method.networks.items()}


def _step(method, engine, batch) -> None:
    if engine is not None:
        engine.attach(method)
    torch.manual_seed(3)  # the step's own draws (White-box's grayscale) alike in every process
    method.step("train", batch)
    method.close()


def _rank(rank: int, port: int, out: str) -> None:
    """One process of the group: a step of every method on its rows of the global batch (positions
    r, r + W, ... as BatchSource shards them), then a resume whose checkpoint only rank 0 can read."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(WORLD), "GROUP_RANK": "0"})
    torch.set_num_threads(1)
    from cartoon.engine import Engine

    engine = Engine(torch.device("cpu"), "fp32", distributed=DistributedParams(nproc_per_node=WORLD, backend="gloo"))
    results = {}
    for name in NETWORKS:
        method = _method(name)
        batch = {key: images[rank::WORLD] for key, images in _global_batch(name).items()}
        _step(method, engine, batch)
        results[name] = _gradients(method)

    # Resume: rank 1's path does not exist (no shared file system); it gets rank 0's checkpoint.
    trained = method
    results["trained"] = {name: torch.cat([p.flatten() for p in net.parameters()]) for name, net in trained.networks.items()}
    checkpoint = Path(out) / "checkpoint.pt" if rank == 0 else Path(out) / f"absent-{rank}.pt"
    Bookkeeper(checkpoint, "fp", writer=engine.is_main).save(trained, engine, {"global_step": 1, "history": [], "run_id": None, "seconds": 0.0})
    engine.fabric.barrier()
    fresh = _method("whitebox")
    state = Bookkeeper(checkpoint, "fp", writer=engine.is_main, share=engine.from_main).resume(fresh, engine)
    results["resumed_step"] = state["global_step"]
    results["resumed"] = {name: torch.cat([p.flatten() for p in net.parameters()]) for name, net in fresh.networks.items()}
    torch.save(results, Path(out) / f"rank{rank}.pt")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_two_ranks_of_batch_4_average_the_gradients_of_one_process_of_batch_8(tmp_path):
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]
    torch.set_num_threads(1)
    for name in NETWORKS:
        method = _method(name)
        _step(method, None, _global_batch(name))
        single = _gradients(method)
        assert set(single) == set(ranks[0][name])
        for network, gradient in single.items():
            assert gradient.norm() > 0, f"{name} {network}: no gradient"
            for rank in ranks:
                assert _relative(rank[name][network], gradient) < 1e-5, f"{name} {network}"
    assert all(rank["resumed_step"] == 1 for rank in ranks)
    for network, weights in ranks[0]["trained"].items():  # rank 0's trained weights, not a fresh start
        assert all(torch.equal(rank["resumed"][network], weights) for rank in ranks), network


def test_ranks_take_disjoint_shares_that_together_are_one_process_batch(project):
    photos = load_image_set(project / "photo.npy", "photo")  # 8 photos
    one = LoopParams(batch_size=4)
    single = BatchSource({"photo": photos}, {}, one, torch.device("cpu"))
    shards = [BatchSource({"photo": photos}, {}, LoopParams(batch_size=2), torch.device("cpu"), rank, 2) for rank in range(2)]
    assert single.steps_per_epoch == shards[0].steps_per_epoch == 2
    for step in range(single.total_steps):
        whole = single.draw(step)[0]["photo"]
        parts = [shard.draw(step)[0]["photo"] for shard in shards]
        assert torch.equal(torch.stack(parts, 1).flatten(0, 1), whole)  # rank r holds positions r, r + 2, ...
    epoch = [torch.cat([shard.draw(step)[0]["photo"] for step in range(2)]) for shard in shards]
    assert not any(torch.equal(a, b) for a in epoch[0] for b in epoch[1])  # disjoint shares


def test_distributed_params_are_validated():
    with pytest.raises(ValueError, match="node_rank"):
        DistributedParams(nnodes=2, node_rank=2)
    with pytest.raises(ValueError):
        DistributedParams(rdzv_endpoint="no-port")
    assert DistributedParams(nproc_per_node=4, nnodes=2).world_size == 8


# The two-process `cartoon train` of the tests below: 8 photos, 2 ranks x 1 photo, 4 steps an
# epoch, 32 steps (~0.2 s each here, which leaves seconds to interrupt a run mid-way), a checkpoint
# every step (TINY_PARAMS).
TRAIN = {"epochs": 8, "batch_size": 1}
STEPS = 32
KILL_FROM = 6  # interrupted once a checkpoint holds this step or a later one: mid second epoch
SETS = ["--photos", "photo.npy", "--cartoons", "cartoon.npy", "--smoothed", "smooth.npy",
        "--cartoons-gray", "cartoon.npy", "--smoothed-gray", "smooth.npy"]
TRAIN_COMMAND = [sys.executable, "-m", "cartoon.cli", "train", *SETS, "--checkpoint", "ckpt/train.pt"]
PROJECT_FILES = ("dvc.yaml", "photo.*", "cartoon.*", "smooth.*", "models/pretrain")  # image stores: pixels and names


@dataclass(frozen=True)
class TrainRun:
    """A `cartoon train` run to its end in ``folder``, tracked to its own MLflow ``store``; its
    exit code and output (stdout and stderr)."""

    folder: Path
    store: str
    returncode: int
    output: str


def _two_process_params(folder: Path) -> None:
    """The params of the two-process train; each project its own rendezvous port. White-box: its
    steps draw random numbers (the grayscale), so a resume must also continue every rank's RNG."""
    write_params(folder / "params.yaml", model={"name": "whitebox"}, whitebox=NETWORKS["whitebox"], pretrain={"max_steps_per_epoch": 1},
                 train={**TRAIN, "distributed": {"nproc_per_node": 2, "rdzv_endpoint": f"127.0.0.1:{_free_port()}"}})


def _environment(store: str) -> dict[str, str]:
    """The `cartoon` processes import this checkout and track to ``store`` (that test's runs alone)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": store}


def _train_runs(store: str) -> list:
    client = mlflow.MlflowClient(store)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(experiments, filter_string="tags.phase = 'train'")


def _checkpoint_step(path: Path) -> int:
    """The step the checkpoint at ``path`` holds (0: none yet). It is replaced by a rename, so a
    read sees a whole one."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except FileNotFoundError:
        return 0


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (torchrun's workers run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _end(run: subprocess.Popen, processes: list[int]) -> list[int]:
    """End ``run`` as a scheduler ends a job: SIGTERM to its process group (torchrun's agent passes
    it on to its workers, which run in sessions of their own). Whatever of ``processes`` is still
    running a minute later is killed, and returned."""
    try:
        os.killpg(run.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # ended meanwhile
    deadline = time.monotonic() + 60
    while (run.poll() is None or any(_running(pid) for pid in processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in [run.pid, *processes] if _running(pid)]
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run.wait()
    return survivors


def _train(log: Path, store: str) -> tuple[int, str]:
    """Run TRAIN_COMMAND in the working folder to its end; a run that hangs is ended after 10 minutes."""
    run = start_server(TRAIN_COMMAND, _environment(store), log)
    try:
        run.wait(timeout=600)
    except subprocess.TimeoutExpired:
        _end(run, _descendants(run.pid))
        pytest.fail(f"`cartoon train` did not end within 600 s:\n{log.read_text()[-3000:]}")
    return run.returncode, log.read_text()


def _interrupt_after_checkpoint(run: subprocess.Popen, checkpoint: Path, log: Path) -> None:
    """Wait until ``checkpoint`` holds step KILL_FROM or later, then SIGTERM the run (``_end``).
    Fails, rather than passing without a resume, if the run ends first."""
    deadline = time.monotonic() + 300
    while _checkpoint_step(checkpoint) < KILL_FROM and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if run.poll() is not None:
        pytest.fail(f"the run ended (exit code {run.returncode}) before a checkpoint at step {KILL_FROM} or later "
                    f"could be interrupted: give it more steps (TRAIN).\n{log.read_text()[-3000:]}")
    survivors = _end(run, _descendants(run.pid))
    assert not survivors, f"processes {survivors} outlived the SIGTERM of the run's group by a minute"
    step = _checkpoint_step(checkpoint)
    assert step >= KILL_FROM, f"no checkpoint at step {KILL_FROM} within 300 s (last: step {step}):\n{log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def two_process_train(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> TrainRun:
    """One uninterrupted two-process `cartoon train` (after a one-process pretrain), made once for
    the tests of its outputs and of a killed run's resume, which must end where it ends."""
    folder = make_project(tmp_path_factory.mktemp("two-process-train"))
    _two_process_params(folder)
    store = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
        run_phase("pretrain", load_run_params("params.yaml"), {"photo": folder / "photo.npy"},
                  PhaseOutputs(folder / "models/pretrain", folder / "reports/pretrain", folder / "ckpt/pretrain.pt"))
        return TrainRun(folder, store, *_train(folder / "train.log", store))


def test_train_with_two_processes_launches_torchrun_and_reports_once(two_process_train):
    """The stage command unchanged: `cartoon train` re-launches itself in 2 gloo processes."""
    project, output = two_process_train.folder, two_process_train.output
    assert two_process_train.returncode == 0, output
    assert (project / "models/train/generator.safetensors").is_file()
    assert not (project / "ckpt/train.pt").exists()
    assert output.count(f"train: {STEPS} steps") == 1, output  # only rank 0 reports
    metrics = json.loads((project / "reports/train/metrics.json").read_text())
    assert metrics["steps"] == STEPS  # 8 photos, 2 ranks x 1: 4 steps per epoch
    runs = _train_runs(two_process_train.store)
    assert len(runs) == 1 and runs[0].data.params["train.distributed.nproc_per_node"] == "2"


def _loss_history(store: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every loss value the run logged, as (step, value) in step order, per loss."""
    client = mlflow.MlflowClient(store)
    keys = [key for key in client.get_run(run_id).data.metrics if key.startswith("loss/")]
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in keys}


def _rows(losses_csv: Path) -> list[dict[str, str]]:
    with losses_csv.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_killed_two_process_train_rerun_ends_as_the_uninterrupted_run(two_process_train, tmp_path, monkeypatch):
    """`cartoon train` in 2 processes, SIGTERMed after a checkpoint mid-run and run again with the
    same command, resumes that checkpoint in the same MLflow run and ends bitwise where the
    uninterrupted run ends: generator, loss history, metrics, sample grid."""
    whole = two_process_train.folder
    assert two_process_train.returncode == 0, two_process_train.output
    for pattern in PROJECT_FILES:  # the same data and pretrained generator
        for path in whole.glob(pattern):
            (shutil.copytree if path.is_dir() else shutil.copy)(path, tmp_path / path.relative_to(whole))
    _two_process_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    checkpoint = tmp_path / "ckpt/train.pt"

    killed = start_server(TRAIN_COMMAND, _environment(store), tmp_path / "killed.log")
    _interrupt_after_checkpoint(killed, checkpoint, tmp_path / "killed.log")
    assert killed.returncode != 0
    assert not (tmp_path / "models/train").exists()  # it ended before its outputs
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    resumed_from = saved["global_step"]
    assert KILL_FROM <= resumed_from < STEPS and saved["run_id"]

    returncode, output = _train(tmp_path / "rerun.log", store)
    assert returncode == 0, output
    assert not checkpoint.exists()

    losses, expected_losses = _rows(tmp_path / "reports/train/losses.csv"), _rows(whole / "reports/train/losses.csv")
    differ = [row["step"] for row, other in zip(losses, expected_losses) if row != other]
    assert not differ, f"resumed from step {resumed_from}, the losses differ from step {differ[0]} on"
    assert len(losses) == len(expected_losses) == STEPS
    ours, theirs = tmp_path / "models/train", whole / "models/train"
    generator, expected = load_file(ours / "generator.safetensors"), load_file(theirs / "generator.safetensors")
    assert generator.keys() == expected.keys()
    differing = [name for name in expected if not torch.equal(generator[name], expected[name])]
    assert not differing, f"resumed from step {resumed_from}, the generator differs in {differing}"
    assert (ours / "generator.safetensors").read_bytes() == (theirs / "generator.safetensors").read_bytes()
    for name in ("losses.csv", "metrics.json", "samples.png"):
        assert (tmp_path / "reports/train" / name).read_bytes() == (whole / "reports/train" / name).read_bytes(), name

    # The rerun continued the killed run's MLflow run (its id is in the checkpoint), no second one.
    runs = _train_runs(store)
    assert [run.info.run_id for run in runs] == [saved["run_id"]]
    assert json.loads((tmp_path / "reports/train/mlflow_run.json").read_text())["run_id"] == saved["run_id"]
    assert runs[0].info.status == "FINISHED"
    history = _loss_history(store, saved["run_id"])
    uninterrupted = _loss_history(two_process_train.store, _train_runs(two_process_train.store)[0].info.run_id)
    assert history.keys() == uninterrupted.keys()
    for key, logged in history.items():
        # Steps up to the checkpoint were logged once, by the killed run: the rerun did not redo them.
        assert [step for step, _ in logged if step <= resumed_from] == list(range(1, resumed_from + 1)), key
        # A step the killed run logged after its last checkpoint is logged again by the rerun, with the same value.
        assert sorted(set(logged)) == uninterrupted[key], key


def test_the_launcher_returns_the_exit_code_of_a_failed_process(tmp_path, monkeypatch):
    """torchrun reports any failure as 1; the launcher gives back the process's own code (2: usage)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    distributed = DistributedParams(nproc_per_node=2, rdzv_endpoint=f"127.0.0.1:{_free_port()}")
    assert launch(distributed, ["check-params", "--params", "missing.yaml"]) == 2

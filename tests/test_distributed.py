"""Data-parallel training: 2 processes x batch 4 compute the gradients of one process x batch 8,
the batch source shards each epoch between the ranks, and `cartoon train` with
`train.distributed.nproc_per_node: 2` launches itself under torchrun and reports once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from cartoon.batches import BatchSource, load_image_set
from cartoon.checkpoints import Bookkeeper
from cartoon.launch import launch
from cartoon.methods import available_methods, load_run_params
from cartoon.params import DistributedParams, LoopParams
from cartoon.training import PhaseOutputs, run_phase
from tests.conftest import TINY_PARAMS, write_params

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


def test_train_with_two_processes_launches_torchrun_and_reports_once(project):
    """The stage command unchanged: `cartoon train` re-launches itself in 2 gloo processes."""
    port = _free_port()
    write_params(project / "params.yaml",
                 pretrain={"max_steps_per_epoch": 1},
                 train={"epochs": 2, "distributed": {"nproc_per_node": 2, "rdzv_endpoint": f"127.0.0.1:{port}"}})
    store = f"sqlite:///{project / 'mlflow.db'}"  # this test's runs alone
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": store}
    cli = [sys.executable, "-m", "cartoon.cli"]
    sets = ["--photos", "photo.npy", "--cartoons", "cartoon.npy", "--smoothed", "smooth.npy",
            "--cartoons-gray", "cartoon.npy", "--smoothed-gray", "smooth.npy"]
    run_phase("pretrain", load_run_params("params.yaml"), {"photo": project / "photo.npy"},
              PhaseOutputs(project / "models/pretrain", project / "reports/pretrain", project / "ckpt/pretrain.pt"))
    done = subprocess.run([*cli, "train", *sets, "--checkpoint", "ckpt/train.pt"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (project / "models/train/generator.safetensors").is_file()
    assert not (project / "ckpt/train.pt").exists()
    assert done.stderr.count("train: 2 steps") == 1, done.stderr  # only rank 0 reports
    metrics = json.loads((project / "reports/train/metrics.json").read_text())
    assert metrics["steps"] == 2  # 8 photos, 2 ranks x 4: one step per epoch
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.phase = 'train'", output_format="list")
    assert len(runs) == 1 and runs[0].data.params["train.distributed.nproc_per_node"] == "2"



def test_the_launcher_returns_the_exit_code_of_a_failed_process(tmp_path, monkeypatch):
    """torchrun reports any failure as 1; the launcher gives back the process's own code (2: usage)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    distributed = DistributedParams(nproc_per_node=2, rdzv_endpoint=f"127.0.0.1:{_free_port()}")
    assert launch(distributed, ["check-params", "--params", "missing.yaml"]) == 2

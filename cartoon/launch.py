"""Starting a phase's processes for data-parallel training: the stage re-launches itself under torchrun.

``cartoon train`` (and ``pretrain``) with ``distributed.nproc_per_node x nnodes`` above 1 runs
torchrun's launcher (``torch.distributed.run``, in this process) on its own command line, so the
DVC stage command stays the same; torchrun starts ``nproc_per_node`` copies that find it in
their environment (LOCAL_RANK, WORLD_SIZE, ...) and join the group. A process a scheduler
already started under torchrun joins directly. The launcher returns the exit code of the first
process that failed (2 usage, 1 runtime), so exit codes mean what they mean in one process.
"""

from __future__ import annotations

import os
import sys

from cartoon.params import DistributedParams


def torchrun_world_size() -> int | None:
    """The number of processes torchrun started, when it started this one (None otherwise)."""
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return None


def is_main_process() -> bool:
    """Rank 0, the process that reports (every process outside torchrun is)."""
    return int(os.environ.get("RANK", "0")) == 0


def needs_launch(distributed: DistributedParams) -> bool:
    """Several processes asked for, and this is not one of them yet."""
    return distributed.world_size > 1 and torchrun_world_size() is None


def torchrun_arguments(distributed: DistributedParams, command: list[str]) -> list[str]:
    """torchrun's command line for ``command`` (``cartoon`` arguments) on this node. The static
    rendezvous at ``rdzv_endpoint`` (node 0's host:port) fixes each node's rank to ``node_rank``."""
    return [
        f"--nproc_per_node={distributed.nproc_per_node}",
        f"--nnodes={distributed.nnodes}",
        f"--node_rank={distributed.node_rank}",
        f"--rdzv_endpoint={distributed.rdzv_endpoint}",
        "-m", "cartoon.cli", *command,
    ]  # fmt: skip


def launch(distributed: DistributedParams, command: list[str] | None = None) -> int:
    """Run ``command`` (default: this process's arguments) in ``nproc_per_node`` processes under
    torchrun; returns 0, or the exit code of the first process that failed."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(torchrun_arguments(distributed, sys.argv[1:] if command is None else command)))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return failure.exitcode if failure.exitcode in (1, 2) else 1
    return 0

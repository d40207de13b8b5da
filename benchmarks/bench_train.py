"""Training and inference speed of the three methods at their paper sizes (issue 11).

Run from the repository root:
    .venv/bin/python benchmarks/bench_train.py                 # defaults (about 10 min on a 2-core CPU)
    .venv/bin/python benchmarks/bench_train.py --quick         # 128 px training, 512 px inference, 1 step
    .venv/bin/python benchmarks/bench_train.py --device cuda --json bench.json

Everything runs in one process, so every figure shares the machine's state:
1. the machine, and what ``precision: auto`` resolves to on it;
2. a GEMM roofline: GFLOP/s of a 2048^3 product in fp32 and bf16 (fp16 too on CUDA), as a
   matrix product (BLAS) and as a 1x1 convolution (oneDNN/cuDNN, the networks' kernels): the
   faster of the two is the ceiling the training figures are compared with;
3. training, each method at its paper size (the networks of pipeline/profiles/*paper-gpu.yaml),
   batch 4, one step of the adversarial (``train``) phase, images/second of
     (a) the reference way: fp32, eager, the method's step with no engine attached (forward,
         losses, backward, optimiser updates; every loss read back with ``float``, as reference
         scripts that print their losses do);
     (b) the project's defaults: the train section of params.yaml (``precision: auto`` resolved
         for this device, its ``channels_last``) through ``cartoon.engine.Engine``, stepped
         exactly as ``cartoon.training`` steps it;
   (a) and (b) interleaved step by step (a b, b a, ...), so machine noise hits both; then an
   explicit bf16 row where auto did not choose bf16 (it shows why: on a CPU without AMX or
   AVX512-BF16, bf16 is emulated), and for White-box the step with and without its structure
   representation (superpixels);
4. inference, each generator (with its method's test-time step) at 512 and 1024 px, batch 1:
   seconds per image of fp32 eager against the other settings, with the largest output
   difference from fp32 eager on the [-1, 1] scale;
5. precision agreement: each method's first ``--loss-steps`` (50) training steps in fp32 and in
   each mixed precision this device runs fast (bf16; fp16 too on CUDA, with an fp32 rerun there as
   the noise floor of CUDA's nondeterministic kernels), each once with the VGG following autocast
   and once with it in fp32 (``vgg.precision``), from the same weights on the same
   batches; every loss term is smoothed by a moving average over ``--loss-window`` steps and the
   largest gap between the curves is given in percent of the fp32 curve's mean magnitude. By
   default on the networks ``dvc repro`` trains (params.yaml's method sections, 64 px, batch 8),
   so its s/step columns also say how much faster the default run's steps get.

FLOPs are counted once per cell with torch.utils.flop_counter.FlopCounterMode (convolutions and
matrix products, forward and backward; the superpixels and elementwise work are not counted),
so "GFLOP/s" is useful work per second, comparable with the GEMM roofline.

A slow machine cannot run every cell: ``--train-budget-s`` and ``--infer-budget-s`` bound the
time of each table. A method's smallest size always runs while budget is left; a larger size
runs only if its time, predicted from the smaller one by the pixel count, fits the budget left.
A skipped cell is printed with its reason. Timings on a shared machine are noisy: medians are
reported, and the ratios of interleaved settings are steadier than the absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cartoon.data.builtin import builtin_items  # noqa: E402
from cartoon.engine import Engine, cpu_has_fast_bf16, fast_bf16, resolve_channels_last, resolve_precision  # noqa: E402
from cartoon.inference import to_tensor  # noqa: E402
from cartoon.methods import available_methods, get_method, load_run_params, method_params  # noqa: E402
from cartoon.methods.base import Batch, Method, MethodParams  # noqa: E402
from cartoon.params import LoopParams, VggParams, load_params  # noqa: E402
from cartoon.vgg import RandomWeightsWarning, load_vgg  # noqa: E402

PHASE = "train"
# Each method's paper-size networks come from its paper profile, so the benchmark follows them.
PAPER_PROFILES = {
    "cartoongan": ROOT / "pipeline/profiles/paper-gpu.yaml",
    "animeganv2": ROOT / "pipeline/profiles/animeganv2-paper-gpu.yaml",
    "whitebox": ROOT / "pipeline/profiles/whitebox-paper-gpu.yaml",
}
# --model-size tiny: the test suite's networks, for a smoke run of this script in seconds.
TINY = {
    "cartoongan": {"generator": {"width": 4, "n_blocks": 1}, "train": {"disc_width": 4}},
    "animeganv2": {"generator": {"width": 4, "n_blocks": 2}, "train": {"disc_width": 4}},
    "whitebox": {"generator": {"width": 4, "n_blocks": 1}, "train": {"disc_width": 4, "n_segments": 20, "workers": 1}},
}
GEMM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training and inference speed of the methods at paper size: reference fp32 loop vs the "
        "project's engine defaults, against a GEMM roofline (issue 11).",
        epilog="Defaults fit about 10 minutes on a 2-core CPU by skipping (and naming) the cells that would not; "
        "pass --train-budget-s 0 --infer-budget-s 0 to run everything.",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (cuda if available); cuda without CUDA is an error")
    parser.add_argument("--methods", default=",".join(PAPER_PROFILES), help="comma-separated methods (default: all)")
    parser.add_argument("--sizes", default="128,256", help="training image sides, comma-separated ('' = no training table)")
    parser.add_argument("--batch", type=int, default=4, help="training batch size")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per setting (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per setting first (oneDNN/cuDNN plans, allocator)")
    parser.add_argument("--infer-sizes", default="512,1024", help="inference image sides ('' = no inference table)")
    parser.add_argument("--infer-repeats", type=int, default=2, help="timed forward passes per inference setting")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile inference settings (inductor with freezing; compile time excluded)")
    parser.add_argument("--gemm-size", type=int, default=2048, help="side of the roofline's square matrices")
    parser.add_argument("--gemm-max-s", type=float, default=5.0,
                        help="longest one roofline product may take; a dtype that would take longer (emulated bf16) is "
                        "measured at a smaller side, printed")
    parser.add_argument("--bf16-max-s", type=float, default=90.0,
                        help="where bf16 is slow, run the explicit bf16 training row only if one step, and the agreement "
                        "table's bf16 run only if all its steps, are predicted (from the bf16/fp32 conv probe) to take at "
                        "most this; 0 = no limit")
    parser.add_argument("--no-bf16", action="store_true", help="leave out the explicit bf16 training row")
    parser.add_argument("--train-budget-s", type=float, default=420.0, help="time the training table may take (0 = no limit)")
    parser.add_argument("--infer-budget-s", type=float, default=150.0, help="time the inference table may take (0 = no limit)")
    parser.add_argument("--model-size", choices=("paper", "tiny"), default="paper", help="tiny: the test suite's networks (smoke runs)")
    parser.add_argument("--loss-steps", type=int, default=50, help="training steps of the precision agreement table (0 = no table)")
    parser.add_argument("--loss-window", type=int, default=10, help="moving-average window smoothing the loss curves compared")
    parser.add_argument("--loss-networks", choices=("default", "paper", "tiny"), default="default",
                        help="networks of the agreement table: default = params.yaml's (what dvc repro trains), paper, tiny")
    parser.add_argument("--loss-size", type=int, default=None, help="image side of the agreement table (default: params.yaml's resize.size)")
    parser.add_argument("--loss-batch", type=int, default=None, help="batch of the agreement table (default: params.yaml's train.batch_size)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="--sizes 128 --infer-sizes 512 --steps 1")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.infer_sizes, args.steps = "128", "512", 1
    args.methods = [name for name in args.methods.split(",") if name]
    args.sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    args.infer_sizes = sorted(int(s) for s in args.infer_sizes.split(",") if s)
    unknown = [name for name in args.methods if name not in available_methods()]
    if unknown:
        parser.error(f"unknown methods {unknown} (known: {', '.join(available_methods())})")
    if args.steps < 1 or args.infer_repeats < 1 or args.warmup < 0:
        parser.error("--steps and --infer-repeats must be at least 1, --warmup at least 0")
    if args.loss_steps and not 1 <= args.loss_window <= args.loss_steps:
        parser.error("--loss-window must be between 1 and --loss-steps")
    return args


def pick_device(choice: str) -> torch.device:
    """The device to measure; asking for CUDA where there is none is an error, not a CPU run."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: CUDA is not available here (torch "
                         f"{torch.__version__}, built with CUDA {torch.version.cuda}); run on a GPU machine or use --device cpu")
    if choice not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device {choice!r}: use cpu, cuda or auto")
    return torch.device(choice)


# --- timing helpers -------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one call, with the device's queue drained before and after (CUDA is asynchronous)."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(settings: dict[str, Callable[[], Any]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Time each setting ``rounds`` times, alternating the order each round (a b, b a, ...), so a
    burst of load from other processes falls on every setting, not on whichever ran then."""
    times: dict[str, list[float]] = {label: [] for label in settings}
    labels = list(settings)
    for index in range(rounds):
        for label in labels if index % 2 == 0 else labels[::-1]:
            times[label].append(timed(settings[label], device))
    return times


def count_flops(run: Callable[[], Any]) -> int:
    """FLOPs of one call (convolutions and matrix products, forward and backward), as PyTorch counts them."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


class Budget:
    """Time a table may take. A method's first size always runs while any is left; a larger one
    only if its time, predicted from a smaller size by the pixel count, fits what is left."""

    def __init__(self, seconds: float) -> None:
        self.deadline = math.inf if seconds <= 0 else time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def refuses(self, predicted: float | None) -> str | None:
        """Why a cell predicted to take ``predicted`` seconds (None: not known) must be skipped, or None."""
        if self.left() <= 0:
            return "budget spent"
        if predicted is not None and predicted > self.left():
            return f"predicted ~{predicted:.0f} s, {max(self.left(), 0):.0f} s of the budget left"
        return None


def scaled_prediction(done: dict[int, float], size: int) -> float | None:
    """Seconds a cell at ``size`` should take, from the largest smaller size measured (cost ~ pixels)."""
    smaller = [s for s in done if s < size]
    if not smaller:
        return None
    base = max(smaller)
    return done[base] * (size / base) ** 2


# --- machine and roofline -------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), with family/model when the name is generic."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


def cpu_vector_flags() -> list[str]:
    """The AVX/AMX flags the kernel reports (what decides fp32 width and native bf16)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx")))
    return []


def describe_machine(device: torch.device, loop: LoopParams, precision: str) -> dict[str, Any]:
    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": " ".join(cpu_vector_flags()) or "?",
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "train_precision_setting": loop.precision,
        "precision_auto": resolve_precision("auto", device, "train.precision"),
        "channels_last_setting": loop.channels_last,
        "channels_last": resolve_channels_last(loop.channels_last, precision),  # type: ignore[arg-type]
    }
    return machine


def square_product(kind: str, side: int, dtype: torch.dtype, device: torch.device) -> Callable[[], torch.Tensor]:
    """A side x side x side product (2 side^3 FLOPs) as ``matmul`` (BLAS: MKL on x86 CPUs, cuBLAS)
    or as a ``conv1x1`` (side channels in and out over side pixels: the oneDNN/cuDNN kernels the
    networks' convolutions run on; on a CPU these may outrun the BLAS)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(side, side, generator=generator).to(device, dtype)
    b = torch.randn(side, side, generator=generator).to(device, dtype)
    if kind == "matmul":
        return lambda: a @ b
    x, w = a.view(1, side, side, 1), b.view(side, side, 1, 1)
    return lambda: torch.nn.functional.conv2d(x, w)


@torch.no_grad()
def gemm_gflops(kind: str, device: torch.device, dtype: torch.dtype, size: int, max_seconds: float, repeats: int = 5) -> dict[str, Any]:
    """GFLOP/s of a size x size x size product (median of ``repeats``). A dtype so slow that one
    product would exceed ``max_seconds`` (bf16 emulated on a CPU without bf16 instructions) is
    measured at the largest halved side that fits, and says so."""
    probe = min(512, size)
    run = square_product(kind, probe, dtype, device)
    timed(run, device)  # warm-up
    probe_s = statistics.median(timed(run, device) for _ in range(3))
    side = size
    while side > probe and probe_s * (side / probe) ** 3 > max_seconds:
        side //= 2
    run = square_product(kind, side, dtype, device)
    timed(run, device)
    count = repeats if side == size else 3
    seconds = statistics.median(timed(run, device) for _ in range(count))
    return {"kind": kind, "side": side, "gflops": 2 * side**3 / seconds / 1e9, "seconds": seconds, "repeats": count}


def rooflines(gemm: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The ceiling of each precision: the faster of its matmul and 1x1-conv products."""
    best: dict[str, float] = {}
    for key, result in gemm.items():
        precision = key.split()[0]
        best[precision] = max(best.get(precision, 0.0), result["gflops"])
    return best


def bf16_conv_slowdown(device: torch.device) -> float:
    """How many times slower a 3x3 convolution (64 channels, 4 x 64 x 64, forward and backward)
    runs under bf16 autocast than in fp32 here: the predictor of a bf16 training step's time, a
    step being mostly convolutions. (Smaller convolutions understate it: overheads dominate them.)"""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device)
    x = torch.randn(4, 64, 64, 64, device=device, requires_grad=True)

    def step(bf16: bool) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = conv(x)
        out.float().sum().backward()

    seconds = {}
    for bf16 in (False, True):
        step(bf16)
        seconds[bf16] = statistics.median(timed(lambda: step(bf16), device) for _ in range(3))
    return seconds[True] / seconds[False]


# --- methods, batches and steps -------------------------------------------------------------


def method_config(name: str, model_size: str) -> MethodParams:
    """The method's params at paper size (its paper profile's section) or the tests' tiny size."""
    cls = get_method(name)
    if model_size == "tiny":
        return cls.Params.model_validate(TINY[name])
    return method_params(load_run_params(PAPER_PROFILES[name]), name)


def paper_vgg(name: str) -> torch.nn.Module:
    """VGG19 up to the method's paper layer: ImageNet weights when cached, else random ones (the
    same cost, and speed is all this measures)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return load_vgg(VggParams(allow_random=True), get_method(name).content_layer)


def build_method(name: str, params: MethodParams, features: torch.nn.Module, device: torch.device, seed: int = 0) -> Method:
    """The method ready for its train phase, its networks' weights from ``seed``, on its own copy
    of ``features`` (copying is faster than building VGG19 again; the engine may relayout it)."""
    torch.manual_seed(seed)
    method = get_method(name)(params, copy.deepcopy(features), device)
    method.setup(PHASE, epochs=100, steps_per_epoch=100)
    return method


def image_batch(domain: str, count: int, size: int, seed: int) -> torch.Tensor:
    """Builtin photo or cel-shaded cartoon crops as a float NCHW batch in [-1, 1]."""
    return to_tensor([image for _, image in builtin_items(domain, count, size, seed)])


def make_batch(cls: type[Method], size: int, count: int, device: torch.device, seed: int = 0) -> Batch:
    """One batch of every image set the method's train phase reads: photos, cartoons, and the
    grayscale or edge-smoothed sets as gray cartoons (their content does not change the cost)."""
    photos = image_batch("photo", count, size, seed)
    cartoons = image_batch("cartoon", count, size, seed)
    gray = cartoons.mean(dim=1, keepdim=True).expand_as(cartoons).contiguous()
    sets = {"photo": photos, "cartoon": cartoons, "smooth": gray, "cartoon_gray": gray, "smooth_gray": gray}
    return {name: sets[name].to(device) for name in cls.sets[PHASE]}


def reference_step(method: Method, batch: Batch) -> None:
    """(a): the method's step with no engine (plain backward and optimiser steps), losses read as floats."""
    for value in method.step(PHASE, batch).values():
        float(value)


def engine_step(method: Method, engine: Engine, batch: Batch) -> None:
    """(b): the step as cartoon.training._loop runs it: the engine's autocast and layout; the losses
    stay on the device (the loop reads them only at log points)."""
    with engine.autocast():
        method.step(PHASE, engine.batch(batch))


@contextlib.contextmanager
def without_superpixels(method: Method) -> Iterator[None]:
    """White-box with its structure target replaced by the output itself: the superpixel call is
    gone, every network pass and loss term stays (the structure term becomes 0, same FLOPs)."""
    pool = method.structure_pool  # type: ignore[attr-defined]
    pool.submit = lambda images: (lambda: images.detach())  # type: ignore[method-assign]
    try:
        yield
    finally:
        del pool.submit


# --- training table -------------------------------------------------------------------------


@dataclass
class TrainRow:
    method: str
    size: int
    setting: str
    seconds_per_step: float | None = None
    images_per_second: float | None = None
    vs_reference: float | None = None
    gflop_per_step: float | None = None
    gflops: float | None = None
    roofline_percent: float | None = None
    roofline: str | None = None
    steps: int = 0
    note: str = ""


@dataclass
class StructureRow:
    method: str
    size: int
    with_superpixels_s: float
    without_superpixels_s: float
    overhead_percent: float
    superpixel_call_s: float
    call_share_percent: float


@dataclass
class TrainContext:
    """What every training cell shares: the device, settings, rooflines and the bf16 predictor."""

    device: torch.device
    args: argparse.Namespace
    precision: str
    channels_last: bool
    rooflines: dict[str, float]
    bf16_slowdown: float | None  # the conv probe's bf16/fp32 time where bf16 is slow (None: not measured)
    structure: list[StructureRow] = field(default_factory=list)
    reference_s: dict[tuple[str, int], float] = field(default_factory=dict)  # (a)'s s/step by (method, size)


def throughput_row(name: str, size: int, setting: str, times: list[float], flops: int, batch: int,
                   precision: str, ctx: TrainContext, reference_s: float | None) -> TrainRow:
    """A table row from the step times of one setting: medians, useful GFLOP/s and its share of
    the GEMM roofline of the precision it ran at."""
    seconds = statistics.median(times)
    roofline = ctx.rooflines.get(precision)
    gflops = flops / seconds / 1e9
    return TrainRow(
        name, size, setting, seconds, batch / seconds, (reference_s / seconds) if reference_s else None,
        flops / 1e9, gflops, 100 * gflops / roofline if roofline else None, precision, len(times),
    )


def bench_training_cell(name: str, size: int, ctx: TrainContext) -> list[TrainRow]:
    """(a) and (b) for one method and size, interleaved; White-box also without its superpixels."""
    args, device = ctx.args, ctx.device
    params, features = method_config(name, args.model_size), paper_vgg(name)
    reference = build_method(name, params, features, device)
    project = build_method(name, params, features, device)
    engine = Engine(device, ctx.precision, ctx.channels_last)  # type: ignore[arg-type]
    engine.attach(project)
    batch = make_batch(type(project), size, args.batch, device)

    settings = {"a": lambda: reference_step(reference, batch), "b": lambda: engine_step(project, engine, batch)}
    flops = count_flops(settings["b"])  # doubles as (b)'s first warm-up step
    other_layout = "NCHW" if ctx.channels_last else "channels_last"
    if ctx.precision != "fp32":  # the layout decides how fast mixed-precision kernels are: show the other one
        relaid = build_method(name, params, features, device)
        relaid_engine = Engine(device, ctx.precision, not ctx.channels_last)  # type: ignore[arg-type]
        relaid_engine.attach(relaid)
        settings[f"b, {other_layout}"] = lambda: engine_step(relaid, relaid_engine, batch)
        settings[f"b, {other_layout}"]()
    for _ in range(args.warmup):
        settings["a"]()
    for _ in range(args.warmup - 1):
        settings["b"]()
        if f"b, {other_layout}" in settings:
            settings[f"b, {other_layout}"]()
    if name == "whitebox":
        settings["b, no superpixels"] = lambda: _step_without_superpixels(project, engine, batch)
    times = interleaved(settings, args.steps, device)

    reference_s = statistics.median(times["a"])
    layout = "channels_last" if ctx.channels_last else "NCHW"
    rows = [
        throughput_row(name, size, "(a) reference: fp32 eager, no engine", times["a"], flops, args.batch, "fp32", ctx, None),
        throughput_row(name, size, f"(b) project: Engine, auto={ctx.precision}, {layout}", times["b"], flops,
                       args.batch, ctx.precision, ctx, reference_s),
    ]
    rows[0].vs_reference = 1.0
    if f"b, {other_layout}" in times:
        rows.append(throughput_row(name, size, f"    (b) with {other_layout} instead", times[f"b, {other_layout}"], flops,
                                   args.batch, ctx.precision, ctx, reference_s))
    if name == "whitebox":
        ctx.structure.append(structure_row(project, engine, batch, size, times))
    return rows


def _step_without_superpixels(method: Method, engine: Engine, batch: Batch) -> None:
    with without_superpixels(method):
        engine_step(method, engine, batch)


def structure_row(method: Method, engine: Engine, batch: Batch, size: int, times: dict[str, list[float]]) -> StructureRow:
    """White-box's superpixel overhead: (b) against (b) without superpixels, and the superpixel
    call timed alone on this batch's training output (median of 3)."""
    with torch.no_grad(), engine.autocast():
        output = method.output(engine.batch(batch)["photo"])  # type: ignore[attr-defined]
    call = statistics.median(timed(lambda: method.structure_pool.submit(output)(), method.device) for _ in range(3))  # type: ignore[attr-defined]
    with_sp, without_sp = statistics.median(times["b"]), statistics.median(times["b, no superpixels"])
    return StructureRow(method.name, size, with_sp, without_sp, 100 * (with_sp - without_sp) / without_sp, call, 100 * call / with_sp)


def bench_bf16_row(name: str, size: int, ctx: TrainContext, b_row: TrainRow) -> TrainRow:
    """The explicit bf16 row where auto chose something else: measured when fast, or when one step
    is predicted (fp32 step x the conv probe's slowdown) to fit --bf16-max-s; else skipped with the
    prediction, which is itself the reason auto did not choose bf16."""
    args, device = ctx.args, ctx.device
    setting = "bf16 explicit: Engine, bf16-mixed"
    fast = fast_bf16(device)
    predicted = (b_row.seconds_per_step or 0) * (ctx.bf16_slowdown or 1)
    if not fast and ctx.bf16_slowdown is not None and 0 < args.bf16_max_s < predicted:
        return TrainRow(name, size, setting, roofline="bf16", note=f"skipped: predicted ~{predicted:.0f} s/step "
                        f"({ctx.bf16_slowdown:.0f}x fp32, bf16 emulated on this CPU; --bf16-max-s {args.bf16_max_s:.0f})")
    method = build_method(name, method_config(name, args.model_size), paper_vgg(name), device)
    engine = Engine(device, "bf16", ctx.channels_last)
    engine.attach(method)
    batch = make_batch(type(method), size, args.batch, device)
    if fast:  # a fair warm-up; emulated bf16 has no plans worth warming and each step costs minutes
        flops = count_flops(lambda: engine_step(method, engine, batch))
        steps = args.steps
    else:
        flops, steps = int((b_row.gflop_per_step or 0) * 1e9), 1
    times = [timed(lambda: engine_step(method, engine, batch), device) for _ in range(steps)]
    row = throughput_row(name, size, setting, times, flops, args.batch, "bf16", ctx, None)
    reference_s = ctx.reference_s.get((name, size))
    if not fast:
        row.note = "1 step, no warm-up (emulated bf16)"
    if reference_s:
        row.vs_reference = reference_s / row.seconds_per_step  # type: ignore[operator]
    return row


def training_table(ctx: TrainContext) -> list[TrainRow]:
    """Every method at the smallest size, then the next size, within the training budget."""
    args = ctx.args

    def cell(name: str, size: int) -> list[TrainRow]:
        rows = bench_training_cell(name, size, ctx)
        ctx.reference_s[(name, size)] = rows[0].seconds_per_step  # type: ignore[assignment]
        if ctx.precision != "bf16" and not args.no_bf16:
            rows.append(bench_bf16_row(name, size, ctx, rows[1]))
        return rows

    def skipped(name: str, size: int, note: str) -> TrainRow:
        return TrainRow(name, size, "(a), (b)", note=note)

    return within_budget(args.methods, args.sizes, args.train_budget_s, "--train-budget-s", cell, skipped)


Row = TypeVar("Row")


def within_budget(methods: list[str], sizes: list[int], budget_s: float, flag: str,
                  cell: Callable[[str, int], list[Row]], skipped: Callable[[str, int, str], Row]) -> list[Row]:
    """``cell(method, size)`` for every size (smallest first) and method, each cell's time kept to
    predict the method's next size; a cell the ``Budget`` refuses becomes ``skipped(..., note)``."""
    budget = Budget(budget_s)
    seconds: dict[str, dict[int, float]] = {name: {} for name in methods}
    rows: list[Row] = []
    for size in sizes:
        for name in methods:
            reason = budget.refuses(scaled_prediction(seconds[name], size))
            if reason:
                rows.append(skipped(name, size, f"skipped: {reason} ({flag})"))
                print(f"  {name} {size}px: skipped, {reason}", flush=True)
                continue
            started = time.monotonic()
            rows += cell(name, size)
            seconds[name][size] = time.monotonic() - started
            print(f"  {name} {size}px: done in {seconds[name][size]:.0f} s", flush=True)
    return rows


# --- inference table ------------------------------------------------------------------------


@dataclass
class InferRow:
    method: str
    size: int
    setting: str
    seconds_per_image: float | None = None
    vs_eager: float | None = None
    max_abs_diff: float | None = None
    fastest: bool = False
    note: str = ""


@dataclass
class InferSetting:
    """One way to run the generator: its own copy of the weights, memory layout, input dtype and context."""

    label: str
    model: torch.nn.Module
    channels_last: bool
    context: Callable[[], contextlib.AbstractContextManager]
    dtype: torch.dtype = torch.float32


def inference_settings(generator: torch.nn.Module, device: torch.device, compile_: bool) -> tuple[list[InferSetting], list[InferRow]]:
    """fp32 eager (torch.no_grad, NCHW: cartoon.inference.cartoonize's path) first, then the
    candidates; bf16 only where it is fast (elsewhere it is listed as skipped)."""
    def copy_of(channels_last: bool) -> torch.nn.Module:
        model = copy.deepcopy(generator).eval()
        return model.to(memory_format=torch.channels_last) if channels_last else model

    def autocast(dtype: torch.dtype) -> Callable[[], contextlib.AbstractContextManager]:
        return lambda: _stacked(torch.no_grad(), torch.autocast(device.type, dtype=dtype))

    settings = [
        InferSetting("fp32 eager (no_grad, NCHW)", copy_of(False), False, torch.no_grad),
        InferSetting("fp32 channels_last", copy_of(True), True, torch.no_grad),
        InferSetting("fp32 inference_mode + channels_last", copy_of(True), True, torch.inference_mode),
    ]
    skipped: list[InferRow] = []
    bf16_settings = [
        InferSetting("bf16 autocast + channels_last", copy_of(True), True, autocast(torch.bfloat16)),
        InferSetting("bf16 weights + inference_mode + channels_last", copy_of(True).to(torch.bfloat16), True,
                     torch.inference_mode, torch.bfloat16),
    ]
    if compile_:
        settings.append(InferSetting("torch.compile (freezing) + inference_mode + channels_last", torch.compile(copy_of(True)),
                                     True, torch.inference_mode))
        bf16_settings.append(InferSetting("torch.compile (freezing) + bf16 weights + inference_mode + channels_last",
                                          torch.compile(copy_of(True).to(torch.bfloat16)), True, torch.inference_mode,
                                          torch.bfloat16))
    if fast_bf16(device):
        settings += bf16_settings
    else:
        skipped += [InferRow("", 0, s.label, note="skipped: bf16 is emulated here (no AMX/AVX512-BF16)") for s in bf16_settings]
    return settings, skipped


def _stacked(*managers: contextlib.AbstractContextManager) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for manager in managers:
        stack.enter_context(manager)
    return stack


def bench_inference_cell(name: str, size: int, args: argparse.Namespace, device: torch.device) -> list[InferRow]:
    """Seconds per image of each setting (one warm-up, then ``--infer-repeats`` interleaved passes)
    and the largest difference of its output from fp32 eager's."""
    cls = get_method(name)
    torch.manual_seed(0)
    generator = cls.build_generator(method_config(name, args.model_size)).to(device)
    photo = image_batch("photo", 1, size, 1).to(device)
    settings, skipped = inference_settings(generator, device, args.compile)
    runs: dict[str, Callable[[], torch.Tensor]] = {}
    outputs: dict[str, torch.Tensor] = {}
    rows: list[InferRow] = []
    for setting in settings:
        x = photo.to(setting.dtype)
        x = x.contiguous(memory_format=torch.channels_last) if setting.channels_last else x

        def run(setting: InferSetting = setting, x: torch.Tensor = x) -> torch.Tensor:
            with setting.context():
                return cls.infer(setting.model, x)

        try:
            outputs[setting.label] = run().float().cpu()  # warm-up (and compilation), kept for the comparison
        except Exception as exc:  # noqa: BLE001 - e.g. torch.compile without a C++ compiler: report, go on
            rows.append(InferRow(name, size, setting.label, note=f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"))
            continue
        runs[setting.label] = run
    times = interleaved(runs, args.infer_repeats, device)
    eager_label = settings[0].label
    eager_s = statistics.median(times[eager_label])
    for label, values in times.items():
        seconds = statistics.median(values)
        diff = float((outputs[label] - outputs[eager_label]).abs().max())
        rows.append(InferRow(name, size, label, seconds, eager_s / seconds, diff))
    for row in skipped:
        rows.append(InferRow(name, size, row.setting, note=row.note))
    candidates = [row for row in rows if row.seconds_per_image is not None]
    min(candidates, key=lambda row: row.seconds_per_image).fastest = True  # type: ignore[arg-type,return-value]
    order = {row.setting: index for index, row in enumerate(rows)}
    return sorted(rows, key=lambda row: order[row.setting])


def inference_table(args: argparse.Namespace, device: torch.device) -> list[InferRow]:
    def skipped(name: str, size: int, note: str) -> InferRow:
        return InferRow(name, size, "all settings", note=note)

    return within_budget(args.methods, args.infer_sizes, args.infer_budget_s, "--infer-budget-s",
                         lambda name, size: bench_inference_cell(name, size, args, device), skipped)


# --- precision agreement table --------------------------------------------------------------


@dataclass
class AgreementRow:
    method: str
    size: int
    networks: str
    compared: str
    steps: int = 0
    window: int = 0
    worst_term: str | None = None
    worst_gap_percent: float | None = None
    gap_percent: dict[str, float] = field(default_factory=dict)  # per loss term
    fp32_s_per_step: float | None = None
    s_per_step: float | None = None
    vs_fp32: float | None = None
    note: str = ""
    fp32_curves: dict[str, list[float]] = field(default_factory=dict)  # raw per-step losses (JSON only)
    curves: dict[str, list[float]] = field(default_factory=dict)


AGREEMENT_BATCHES = 4  # distinct batches the steps cycle through (made once, outside the timing)


def agreement_config(name: str, networks: str) -> tuple[MethodParams, torch.nn.Module]:
    """The method's params and VGG for the agreement table: params.yaml's (what ``dvc repro``
    trains, its VGG settings included), the paper profile's, or the tests' tiny ones."""
    if networks == "default":
        run = load_run_params(ROOT / "params.yaml")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            return method_params(run, name), load_vgg(run.vgg, get_method(name).content_layer)
    return method_config(name, networks), paper_vgg(name)


def loss_curves(name: str, params: MethodParams, features: torch.nn.Module, device: torch.device, precision: str,
                batches: list[Batch], steps: int) -> tuple[dict[str, list[float]], float]:
    """Every loss term of the first ``steps`` train steps at ``precision``, from seed-0 weights and
    the same random draws, and the mean seconds per step (losses stay on the device until the end)."""
    method = build_method(name, params, features, device)
    engine = Engine(device, precision)  # type: ignore[arg-type]
    engine.attach(method)
    torch.manual_seed(1)
    recorded: list[dict[str, torch.Tensor]] = []
    synchronize(device)
    started = time.perf_counter()
    for index in range(steps):
        with engine.autocast():
            recorded.append(method.step(PHASE, engine.batch(batches[index % len(batches)])))
    synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    return {key: [float(losses[key]) for losses in recorded] for key in recorded[0]}, seconds


def smoothed_gap_percent(reference: list[float], other: list[float], window: int) -> float:
    """Largest gap between the two curves' moving averages, in percent of the reference curve's
    mean magnitude (a per-step ratio would explode where a term crosses zero)."""
    kernel = torch.ones(1, 1, window, dtype=torch.float64) / window

    def smooth(values: list[float]) -> torch.Tensor:
        return torch.nn.functional.conv1d(torch.tensor(values, dtype=torch.float64).view(1, 1, -1), kernel).flatten()

    ref, oth = smooth(reference), smooth(other)
    scale = float(ref.abs().mean())
    return 100 * float((oth - ref).abs().max()) / scale if scale > 0 else 0.0


def agreement_settings(device: torch.device) -> list[tuple[str, bool]]:
    """What is compared with fp32, as (precision, VGG in fp32): the mixed precisions that are fast
    here, each also with ``vgg.precision: fp32`` (content terms near zero drown in bf16's VGG
    rounding), and on CUDA an fp32 rerun (its kernels are not bitwise deterministic: the noise
    floor of the comparison)."""
    if device.type == "cuda":
        mixed = ["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"]
        return [(precision, vgg_fp32) for precision in mixed for vgg_fp32 in (False, True)] + [("fp32", False)]
    return [("bf16", False), ("bf16", True)]


def bench_agreement_cell(name: str, ctx: TrainContext) -> list[AgreementRow]:
    """fp32 against each setting of ``agreement_settings`` for one method. Where bf16 is
    emulated it runs only if its steps are predicted (fp32 time x the conv probe) to fit --bf16-max-s."""
    args, device = ctx.args, ctx.device
    run = load_params(ROOT / "params.yaml")
    size, batch_size = args.loss_size or run.resize.size, args.loss_batch or run.train.batch_size
    params, features = agreement_config(name, args.loss_networks)
    batches = [make_batch(get_method(name), size, batch_size, device, seed) for seed in range(AGREEMENT_BATCHES)]
    reference, reference_s = loss_curves(name, params, features, device, "fp32", batches, args.loss_steps)
    rows = []
    vgg_runs = {}  # the same frozen weights, following autocast or outside it, whatever params.yaml says
    for vgg_fp32 in (False, True):
        vgg_runs[vgg_fp32] = copy.copy(features)
        vgg_runs[vgg_fp32].fp32 = vgg_fp32
    for precision, vgg_fp32 in agreement_settings(device):
        label = "fp32 rerun" if precision == "fp32" else precision + (" + fp32 VGG" if vgg_fp32 else "")
        row = AgreementRow(name, size, args.loss_networks, f"{label} vs fp32", args.loss_steps, args.loss_window,
                           fp32_s_per_step=reference_s)
        emulated = precision == "bf16" and not fast_bf16(device)
        predicted = reference_s * (ctx.bf16_slowdown or 1) * args.loss_steps
        if emulated and ctx.bf16_slowdown is not None and 0 < args.bf16_max_s < predicted:
            row.note = (f"skipped: predicted ~{predicted:.0f} s ({ctx.bf16_slowdown:.0f}x fp32, bf16 emulated on this "
                        f"CPU; --bf16-max-s {args.bf16_max_s:.0f})")
            rows.append(row)
            continue
        curves, row.s_per_step = loss_curves(name, params, vgg_runs[vgg_fp32], device, precision, batches, args.loss_steps)
        row.vs_fp32 = reference_s / row.s_per_step
        row.fp32_curves, row.curves = reference, curves
        row.gap_percent = {key: smoothed_gap_percent(reference[key], curves[key], args.loss_window) for key in reference}
        row.worst_term = max(row.gap_percent, key=row.gap_percent.__getitem__)
        row.worst_gap_percent = row.gap_percent[row.worst_term]
        row.note = "bf16 emulated on this CPU" if emulated else ""
        rows.append(row)
    return rows


def agreement_table(ctx: TrainContext) -> list[AgreementRow]:
    rows = []
    for name in ctx.args.methods:
        started = time.monotonic()
        rows += bench_agreement_cell(name, ctx)
        print(f"  {name}: done in {time.monotonic() - started:.0f} s", flush=True)
    return rows


# --- printing -------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """Plain aligned text (numbers right-aligned), so the output pastes into a README as is."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    print(f"\n{title}")
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line.rstrip())
    print("-" * len(line))
    for row in rows:
        cells = [c.rjust(w) if c[:1].isdigit() or c[:1] in "-+" and c[1:2].isdigit() else c.ljust(w) for c, w in zip(row, widths)]
        print("  ".join(cells).rstrip())


def print_machine(machine: dict[str, Any], gemm: dict[str, dict[str, Any]], slowdown: float | None) -> None:
    print("Machine")
    print(f"  CPU            {machine['cpu']}, {machine['cores']} cores (torch threads {machine['torch_threads']})")
    print(f"  vector ISA     {machine['cpu_flags']}; torch CPU capability {machine['cpu_capability']}")
    print(f"  fast CPU bf16  {machine['cpu_fast_bf16']} (cartoon.engine.cpu_has_fast_bf16: AMX or AVX512-BF16)")
    print(f"  torch          {machine['torch']}; device {machine['device']}" + (f" ({machine['gpu']})" if machine["gpu"] else ""))
    print(f"  params.yaml    train.precision {machine['train_precision_setting']} -> {machine['precision_auto']}, "
          f"channels_last {machine['channels_last_setting']} -> {machine['channels_last']}")
    rows = [[name.split()[0], r["kind"], f"{r['side']}^3", f"{r['gflops']:.2f}", f"{r['seconds'] * 1000:.1f}", str(r["repeats"])]
            for name, r in gemm.items()]
    print_table("GEMM roofline (median; a precision's roofline is its faster kind)",
                ["dtype", "kind", "product", "GFLOP/s", "ms/product", "n"], rows)
    if slowdown is not None:
        print(f"bf16 autocast / fp32 time of a 3x3 conv (64 ch, 4 x 64 x 64), forward + backward: {slowdown:.1f}x")


def print_training(rows: list[TrainRow], structure: list[StructureRow]) -> None:
    table = [
        [r.method, str(r.size), r.setting, fmt(r.seconds_per_step, ".2f"), fmt(r.images_per_second, ".3f"),
         fmt(r.vs_reference, ".2f") + ("x" if r.vs_reference else ""), fmt(r.gflop_per_step, ".0f"),
         fmt(r.gflops, ".1f"), (fmt(r.roofline_percent, ".0f") + f"% {r.roofline}") if r.roofline_percent else "-",
         (f"{r.steps}" if r.steps else "-"), r.note]
        for r in rows
    ]
    print_table("Training (train phase, batch 4; medians of the timed steps)",
                ["method", "px", "setting", "s/step", "img/s", "vs (a)", "GFLOP/step", "GFLOP/s", "of roofline", "n", "note"], table)
    if structure:
        print_table("White-box structure representation (superpixels), setting (b)",
                    ["method", "px", "step s", "step s w/o superpixels", "overhead", "superpixel call s", "share of step"],
                    [[s.method, str(s.size), f"{s.with_superpixels_s:.2f}", f"{s.without_superpixels_s:.2f}",
                      f"{s.overhead_percent:+.0f}%", f"{s.superpixel_call_s:.2f}", f"{s.call_share_percent:.0f}%"] for s in structure])


def print_inference(rows: list[InferRow]) -> None:
    table = [
        [r.method, str(r.size), r.setting + (" *" if r.fastest else ""), fmt(r.seconds_per_image, ".3f"),
         fmt(r.vs_eager, ".2f") + ("x" if r.vs_eager else ""), fmt(r.max_abs_diff, ".1e"), r.note]
        for r in rows
    ]
    print_table("Inference (batch 1, generator + test-time step; * fastest; max |diff| vs fp32 eager on [-1, 1])",
                ["method", "px", "setting", "s/image", "vs eager", "max |diff|", "note"], table)


def print_agreement(rows: list[AgreementRow]) -> None:
    table = [
        [r.method, str(r.size), r.networks, r.compared, fmt(r.fp32_s_per_step, ".3f"), fmt(r.s_per_step, ".3f"),
         fmt(r.vs_fp32, ".2f") + ("x" if r.vs_fp32 else ""), fmt(r.worst_gap_percent, ".2f") + ("%" if r.worst_gap_percent is not None else ""),
         r.worst_term or "-", r.note]
        for r in rows
    ]
    steps, window = (rows[0].steps, rows[0].window) if rows else (0, 0)
    print_table(f"Precision agreement (first {steps} train steps, same weights and batches; largest gap of the {window}-step "
                "moving averages, % of fp32's mean magnitude, worst loss term)",
                ["method", "px", "networks", "compared", "fp32 s/step", "s/step", "vs fp32", "worst gap", "term", "note"], table)


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)  # its "Using bfloat16 AMP" lines
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile:  # inference graphs: weights folded in as constants (prepacked for oneDNN on CPUs)
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    device = pick_device(args.device)
    loop = load_params(ROOT / "params.yaml").train
    precision = resolve_precision(loop.precision, device, "train.precision")
    started = time.monotonic()

    machine = describe_machine(device, loop, precision)
    gemm_names = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    gemm = {f"{name} {kind}": gemm_gflops(kind, device, GEMM_DTYPES[name], args.gemm_size, args.gemm_max_s)
            for name in gemm_names for kind in ("matmul", "conv1x1")}
    needs_probe = ((args.sizes and not args.no_bf16) or args.loss_steps) and not fast_bf16(device) and args.bf16_max_s > 0
    slowdown = bf16_conv_slowdown(device) if needs_probe else None
    print_machine(machine, gemm, slowdown)

    ctx = TrainContext(device, args, precision, machine["channels_last"], rooflines(gemm), slowdown)
    train_rows: list[TrainRow] = []
    if args.sizes:
        print(f"\nTraining: {', '.join(args.methods)} at {args.sizes} px ({args.model_size} size), "
              f"{args.warmup} warm-up + {args.steps} timed steps per setting ...", flush=True)
        train_rows = training_table(ctx)
        print_training(train_rows, ctx.structure)
    infer_rows: list[InferRow] = []
    if args.infer_sizes:
        print(f"\nInference at {args.infer_sizes} px, 1 warm-up + {args.infer_repeats} timed passes per setting ...", flush=True)
        infer_rows = inference_table(args, device)
        print_inference(infer_rows)
    agreement_rows: list[AgreementRow] = []
    if args.loss_steps:
        print(f"\nPrecision agreement: {', '.join(args.methods)}, {args.loss_networks} networks, "
              f"{args.loss_steps} steps per precision ...", flush=True)
        agreement_rows = agreement_table(ctx)
        print_agreement(agreement_rows)

    total = time.monotonic() - started
    print(f"\nTotal {total:.0f} s")
    result = {
        "machine": machine, "gemm": gemm, "rooflines": rooflines(gemm), "bf16_conv_slowdown": slowdown,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "training": [asdict(r) for r in train_rows], "structure": [asdict(s) for s in ctx.structure],
        "inference": [asdict(r) for r in infer_rows], "agreement": [asdict(r) for r in agreement_rows],
        "total_seconds": total,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()

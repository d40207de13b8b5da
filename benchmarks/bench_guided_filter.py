"""Guided filter speed: the box mean it is built on, three ways, side by side in one run.

Run: .venv/bin/python benchmarks/bench_guided_filter.py [--repeats 30] [--threads 0] [--step-rounds 3]

White-box calls the guided filter in every training step (the output filter, r=1, on the
generator's output; the surface representation, r=5, on the output and the cartoons) and once
per image at inference (r=1). Each call takes five box means and their backward. Compared,
as ``guided_filter`` forward + backward on the training shapes and forward only on an
inference-size image:
  (a) avg_pool2d    one (2r+1)x(2r+1) average pool (count_include_pad=False), the filter's
                    textbook form and this project's until this benchmark;
  (b) separable     a (1, 2r+1) pool, then a (2r+1, 1) pool: the clipped window is a
                    rectangle, so its mean is the mean of row means, exactly;
  (c) cumsum        running sums along each axis, differences of two of them (the integral
                    image), divided by the clipped window's length: cost independent of r;
                    the sums in fp64;
  (d) the same with the sums in fp32;
  (e) cartoon.guided_filter.box_mean: (a) below r = 3, (c)/(d) from r = 3 (fp32 sums up to 512
                    pixels, fp64 beyond).
Times are the best of --repeats interleaved rounds (a shared machine's noise hits every way
alike), and max |diff| is against the fp64 avg_pool2d result. Last, whole White-box train
steps (params.yaml's networks) with (a) and with the project's box mean, interleaved likewise.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cartoon.guided_filter as gf  # noqa: E402

BoxMean = Callable[[torch.Tensor, int], torch.Tensor]


def pooled(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=2 * r + 1, stride=1, padding=r, count_include_pad=False)


def separable(x: torch.Tensor, r: int) -> torch.Tensor:
    x = F.avg_pool2d(x, (1, 2 * r + 1), stride=1, padding=(0, r), count_include_pad=False)
    return F.avg_pool2d(x, (2 * r + 1, 1), stride=1, padding=(r, 0), count_include_pad=False)


def cumsum(sum_dtype: torch.dtype) -> BoxMean:
    """Running means along the width, then the height, their sums taken in ``sum_dtype``."""
    return lambda x, r: gf.running_mean(gf.running_mean(x, r, -1, sum_dtype), r, -2, sum_dtype)


WAYS: dict[str, BoxMean] = {
    "(a) avg_pool2d": pooled, "(b) separable": separable, "(c) cumsum, fp64 sums": cumsum(torch.float64),
    "(d) cumsum, fp32 sums": cumsum(torch.float32), "(e) project box_mean": gf.box_mean,
}


CASES = [  # (what, shape, r, backward)
    ("train: output filter", (8, 3, 64, 64), 1, True),
    ("train: surface", (16, 3, 64, 64), 5, True),
    ("train 256 px: surface", (4, 3, 256, 256), 5, True),
    ("inference 1024 px", (1, 3, 1024, 1024), 1, False),
]


@contextlib.contextmanager
def using(box: BoxMean) -> Iterator[None]:
    """guided_filter (and White-box, through it) computes its box means with ``box`` inside."""
    original, gf.box_mean = gf.box_mean, box
    try:
        yield
    finally:
        gf.box_mean = original


def inputs(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The guide and source of a case: seeded uniform noise on [-1, 1]."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=generator) * 2 - 1, torch.rand(shape, generator=generator) * 2 - 1


def run_case(shape: tuple[int, ...], r: int, backward: bool, box: BoxMean) -> Callable[[], torch.Tensor]:
    guide, src = inputs(shape)
    src.requires_grad_(backward)

    def once() -> torch.Tensor:
        with using(box):
            out = gf.guided_filter(guide, src, r, 0.01)
        if backward:
            out.sum().backward()
        return out.detach()

    return once


def whitebox_steps(ways: dict[str, BoxMean], steps: int, repeats: int) -> dict[str, float]:
    """Seconds per White-box train step (params.yaml's networks, 64 px, batch 8, fp32) with
    each box mean, the ways interleaved over ``repeats`` rounds of ``steps`` steps (best kept)."""
    from benchmarks.bench_train import agreement_config, build_method, make_batch
    from cartoon.engine import Engine
    from cartoon.methods import get_method

    device = torch.device("cpu")
    params, features = agreement_config("whitebox", "default")
    method = build_method("whitebox", params, features, device)
    engine = Engine(device, "fp32")
    engine.attach(method)
    batches = [engine.batch(make_batch(get_method("whitebox"), 64, 8, device, seed)) for seed in range(2)]
    best = dict.fromkeys(ways, float("inf"))
    try:
        for round_ in range(repeats + 1):  # round 0 warms up
            for name, box in ways.items():
                started = time.perf_counter()
                with using(box):
                    for index in range(steps):
                        method.step("train", batches[index % 2])
                if round_:
                    best[name] = min(best[name], (time.perf_counter() - started) / steps)
    finally:
        method.close()
    return best


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--step-rounds", type=int, default=3, help="rounds of 5 White-box train steps per way (0 = skip)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per call, best of {args.repeats}")
    print(f"{'case':24s} {'r':>2s} {'way':24s} {'ms':>8s} {'vs (a)':>7s} {'max |diff|':>11s}")
    rows: list[dict[str, object]] = []
    for what, shape, r, backward in CASES:
        runs = {name: run_case(shape, r, backward, box) for name, box in WAYS.items()}
        with using(pooled):
            reference = gf.guided_filter(*(x.double() for x in inputs(shape)), r, 0.01)
        best = dict.fromkeys(runs, float("inf"))
        outputs = {name: run() for name, run in runs.items()}  # warm-up
        for _ in range(args.repeats):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - started)
        for name in runs:
            diff = (outputs[name].double() - reference).abs().max().item()
            rows.append({"case": what, "r": r, "way": name, "ms": best[name] * 1e3, "max_abs_diff": diff})
            print(f"{what:24s} {r:2d} {name:24s} {best[name] * 1e3:8.2f} {best['(a) avg_pool2d'] / best[name]:6.2f}x {diff:11.2e}")
    if args.step_rounds:
        ways = {name: WAYS[name] for name in ("(a) avg_pool2d", "(e) project box_mean")}
        steps = whitebox_steps(ways, 5, args.step_rounds)
        for name, seconds in steps.items():
            print(f"White-box train step (params.yaml networks, 64 px, batch 8, fp32), {name}: {seconds:.3f} s "
                  f"({steps['(a) avg_pool2d'] / seconds:.2f}x)")
    return rows


if __name__ == "__main__":
    main()

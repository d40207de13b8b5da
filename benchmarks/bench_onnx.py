"""ONNX export parity and speed: onnxruntime against PyTorch for every method.

Run: .venv/bin/python benchmarks/bench_onnx.py [--sizes 256x256 384x640 720x480] [--repeats 3]

Generators are the methods' default sizes from params.yaml, randomly initialised (as in
bench_tiling.py). Each is exported by ``cartoon.onnx_export.export_onnx`` (which checks its own
parity sizes), then both runtimes cartoonize the same random photo at each size: max abs
difference on the [-1, 1] scale, and the best of --repeats wall times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_tiling import default_cartoonizer  # noqa: E402
from cartoon.onnx_export import _session, export_onnx  # noqa: E402


def best_seconds(function, repeats: int) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["cartoongan", "animeganv2", "whitebox"])
    parser.add_argument("--sizes", nargs="+", default=["256x256", "384x640", "720x480"], help="HxW, multiples of 4")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.methods:
        model, multiple = default_cartoonizer(name)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.onnx"
            start = time.perf_counter()
            report = export_onnx(model, {"method": name, "size_multiple": multiple}, path)
            sizes = ", ".join(f"{row['height']}x{row['width']}" for row in report["sizes"])
            print(f"{name}: export + parity check {time.perf_counter() - start:.1f} s, max abs diff {report['max_abs_diff']:.2e} at {sizes}")
            session = _session(str(path), "cpu")
            for size in args.sizes:
                height, width = map(int, size.split("x"))
                photo = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
                with torch.no_grad():
                    expected = model(photo).numpy()
                found = session.run(None, {"photo": photo.numpy()})[0]
                with torch.no_grad():
                    torch_s = best_seconds(lambda: model(photo), args.repeats)
                onnx_s = best_seconds(lambda: session.run(None, {"photo": photo.numpy()}), args.repeats)
                print(f"  {height}x{width}: max abs diff {np.abs(found - expected).max():.2e}; "
                      f"PyTorch {torch_s * 1000:.0f} ms, onnxruntime {onnx_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()

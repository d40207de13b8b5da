"""Smoke run of benchmarks/bench_train.py at tiny settings: every table is produced, with the
rows and fields the README quotes, and asking for CUDA where there is none is a clear error."""

import json

import pytest
import torch

from benchmarks.bench_train import main


def test_tiny_run_writes_every_table(tmp_path, capsys):
    path = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:  # one thread: tiny ops on a loaded 2-core machine spend more time in thread barriers than in work
        result = main(["--model-size", "tiny", "--methods", "whitebox", "--sizes", "16", "--infer-sizes", "16",
                       "--steps", "1", "--warmup", "0", "--infer-repeats", "1", "--gemm-size", "64", "--no-bf16",
                       "--loss-networks", "tiny", "--loss-size", "16", "--loss-batch", "2", "--loss-steps", "3",
                       "--loss-window", "2", "--threads", "1", "--json", str(path)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(path.read_text())["machine"]["precision_auto"] == result["machine"]["precision_auto"]
    assert set(result["gemm"]) >= {"fp32 matmul", "fp32 conv1x1", "bf16 matmul", "bf16 conv1x1"} and all(r["gflops"] > 0 for r in result["gemm"].values())
    reference, project = result["training"]
    assert reference["setting"].startswith("(a)") and project["setting"].startswith("(b)")
    assert reference["vs_reference"] == 1.0 and project["vs_reference"] > 0 and project["gflop_per_step"] > 0
    (structure,) = result["structure"]
    assert structure["with_superpixels_s"] > 0 and structure["superpixel_call_s"] > 0
    inference = result["inference"]
    assert inference[0]["setting"].startswith("fp32 eager") and inference[0]["max_abs_diff"] == 0
    assert sum(row["fastest"] for row in inference) == 1
    agreement, with_fp32_vgg = result["agreement"]  # bf16 against fp32 (emulated here, cheap at this size)
    assert agreement["compared"] == "bf16 vs fp32" and agreement["steps"] == 3
    assert with_fp32_vgg["compared"] == "bf16 + fp32 VGG vs fp32" and with_fp32_vgg["worst_gap_percent"] > 0
    assert with_fp32_vgg["curves"]["content"] != agreement["curves"]["content"]  # the VGG did run in fp32
    assert set(agreement["gap_percent"]) == set(agreement["curves"]) == set(agreement["fp32_curves"]) >= {"structure", "tv"}
    assert all(len(curve) == 3 for curve in agreement["curves"].values())
    assert agreement["worst_gap_percent"] == max(agreement["gap_percent"].values()) > 0
    out = capsys.readouterr().out
    assert "GEMM roofline" in out and "Training" in out and "Inference" in out and "Precision agreement" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(SystemExit, match="CUDA is not available"):
        main(["--device", "cuda", "--sizes", "", "--infer-sizes", "", "--loss-steps", "0"])


def test_smoothed_gap_is_relative_to_the_reference_magnitude():
    from benchmarks.bench_train import smoothed_gap_percent

    reference = [1.0, 3.0] * 5  # moving average over 2 steps: 2.0 everywhere
    assert smoothed_gap_percent(reference, reference, 2) == 0
    assert smoothed_gap_percent(reference, [x + 0.1 for x in reference], 2) == pytest.approx(5.0)
    assert smoothed_gap_percent(reference, [3.0, 1.0] * 5, 2) == pytest.approx(0.0)  # step noise is smoothed away

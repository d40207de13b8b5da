"""Smoke run of benchmarks/bench_guided_filter.py: every way of taking the box mean gives the
guided filter of one average pool, within the precision its README table states."""

import torch

from benchmarks.bench_guided_filter import WAYS, main


def test_every_way_matches_the_fp64_average_pool(capsys):
    threads = torch.get_num_threads()
    try:
        rows = main(["--repeats", "1", "--step-rounds", "0", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert {row["way"] for row in rows} == set(WAYS) and all(row["ms"] > 0 for row in rows)
    project = [row for row in rows if row["way"] == "(e) project box_mean"]
    assert len(project) == 4 and all(row["max_abs_diff"] < 1e-6 for row in project)
    fp32_sums = [row for row in rows if row["way"] == "(d) cumsum, fp32 sums" and row["case"] == "inference 1024 px"]
    assert fp32_sums[0]["max_abs_diff"] > 1e-6  # why box_mean sums long axes in fp64
    assert "White-box train step" not in capsys.readouterr().out

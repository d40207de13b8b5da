"""Smoke run of benchmarks/bench_palette.py: every row is timed and the palette step's share is a share."""

from benchmarks.bench_palette import main


def test_rows_for_every_size(capsys):
    rows = main(["--sizes", "32", "64", "--repeats", "1", "--method", "whitebox"])
    assert [row["size"] for row in rows] == [32, 64]
    assert all(row["generator"] > 0 and row["palette"] > 0 and 0 < row["share"] < 1 for row in rows)
    assert "| 64 px |" in capsys.readouterr().out

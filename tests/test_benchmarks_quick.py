"""The benchmark scripts run (issue 6), in their --quick mode (tiny config, one thread)."""

import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _keep_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_sampling_benchmark_quick(tmp_path):
    from benchmarks import sampling

    rows = sampling.main(["--quick", "--out", str(tmp_path / "s.json")])
    assert {r["arch"] for r in rows} == {"pixelcnn", "row_lstm", "diagonal_bilstm"}
    assert all(r["identical"] and r["speedup_cpu"] > 1 for r in rows)
    assert (tmp_path / "s.json").exists()


def test_throughput_benchmark_quick(tmp_path):
    from benchmarks import throughput

    rows = throughput.main(["--quick", "--out", str(tmp_path / "t.json")])
    assert len(rows) == 3
    for r in rows:
        assert r["train_images_per_s"] > 0 and r["train_gflop_per_image"] > 0
        assert 0 < r["fraction_of_matmul"] < 2


def test_scan_benchmark_quick(tmp_path):
    import json

    from benchmarks import scan

    rows = scan.main(["--quick", "--out", str(tmp_path / "scan.json")])
    assert {r["arch"] for r in rows} == {"row_lstm", "diagonal_bilstm"}
    for r in rows:
        # both timed and positive; which is larger is a timing claim (benchmarks/README.md), not a test
        assert r["forward_us_per_step"] > 0 and r["train_us_per_step"] > 0
    assert len(json.loads((tmp_path / "scan.json").read_text())["rows"]) == 2


def test_scan_benchmark_compiled_step_quick():
    from benchmarks import scan

    rows = scan.main(["--quick", "--compiled-step"])
    assert len(rows) == 2
    assert all(r["eager_pointwise_us_per_step"] > 0 and r["compiled_pointwise_us_per_step"] > 0 for r in rows)


def test_launches_benchmark_quick(tmp_path):
    """Operator calls per training step (issue 14): the wavefront Row LSTM needs fewer than the
    layer-by-layer one, and the FLOP counter sees the in-place products (addmm_, baddbmm_)."""
    from benchmarks import launches

    off = launches.main(["--quick", "--archs", "row_lstm", "--overrides", '{"wavefront": false}'])
    on = launches.main(["--quick", "--archs", "row_lstm", "--overrides", '{"wavefront": true}'])
    assert 0 < on[0]["calls"] < off[0]["calls"]
    assert on[0]["gflop_per_image"] > 0.5 * off[0]["gflop_per_image"] > 0


def test_compare_in_process_loads_each_tree_and_pairs_steps(tmp_path):
    """compare.py's default mode imports both trees in one process (a subprocess here: it re-imports
    pixel_lightning); with the same tree twice (the control) every row has one ratio per pair."""
    import json
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "rows.json"
    argv = ["--old", str(root), "--configs", "quick", "--archs", "pixelcnn", "--steps", "2", "--threads", "1"]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", *argv, "--out", str(out)], check=True, cwd=root
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["mode"] == "in-process" and len(row["old_img_s"]) == len(row["new_img_s"]) == 2
    assert row["pair_ratio_min"] <= row["pair_ratio_median"] <= row["pair_ratio_max"]


def test_row_lstm_breakdown_times_both_functions(tmp_path):
    """The breakdown's timers see K_is and the scan, forward and backward (zero would mean the model
    ran another path), and restore the Functions afterwards."""
    from benchmarks import row_lstm_breakdown
    from pixel_lightning.nn.lstm_cell import LSTMScan

    forward = LSTMScan.forward
    row = row_lstm_breakdown.main(
        ["--config", "quick", "--steps", "2", "--threads", "1", "--out", str(tmp_path / "b.json")]
    )
    parts = ["K_is forward", "K_is backward", "scan forward", "scan backward"]
    assert all(row[k] > 0 for k in parts)
    assert sum(row[k] for k in parts) + row["rest"] == pytest.approx(row["step_ms"])
    assert 0 < row["rest"] < row["step_ms"]
    assert LSTMScan.forward is forward
    assert (tmp_path / "b.json").exists()


def test_memory_benchmark_quick(tmp_path):
    """benchmarks/memory.py --quick (issue 20), tiny models of two recipes: the line through the peaks at
    batches 2 and 4 predicts the peak measured at batch 8 within 10 %, the peak grows with the batch, a
    bigger GPU fits a bigger batch, and the JSON is written."""
    from benchmarks import memory

    out = tmp_path / "memory.json"
    rows = memory.main(["--quick", "--out", str(out)])
    assert [r["recipe"] for r in rows] == ["quickstart", "cifar10_row_lstm"]
    for r in rows:
        assert r["per_image_gib"] > 0 and r["peaks_mib"][2] < r["peaks_mib"][4] < r["peaks_mib"][8]
        assert r["check"]["measured_gib"] == pytest.approx(r["check"]["predicted_gib"], rel=0.1)
        fits = list(r["fits"].values())
        assert 0 < fits[0] < fits[1] < fits[2]
    assert out.is_file()

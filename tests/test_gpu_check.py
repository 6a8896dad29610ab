"""benchmarks/gpu_check.py (issue 20): without CUDA it says so and exits 0; ``--device cpu`` runs its
smallest version, whose checks hold and can fail."""

from __future__ import annotations

import json

import pytest
import torch

CPU = ["--device", "cpu", "--modes", "fp32", "bf16", "--steps", "1"]  # compiled: tests/test_compile.py


@pytest.fixture(autouse=True)
def _keep_global_state():
    from benchmarks import gpu_check

    n, backend = torch.get_num_threads(), gpu_check.network.COMPILE_OPTIONS.get("backend")
    yield
    torch.set_num_threads(n)
    if backend is None:
        gpu_check.network.COMPILE_OPTIONS.pop("backend", None)


def test_without_cuda_it_says_so_and_exits_0(monkeypatch, capsys, tmp_path):
    from benchmarks import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "g.json")]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "g.json").exists()


def test_cpu_smoke_version(tmp_path):
    from benchmarks import gpu_check

    out = tmp_path / "g.json"
    assert gpu_check.main([*CPU, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ok"] and all(c["ok"] for c in result["checks"])
    names = {c["check"] for c in result["checks"]}
    assert names == {"normalization", "causality", "cached_sampling", "bf16_vs_fp32", "wavefront"}
    assert {(r["arch"], r["mode"]) for r in result["throughput"]} == {
        (a, m) for a in ("pixelcnn", "row_lstm", "diagonal_bilstm") for m in ("fp32", "bf16")
    }
    assert all(r["img_s"] > 0 for r in result["throughput"])


def test_a_causality_leak_fails_the_check(monkeypatch, tmp_path):
    """The control: the Diagonal BiLSTM without its one-row shift sees its own row's future."""
    from benchmarks import gpu_check
    from pixel_lightning.nn import diagonal_lstm

    monkeypatch.setattr(diagonal_lstm, "BACKWARD_SHIFT", 0)
    ok, detail = gpu_check.check_causality("diagonal_bilstm", "cpu")
    assert not ok and not detail.startswith("0 ")

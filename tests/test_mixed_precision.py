"""Mixed precision (issue 20): ``trainer.precision=bf16-mixed`` trains, validates, tests and samples every
architecture through the real CLI, with the likelihood in fp32 and close to the fp32 model's; the custom
autograd functions run under autocast (pixel_lightning/nn/amp.py) and the fp32 paths are untouched."""

from __future__ import annotations

import json
import math

import pytest
import torch

import pixel_lightning
from pixel_lightning.models.base import log_likelihood
from pixel_lightning.nn.diagonal_lstm import DiagonalBiLSTMLayer
from pixel_lightning.nn.row_lstm import RowLSTMLayer
from pixel_lightning.runner import main as run_main

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)
# every architecture the project has (asked, not listed here), and the Row LSTM's wavefront path
CASES = [(arch, []) for arch in sorted(pixel_lightning.ARCHITECTURES)]
CASES.append(("row_lstm", ["model.wavefront=true"]))
TINY = [
    "model.hidden=4",
    "model.layers=1",
    "model.head_channels=8",
    "trainer.max_steps=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "data.batch_size=2",
    "logger=none",
    "threads=1",
    "sample.n=2",
]


def bits_per_dim(logp: torch.Tensor, dims: int) -> torch.Tensor:
    return -logp / (dims * math.log(2))


@pytest.mark.parametrize("arch,extra", CASES, ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_bf16_mixed_run_through_the_cli(arch, extra, tmp_path, data_digits):
    """2 training steps, a validation, a test and a 2-image sample grid under bf16-mixed: exit 0, finite
    figures; on the trained weights the bf16 log p(x) is within 0.05 bits/dim of the fp32 one."""
    out = tmp_path / "run"
    ms = ["model.cond_maps=4"] if arch == "multiscale" else []
    argv = ["--recipe", "quickstart", "--out", str(out), f"model.arch={arch}", *TINY, *ms, *extra]
    assert run_main([*argv, "trainer.precision=bf16-mixed"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train/loss", "val/bits_per_dim", "test/bits_per_dim"):
        assert math.isfinite(metrics[key]), (key, metrics[key])
    assert metrics["global_step"] == 2
    assert (out / "samples" / "final.png").is_file()

    model = pixel_lightning.load_model(out / "checkpoints" / "last.ckpt")
    x = torch.from_numpy((data_digits[0][:8] > 127).astype("int64"))  # real binarized digits
    with torch.no_grad():
        full = model.log_prob(x)
        with torch.autocast(**BF16):
            mixed = model.log_prob(x)
            logits = model(x)
    assert logits.dtype == torch.bfloat16  # the network did run in bf16
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    gap = (bits_per_dim(mixed, model.dims) - bits_per_dim(full, model.dims)).abs().max()
    assert gap < 0.05, gap


@pytest.mark.parametrize("arch,extra", CASES, ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_sampling_and_completion_ignore_autocast(arch, extra):
    """Cached and naive sampling (and completion) under autocast run in fp32: the same images as without
    autocast, cached or not (the samplers' exactness holds only with the same conditionals)."""
    kw = {k.split("=")[0].removeprefix("model."): True for k in extra}
    if arch == "multiscale":
        kw.update(low_res=3, cond_maps=3)
    torch.manual_seed(0)
    model = pixel_lightning.build_model(arch, image_shape=(1, 6, 6), levels=2, hidden=3, layers=1, **kw)
    ref = model.sample(2, generator=torch.Generator().manual_seed(0))
    x = torch.zeros(1, 6, 6, dtype=torch.long)
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[:, :2] = True
    done = model.complete(x, mask, n=2, generator=torch.Generator().manual_seed(1))
    with torch.autocast(**BF16):
        for cache in (True, False):
            assert torch.equal(model.sample(2, generator=torch.Generator().manual_seed(0), cache=cache), ref)
        same = model.complete(x, mask, n=2, generator=torch.Generator().manual_seed(1), cache=False)
    assert torch.equal(same, done)


@pytest.mark.parametrize(
    "layer,shape",
    [(lambda: RowLSTMLayer(4, 1), (2, 8, 5, 3)), (lambda: DiagonalBiLSTMLayer(4, 1), (2, 8, 4, 3))],
)
def test_lstm_layers_under_autocast_forward_and_backward(layer, shape):
    """The custom autograd functions under autocast, backward inside autocast too (a CPU training loop
    may call it there): bf16 matmuls, fp32 recurrence; finite gradients close to the fp32 ones."""
    torch.manual_seed(0)
    L = layer()
    x = torch.randn(shape, requires_grad=True)
    ref = L(x)
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *L.parameters()])
    with torch.autocast(**BF16):
        y = L(x)
        grads = torch.autograd.grad(y.float().square().sum(), [x, *L.parameters()])
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 0.05
    for a, b in zip(grads, g_ref, strict=True):
        assert a.dtype == b.dtype and torch.isfinite(a).all()
        assert (a - b).abs().max() <= 0.05 * b.abs().max() + 1e-3


def test_likelihood_is_fp32_for_bf16_logits():
    """bf16 logits give the fp32 log-likelihood of their fp32 values (softmax and sum in fp32)."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 256, 3, 4, 4, generator=g) * 3).bfloat16()
    x = torch.randint(0, 256, (2, 3, 4, 4), generator=g)
    ll = log_likelihood(logits, x, 256)
    assert ll.dtype == torch.float32
    assert torch.equal(ll, log_likelihood(logits.float(), x, 256))


def test_matmul_precision_is_validated_logged_and_applied_on_cuda_only(tmp_path, monkeypatch, capsys):
    """trainer.matmul_precision: recipe default high, in the run config; an unknown value is a one-line
    error (exit 2); applied with torch.set_float32_matmul_precision on CUDA runs only."""
    from pixel_lightning.config import load_config

    assert run_main(["--recipe", "quickstart", "--dry-run"]) == 0
    assert "matmul_precision: high" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        run_main(["--recipe", "quickstart", "--dry-run", "trainer.matmul_precision=tf32"])
    assert stop.value.code == 2
    said = capsys.readouterr()
    assert (
        "trainer.matmul_precision='tf32'" in said.out + said.err
        and "highest, high, medium" in said.out + said.err
    )

    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    cfg = load_config("quickstart", ["trainer.matmul_precision=medium", "trainer.accelerator=auto"])
    assert "matmul_precision" not in cfg.trainer.kwargs()  # not a lightning.Trainer argument
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not cfg.trainer.apply_matmul_precision() and calls == []  # CPU: left alone
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cfg.trainer.apply_matmul_precision() and calls == ["medium"]
    cfg.trainer.accelerator = "cpu"
    assert not cfg.trainer.apply_matmul_precision() and calls == ["medium"]

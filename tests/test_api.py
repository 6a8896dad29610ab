"""Public API of issue 2: build_model, log_prob, sample, input checks, residual wiring."""

import pytest
import torch

import pixel_lightning
from pixel_lightning.nn.stack import LayerStack


def test_architectures_and_shapes():
    assert {"pixelcnn", "row_lstm", "diagonal_bilstm"} <= set(pixel_lightning.ARCHITECTURES)
    for arch in ("pixelcnn", "row_lstm", "diagonal_bilstm"):
        m = pixel_lightning.build_model(arch, image_shape=(3, 5, 7), levels=256, hidden=6, layers=2)
        x = torch.randint(0, 256, (2, 3, 5, 7))
        assert m(x).shape == (2, 256, 3, 5, 7)
        logp = m.log_prob(x)
        assert logp.shape == (2,) and logp.dtype == torch.float32 and (logp < 0).all()
        xs = m.sample(2, generator=torch.Generator().manual_seed(0))
        assert xs.dtype == torch.long and xs.shape == (2, 3, 5, 7)
        b = pixel_lightning.build_model(arch, image_shape=(1, 1, 1), levels=2, hidden=2, layers=1)
        assert b(torch.zeros(1, 1, 1, 1, dtype=torch.long)).shape == (1, 1, 1, 1, 1)


def test_untrained_binary_model_is_near_uniform():
    """At init the masked weights are small: the likelihood of a random image is near 784 * ln 2."""
    m = pixel_lightning.build_model("pixelcnn", image_shape=(1, 28, 28), levels=2, hidden=8, layers=2)
    nll = -m.log_prob(torch.randint(0, 2, (4, 1, 28, 28))).mean().item()
    assert 0.8 * 784 * 0.6931 < nll < 1.2 * 784 * 0.6931


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.zeros(2, 3, 4, 4), "integer tensor"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.long), r"shape \(B, 3, 4, 4\)"),
        (torch.zeros(3, 4, 4, dtype=torch.long), "shape"),
        (torch.full((1, 3, 4, 4), 4, dtype=torch.long), r"\[0, 4\)"),
        (torch.full((1, 3, 4, 4), -1, dtype=torch.long), "range"),
    ],
)
def test_log_prob_rejects_bad_input(x, match):
    m = pixel_lightning.build_model("row_lstm", image_shape=(3, 4, 4), levels=4, hidden=3, layers=1)
    with pytest.raises(ValueError, match=match):
        m.log_prob(x)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(image_shape=(2, 4, 4)), "C must be 1"),
        (dict(image_shape=(1, 0, 4)), ">= 1"),
        (dict(levels=1), "levels"),
        (dict(image_shape=(3, 4, 4), hidden=2), "hidden"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(lr=-1.0), "lr"),
        (dict(first_kernel=4), "odd"),
        (dict(colour=3), "unknown option"),
    ],
)
def test_build_model_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pixel_lightning.build_model("pixelcnn", **kwargs)


def test_unknown_architecture_lists_choices():
    with pytest.raises(ValueError, match="row_lstm"):
        pixel_lightning.build_model("gated_pixelcnn")


class _Zero(torch.nn.Module):
    def forward(self, x, cond=None):
        return torch.zeros_like(x)


class _Double(torch.nn.Module):
    def forward(self, x, cond=None):
        return 2 * x


def test_residual_is_added_exactly_once():
    x = torch.randn(2, 6, 3, 3)
    assert torch.equal(LayerStack([_Zero(), _Zero()], 6, 3, residual=True, skip=False)(x), x)
    assert LayerStack([_Zero()], 6, 3, residual=False, skip=False)(x).eq(0).all()
    # x -> x + 2x = 3x -> 3x + 6x = 9x: one addition per layer, no double counting
    assert torch.allclose(LayerStack([_Double(), _Double()], 6, 3, residual=True, skip=False)(x), 9 * x)


def test_skip_sums_every_layer_output():
    x = torch.randn(1, 6, 2, 2)
    stack = LayerStack([_Double(), _Double()], 6, 3, residual=False, skip=True)
    for s in stack.skips:
        torch.nn.init.zeros_(s.bias)
        with torch.no_grad():
            s.weight.copy_(torch.eye(6).view(6, 6, 1, 1))  # identity (allowed by mask B)
    assert torch.allclose(stack(x), 2 * x + 4 * x)


def test_checkpoint_round_trip(tmp_path):
    import lightning as L

    m = pixel_lightning.build_model("diagonal_bilstm", image_shape=(1, 4, 4), levels=2, hidden=2, layers=1)
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(m)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    m2 = pixel_lightning.load_model(tmp_path / "m.ckpt")
    x = torch.randint(0, 2, (3, 1, 4, 4))
    assert type(m2) is type(m) and torch.equal(m2.log_prob(x), m.log_prob(x))

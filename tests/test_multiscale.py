"""Multi-Scale PixelRNN (paper Section 3.5, issue 5): exact normalization, sampling, super-resolution,
causality of the conditional part, errors, metrics, recipes."""

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import SINGLE_SCALE, all_images, mean_conditional_entropy, observed_dependencies, tiny_model
from test_causality import predicted_dependencies

import pixel_lightning
from pixel_lightning.config import load_config
from pixel_lightning.models.base import log_likelihood
from pixel_lightning.models.multiscale import MultiScaleConfig, upsampling_stages

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny float64 models on 2 shared cores: one intra-op thread is faster (no spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_ms(base, shape, levels, low_res, std=1.0, cond_std=2.0, seed=0, **kw):
    """A tiny float64 multi-scale model with randomized weights (see helpers.tiny_model). The
    conditioning path (upsampling net and the 1x1 cond convolutions of every layer) is redrawn with
    ``cond_std``: through its four linear maps a draw at ``std`` would leave the conditional part almost
    blind to x_low, and a leak through the conditioning path would then go unnoticed."""
    opts = dict(layers=1, head_channels=6, cond_maps=3, first_kernel=3) | kw
    model = tiny_model("multiscale", shape, levels, std=std, seed=seed, base=base, low_res=low_res, **opts)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("upsample.") or ".cond." in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * cond_std)
    return model


def total_probability(model, x, chunk=65536):
    with torch.no_grad():
        logp = torch.cat([model.log_prob(c) for c in x.split(chunk)])
    return torch.logsumexp(logp, 0).exp().item()


# -- exact normalization --------------------------------------------------------------------------
@pytest.mark.parametrize("base", SINGLE_SCALE)
@pytest.mark.parametrize("shape,levels,low_res", [((1, 4, 4), 2, 2), ((3, 2, 2), 3, 1)])
def test_sum_of_probabilities_is_one(base, shape, levels, low_res):
    # 1x1 first layers on the 531,441 images of (3, 2, 2): float64 3x3 convolutions are slow on CPU
    model = tiny_ms(base, shape, levels, low_res, first_kernel=1 if shape[0] == 3 else 3)
    x = all_images(shape, levels)  # 65,536 and 531,441 images
    total = total_probability(model, x)
    assert abs(total - 1.0) < 1e-4, f"{base}: sum p(x) = {total}"
    # conditionals far from uniform, in the low part and in the conditional part
    probe = x[:: max(1, len(x) // 4096)]
    assert mean_conditional_entropy(model, probe) < 0.8 * math.log(levels)
    assert mean_conditional_entropy(model.low, model.subsample(probe)) < 0.8 * math.log(levels)


def test_the_normalization_test_catches_mistakes():
    """Sanity check of the test: (a) predicting the low-res copies again (the paper's formulation read
    literally) under-normalizes; (b) a conditioning map that sees a later full-res pixel over-counts."""
    shape, levels = (1, 2, 2), 2
    model = tiny_ms("pixelcnn", shape, levels, 1, seed=1)
    x = all_images(shape, levels)
    with torch.no_grad():
        logp_low, _ = model.log_prob_parts(x)
        _, full_logits = model.network_parts(model.scale(x))
        double_counted = logp_low + log_likelihood(full_logits, x, levels)
    assert torch.logsumexp(double_counted, 0).exp().item() < 1 - 1e-3
    model.conditioning = lambda xf: model.upsample(xf[:, :, 1::2, 1::2])  # the last pixel: the future
    assert abs(total_probability(model, x) - 1.0) > 0.3


# -- sampling -------------------------------------------------------------------------------------
def frequencies(xs, levels, support_size):
    weights = levels ** torch.arange(xs[0].numel() - 1, -1, -1)
    return torch.bincount((xs.flatten(1) * weights).sum(1), minlength=support_size).double() / len(xs)


@pytest.mark.parametrize("base", SINGLE_SCALE)
def test_sample_frequencies_match_probabilities(base):
    shape, levels, n = (1, 2, 2), 2, 20_000
    model = tiny_ms(base, shape, levels, 1, std=0.8, cond_std=1.0)  # entropies 1.1 to 3.5 bits of 4
    support = all_images(shape, levels)
    with torch.no_grad():
        p = model.log_prob(support).exp()
    xs = model.sample(n, generator=torch.Generator().manual_seed(0))
    assert xs.dtype == torch.long and tuple(xs.shape) == (n, *shape)
    tv = 0.5 * (frequencies(xs, levels, len(support)) - p).abs().sum().item()
    assert tv < 0.03, f"{base}: total variation {tv:.4f}"
    # super-resolution: given x_low, the frequencies match p(x_rest | x_low) = exp(log p_cond)
    low = torch.ones((n, 1, 1, 1), dtype=torch.long)
    xs = model.sample(n, generator=torch.Generator().manual_seed(1), low_res=low)
    with torch.no_grad():
        _, logp_cond = model.log_prob_parts(support)
    p_given = torch.where(support[:, 0, 0, 0] == 1, logp_cond.exp(), torch.zeros_like(logp_cond))
    assert abs(p_given.sum().item() - 1.0) < 1e-9
    tv = 0.5 * (frequencies(xs, levels, len(support)) - p_given).abs().sum().item()
    assert tv < 0.03, f"{base} given x_low: total variation {tv:.4f}"


@pytest.mark.parametrize("base", SINGLE_SCALE)
def test_samples_contain_the_given_low_res_images(base):
    model = tiny_ms(base, (3, 4, 4), 4, 2, std=0.5, layers=2)
    low = torch.randint(0, 4, (5, 3, 2, 2), generator=torch.Generator().manual_seed(0))
    xs = model.sample(5, generator=torch.Generator().manual_seed(1), low_res=low)
    assert xs.dtype == torch.long and xs.shape == (5, 3, 4, 4)
    assert torch.equal(model.subsample(xs), low)
    assert xs.min() >= 0 and xs.max() < 4
    again = model.sample(5, generator=torch.Generator().manual_seed(1), low_res=low.to(torch.uint8))
    assert torch.equal(xs, again)
    # unconditional samples: the low part is a sample of the low model, copied in place
    xs = model.sample(3, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(model.log_prob(xs)).all()


# -- causality of the conditional part ------------------------------------------------------------
@pytest.mark.parametrize("base", SINGLE_SCALE)
def test_conditional_model_receptive_field(base):
    """Given the cond map, full-res sub-pixel (c, i, j) depends on exactly the context the paper gives
    its base architecture: never on a later pixel or on colours >= c of its own pixel."""
    shape = (3, 4, 4)
    model = tiny_ms(base, shape, 4, 2, layers=2, hidden=12, head_channels=24, zero_bias=True)
    cond = torch.randn((1, model.config.cond_maps, 4, 4), dtype=torch.float64)
    seen = observed_dependencies(lambda xf: model.full(xf, cond.expand(len(xf), -1, -1, -1)), shape)
    assert torch.equal(seen, predicted_dependencies(base, shape, 2, 3))


def multiscale_order(shape, factor):
    """allowed[c, i, j, c2, a, b]: sub-pixel (c2, a, b) comes before (c, i, j) in the multi-scale
    order (the low positions in raster order, R -> G -> B, then the other pixels in raster order)."""
    C, H, W = shape
    low = torch.zeros(H, W, dtype=torch.bool)
    low[::factor, ::factor] = True
    rank = torch.arange(H * W).view(H, W) + (~low) * H * W  # (H, W): low positions first
    rank = (rank[None] * C + torch.arange(C)[:, None, None]).flatten()  # (C*H*W,) sub-pixel rank
    return (rank[None, :] < rank[:, None]).view(C, H, W, C, H, W)


@pytest.mark.parametrize("base", SINGLE_SCALE)
def test_whole_model_is_autoregressive_in_the_multiscale_order(base):
    shape = (3, 4, 4)
    model = tiny_ms(base, shape, 4, 2, layers=2, hidden=12, head_channels=24, zero_bias=True)
    seen = observed_dependencies(model.network, shape)
    allowed = multiscale_order(shape, 2)
    leaks = (seen & ~allowed).nonzero().tolist()
    assert not leaks, f"{base}: (c,i,j) <- (c',i',j') outside the multi-scale order: {leaks[:5]}"
    # the conditioning path is live: pixel (0, 1) depends on the low-res pixel (2, 2), later in raster
    assert seen[:, 0, 1, :, 2, 2].all()


def test_conditioning_map_depends_only_on_the_low_res_image():
    model = tiny_ms("row_lstm", (3, 4, 4), 4, 2, cond_maps=5)
    xf = torch.rand((2, 3, 4, 4), dtype=torch.float64) * 2 - 1
    J = torch.autograd.functional.jacobian(
        lambda t: model.conditioning(t).sum(0), xf
    )  # (c, n, n, B, C, n, n)
    touched = (J != 0).flatten(0, 3).any(0)  # (C, n, n): inputs the map depends on
    assert torch.equal(touched, model.low_mask.expand(3, 4, 4))  # all of x_low, and nothing else


# -- shapes, errors -------------------------------------------------------------------------------
def test_upsampling_stages_reach_the_full_resolution():
    for s, n in [(1, 2), (16, 32), (32, 64), (2, 12), (3, 9), (5, 20)]:
        model = pixel_lightning.build_model(
            "multiscale", image_shape=(1, n, n), low_res=s, hidden=2, layers=0, head_channels=2, cond_maps=2
        )
        assert model.upsample(torch.zeros(1, 1, s, s)).shape == (1, 2, n, n)
    assert [t for _, t, _ in upsampling_stages(12)] == [2, 2, 3]


def test_config_errors():
    build = pixel_lightning.build_model
    kw = dict(image_shape=(3, 8, 8), levels=4, hidden=3, layers=1, head_channels=4)
    with pytest.raises(ValueError, match="divisible by low_res"):
        build("multiscale", low_res=3, **kw)
    with pytest.raises(ValueError, match="smaller than the image side"):
        build("multiscale", low_res=8, **kw)
    with pytest.raises(ValueError, match="base must be one of"):
        build("multiscale", low_res=4, base="gated_pixelcnn", **kw)
    with pytest.raises(ValueError, match="square"):
        build("multiscale", **(kw | {"image_shape": (3, 8, 4)}), low_res=4)
    with pytest.raises(ValueError, match="cond_maps instead"):
        build("multiscale", low_res=4, cond_channels=2, **kw)
    with pytest.raises(ValueError, match="unknown option"):
        build("multiscale", low_res=4, cond_map=2, **kw)
    assert build("multiscale", **kw).config.low_res == 4  # default: n // 2
    assert MultiScaleConfig(image_shape=(3, 64, 64), low_res=32).factor == 2


def test_input_errors():
    model = tiny_ms("pixelcnn", (3, 4, 4), 4, 2)
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(torch.zeros((2, 3, 2, 2), dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model.log_prob(torch.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        model.log_prob(torch.full((2, 3, 4, 4), 4))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="low_res: .*shape"):
        model.sample(2, generator=g, low_res=torch.zeros((2, 3, 4, 4), dtype=torch.long))
    with pytest.raises(ValueError, match="low_res: .*shape"):
        model.sample(2, generator=g, low_res=torch.zeros((2, 1, 2, 2), dtype=torch.long))
    with pytest.raises(ValueError, match="one low-res image per sample"):
        model.sample(2, generator=g, low_res=torch.zeros((3, 3, 2, 2), dtype=torch.long))
    with pytest.raises(ValueError, match="low_res: .*integer"):
        model.sample(2, generator=g, low_res=torch.zeros((2, 3, 2, 2)))
    with pytest.raises(ValueError, match=r"low_res: .*\[0, 4\)"):
        model.sample(2, generator=g, low_res=torch.full((2, 3, 2, 2), -1))
    with pytest.raises(ValueError, match="own conditioning map"):
        model.network(torch.zeros((1, 3, 4, 4), dtype=torch.float64), torch.zeros(1, 3, 4, 4))


# -- metrics, training, checkpoints, recipes ------------------------------------------------------
def loader(shape, batches=2, batch_size=4, seed=0):
    """Batches shaped like the data modules': (x uint8 (B, C, H, W), y int64 (B,))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batches * batch_size, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (batches * batch_size,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def trainer(**kw):
    return L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, **kw
    )


def test_metrics_log_both_parts_and_checkpoint_round_trip(tmp_path):
    shape = (3, 8, 8)
    model = pixel_lightning.build_model(
        "multiscale", base="row_lstm", image_shape=shape, levels=256, low_res=4, hidden=4, layers=1,
        head_channels=8, cond_maps=4,
    )  # fmt: skip
    t = trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_checkpointing=False)
    t.fit(model, loader(shape), loader(shape, batches=1, seed=1))
    for stage in ("train", "val"):
        assert {f"{stage}/bits_per_dim_low", f"{stage}/bits_per_dim_cond"} <= set(t.callback_metrics)
    [metrics] = t.test(model, loader(shape, seed=2), verbose=False)
    D, D_low = 3 * 8 * 8, 3 * 4 * 4
    assert model.dims_low == D_low and model.dims_cond == D - D_low
    nats, low, cond = metrics["test/nll_nats"], metrics["test/nll_nats_low"], metrics["test/nll_nats_cond"]
    assert abs(nats - (low + cond)) < 1e-3 * nats
    assert abs(metrics["test/bits_per_dim"] - nats / (D * math.log(2))) < 1e-4
    assert abs(metrics["test/bits_per_dim_low"] - low / (D_low * math.log(2))) < 1e-4
    assert abs(metrics["test/bits_per_dim_cond"] - cond / ((D - D_low) * math.log(2))) < 1e-4
    path = tmp_path / "ms.ckpt"
    t.save_checkpoint(path)
    loaded = pixel_lightning.load_model(path)
    x = torch.randint(0, 256, (2, *shape))
    assert type(loaded).__name__ == "MultiScalePixelRNN" and loaded.config == model.config
    assert torch.allclose(loaded.log_prob(x), model.log_prob(x))


RECIPES = {"imagenet64_multiscale_row_lstm": (3, 64, 64), "cifar10_multiscale_row_lstm": (3, 32, 32)}
TINY = dict(hidden=3, layers=1, head_channels=6, cond_maps=3)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_builds_and_a_tiny_version_trains(name):
    cfg = load_config(name)  # the recipe as the runner loads it
    assert cfg.model.arch == "multiscale" and cfg.paper.unit == "bits/dim"
    shape = RECIPES[name]
    model_opts = cfg.model.build_kwargs()
    assert tuple(model_opts["image_shape"]) == shape and model_opts["levels"] == 256
    # the recipe's full-size config is valid (not built: it would be large)
    config = MultiScaleConfig(**model_opts)
    assert config.factor == 2 and config.base == "row_lstm"
    model = pixel_lightning.build_model("multiscale", **(model_opts | TINY))
    t = trainer(fast_dev_run=2)
    t.fit(model, loader(shape, batch_size=2), loader(shape, batches=2, batch_size=2, seed=1))
    assert math.isfinite(float(t.callback_metrics["train/loss"]))


def test_both_parts_get_the_speed_switches_and_compile():
    """The multi-scale model honours the loss base's contract: its __init__ runs, and ``compile``,
    ``channels_last`` and ``wavefront`` reach the low and the conditional model (``compile`` was silently
    ignored when the multi-scale model skipped the base __init__)."""
    model = pixel_lightning.build_model(
        "multiscale", image_shape=(1, 8, 8), levels=2, hidden=2, layers=1, base="row_lstm",
        channels_last=False, wavefront=True, compile=True,
    )  # fmt: skip
    for part in (model.low, model.full):
        assert (part.config.channels_last, part.config.wavefront, part.config.compile) == (False, True, True)
        assert "forward" in vars(part)  # torch.compile's wrapper replaced the bound method
    assert "val_metrics" in dict(model.named_children())

"""Fitting from an init (SGD / per-signal Adam), PSNR bookkeeping, rendering, and that meta-learning helps."""

from __future__ import annotations

import pytest
import torch

from metainr.fields import ModulatedSiren, Siren
from metainr.meta import MetaLearner, ParamPartition, fit, render
from metainr.meta.fit import evaluate_psnr, psnr_from_mse
from metainr.signals.grid import GridConverter, coordinate_grid


def make_learner(adapt="all", meta_sgd=False, width=16, depth=3, field=None, seed=0, offset=0.0):
    field = field or Siren(2, 3, width=width, depth=depth, w0=30.0, output_offset=offset)
    part = ParamPartition(field, adapt=adapt, meta_sgd=meta_sgd, inner_lr=1e-2, seed=seed)
    return MetaLearner(field, part, inner_steps=2, strategy="batched")


def make_data(batch=2, n=30, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=g) * 2 - 1, torch.rand(batch, n, 3, generator=g)


def signal_mse(learner, params, coords, value):
    return (learner.predict(params, coords) - value).pow(2).mean()


# ------------------------------------------------------------------------------------------- SGD
@pytest.mark.parametrize("meta_sgd", [False, True])
@pytest.mark.parametrize("adapt", ["all", "w1,b2"])
def test_sgd_fit_equals_manual_steps(meta_sgd, adapt):
    learner = make_learner(adapt=adapt, meta_sgd=meta_sgd)
    part = learner.partition
    coords, values = make_data()
    steps = 4
    result = fit(learner, coords, values, steps, optimizer="sgd")
    for i in range(values.shape[0]):
        theta = {n: part.start(n).detach().clone() for n in part.adapt_names}
        for _ in range(steps):
            leaves = {n: t.clone().requires_grad_(True) for n, t in theta.items()}
            grads = torch.autograd.grad(signal_mse(learner, leaves, coords, values[i]), list(leaves.values()))
            theta = {n: (theta[n] - part.lr(n) * g).detach() for n, g in zip(theta, grads, strict=True)}
        for n in part.adapt_names:
            torch.testing.assert_close(result.params[n][i], theta[n], atol=1e-6, rtol=1e-5)
    for v in result.params.values():
        assert not v.requires_grad


def test_sgd_fit_with_explicit_lr_and_zero_steps():
    learner = make_learner()
    coords, values = make_data()
    zero = fit(learner, coords, values, 0)
    assert zero.psnr.shape == (1, 2) and zero.record_steps == [0]
    for n, v in zero.params.items():
        assert torch.equal(v, learner.partition.init[n].detach().expand_as(v))
    one = fit(learner, coords, values, 1, lr=0.05)
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in learner.partition.init.items()}
    g = torch.autograd.grad(signal_mse(learner, theta, coords, values[1]), theta["w2"])[0]
    torch.testing.assert_close(one.params["w2"][1], theta["w2"].detach() - 0.05 * g, atol=1e-7, rtol=1e-5)


def test_fit_does_not_touch_the_learner():
    learner = make_learner(meta_sgd=True)
    before = {k: v.detach().clone() for k, v in learner.state_dict().items()}
    coords, values = make_data()
    fit(learner, coords, values, 3, optimizer="adam", lr=1e-2)
    fit(learner, coords, values, 3)
    for k, v in learner.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in learner.parameters())


# ------------------------------------------------------------------------------------------ Adam
@pytest.mark.parametrize("lr", [None, 1e-2])
def test_adam_fit_is_per_signal_adam(lr):
    learner = make_learner(adapt="all")
    part = learner.partition
    coords, values = make_data(batch=2)
    steps = 5
    batch = fit(learner, coords, values, steps, optimizer="adam", lr=lr)
    for i in range(2):
        alone = fit(learner, coords, values[i:i + 1], steps, optimizer="adam", lr=lr)
        # Reference: torch.optim.Adam on this signal's own copy of the parameters.
        theta = {n: part.start(n).detach().clone().requires_grad_(True) for n in part.adapt_names}
        opt = torch.optim.Adam(list(theta.values()), lr=1e-4 if lr is None else lr)
        for _ in range(steps):
            opt.zero_grad()
            signal_mse(learner, theta, coords, values[i]).backward()
            opt.step()
        for n in part.adapt_names:
            torch.testing.assert_close(batch.params[n][i], alone.params[n][0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(batch.params[n][i], theta[n].detach(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(batch.psnr[:, i], alone.psnr[:, 0], atol=1e-4, rtol=1e-5)


def test_adam_fit_of_modulations():
    field = ModulatedSiren(2, 3, width=8, depth=3, w0=30.0, output_offset=0.5)
    learner = make_learner(adapt="signal", field=field)
    coords, values = make_data(batch=2)
    res = fit(learner, coords, values, 4, optimizer="adam", lr=1e-2)
    theta = {n: torch.zeros(8, requires_grad=True) for n in ("mod0", "mod1")}
    opt = torch.optim.Adam(list(theta.values()), lr=1e-2)
    for _ in range(4):
        opt.zero_grad()
        signal_mse(learner, theta, coords, values[1]).backward()
        opt.step()
    for n in theta:
        torch.testing.assert_close(res.params[n][1], theta[n].detach(), atol=1e-6, rtol=1e-5)


def test_unknown_optimizer_rejected():
    learner = make_learner()
    coords, values = make_data()
    with pytest.raises(ValueError):
        fit(learner, coords, values, 1, optimizer="lbfgs")


# ------------------------------------------------------------------------------------------ PSNR
def test_psnr_history_shape_and_init_value():
    learner = make_learner()
    coords, values = make_data(batch=3)
    res = fit(learner, coords, values, 6, record_steps=[6, 0, 3, 3])
    assert res.record_steps == [0, 3, 6]
    assert res.psnr.shape == (3, 3)
    init = learner.start_params(3)
    pred0 = learner.predict(init, coords).detach().clamp(0, 1)
    want0 = -10 * torch.log10((pred0 - values).pow(2).mean(dim=(1, 2)))
    torch.testing.assert_close(res.psnr[0], want0)
    torch.testing.assert_close(res.psnr[-1], evaluate_psnr(learner, res.params, coords, values))
    full = fit(learner, coords, values, 6)
    assert full.psnr.shape == (7, 3) and full.record_steps == list(range(7))
    torch.testing.assert_close(full.psnr[[0, 3, 6]], res.psnr)
    assert torch.all(full.psnr[-1] > full.psnr[0])  # fitting improves every signal


def test_psnr_uses_clamped_outputs():
    learner = make_learner(offset=0.0)
    with torch.no_grad():  # outputs ~ 3, far outside [0, 1]
        learner.partition.init["b2"].fill_(3.0)
        learner.partition.init["w2"].mul_(0.01)
    coords, _ = make_data()
    values = torch.full((2, 30, 3), 0.9)
    res = fit(learner, coords, values, 0)
    # Clamped to 1: MSE 0.01 -> 20 dB (unclamped it would be about -6.6 dB).
    torch.testing.assert_close(res.psnr[0], torch.full((2,), 20.0), atol=1e-3, rtol=0)


def test_psnr_from_mse():
    mse = torch.tensor([1.0, 0.01, 1e-4, 0.0])
    torch.testing.assert_close(psnr_from_mse(mse), torch.tensor([0.0, 20.0, 40.0, 100.0]))


def test_fit_chunks_over_signals():
    learner = make_learner(meta_sgd=True)
    g = torch.Generator().manual_seed(4)
    coords = torch.rand(5, 30, 2, generator=g) * 2 - 1  # per-signal coordinates
    values = torch.rand(5, 30, 3, generator=g)
    whole = fit(learner, coords, values, 3)
    chunked = fit(learner, coords, values, 3, batch_size=2)
    assert chunked.psnr.shape == (4, 5)
    for n in whole.params:
        torch.testing.assert_close(chunked.params[n], whole.params[n], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(chunked.psnr, whole.psnr, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------- render
def test_render_chunked_equals_unchunked():
    learner = make_learner(offset=0.5)
    coords, values = make_data(batch=2)
    params = fit(learner, coords, values, 2).params
    grid = coordinate_grid((13, 11))
    full = render(learner, params, grid)
    assert full.shape == (2, 143, 3)
    for chunk in (1, 7, 50, 143, 1000):
        torch.testing.assert_close(render(learner, params, grid, chunk=chunk), full)
    torch.testing.assert_close(full, learner.predict(params, grid).detach())
    # Per-signal coordinates (B, N, d) are chunked along N, not along the signals.
    per_signal = torch.rand(2, 143, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1
    whole = render(learner, params, per_signal)
    for chunk in (1, 50):
        torch.testing.assert_close(render(learner, params, per_signal, chunk=chunk), whole)
    torch.testing.assert_close(whole[1], learner.predict({k: v[1] for k, v in params.items()},
                                                         per_signal[1]).detach())


# ------------------------------------------------------------------------ meta-learning helps
def _astronaut_tiles(tile=8, down=8):
    skimage_data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float() / 255
    img = torch.nn.functional.avg_pool2d(img[None], down)[0]  # 64 x 64
    tiles = img.unfold(1, tile, tile).unfold(2, tile, tile).permute(1, 2, 0, 3, 4)
    return tiles.reshape(-1, 3, tile, tile)


def test_meta_learned_init_beats_random_init():
    torch.manual_seed(0)
    tiles = _astronaut_tiles()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(tiles.shape[0], generator=g)
    conv = GridConverter((8, 8), 3)
    coords = conv.coords()
    train, test = conv.to_values(tiles[perm[:-16]]), conv.to_values(tiles[perm[-16:]])

    def learner():
        field = Siren(2, 3, width=64, depth=3, w0=30.0)
        part = ParamPartition(field, inner_lr=1e-2, seed=0)
        return MetaLearner(field, part, inner_steps=3, strategy="batched")

    random_init, meta = learner(), learner()
    opt = torch.optim.Adam(meta.parameters(), lr=1e-3)
    for _ in range(150):
        idx = torch.randint(0, train.shape[0], (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        meta.meta_backward(coords, train[idx])
        opt.step()
        meta.after_outer_step()

    before = fit(random_init, coords, test, 3).psnr
    after = fit(meta, coords, test, 3).psnr
    gain = after[-1] - before[-1]
    # Observed: ~ +20 dB mean (random ~6 dB, meta ~27 dB), every tile > +15 dB.
    assert float(gain.mean()) > 10.0
    assert float(gain.min()) > 3.0
    assert float(after[-1].mean()) > 20.0
    assert torch.all(after[-1] > after[0])  # the 3 steps help from the meta-init too

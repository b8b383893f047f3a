"""GradNCP meta-test rescaling: step along g_full with the norm of g_sub, per signal."""

from __future__ import annotations

import pytest
import torch

from metainr.context import GradNCPSelector, rescaled_gradients
from metainr.fields import Siren
from metainr.meta import MetaLearner, ParamPartition, fit

DEPTH, W0, OFFSET, LR = 3, 30.0, 0.5, 0.1


def grid(side: int) -> torch.Tensor:
    lin = torch.linspace(-1, 1, side, dtype=torch.float64)
    return torch.stack(torch.meshgrid(lin, lin, indexing="ij"), dim=-1).reshape(-1, 2)


def make_learner(gamma: float = 0.25) -> MetaLearner:
    field = Siren(2, 3, width=8, depth=DEPTH, w0=W0, output_offset=OFFSET)
    part = ParamPartition(field, adapt="all", inner_lr=LR, seed=0)
    return MetaLearner(field, part, inner_steps=2, context=GradNCPSelector(gamma)).double()


def data(batch: int = 3, side: int = 5):
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(batch, side * side, 3, generator=gen, dtype=torch.float64)
    return grid(side), values


def flat(grads: dict, b: int) -> torch.Tensor:
    return torch.cat([g[b].reshape(-1) for g in grads.values()])


def ref_forward(params, coords, features=False):
    h = coords
    for i in range(DEPTH):
        pre = h @ params[f"w{i}"].T + params[f"b{i}"]
        if i == DEPTH - 1:
            return (pre + OFFSET, h) if features else pre + OFFSET
        h = torch.sin(W0 * pre)
    raise AssertionError


def ref_grad(params, coords, values):
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    loss = (ref_forward(leaves, coords) - values).pow(2).mean()
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def ref_rescaled_step(theta, coords, values, k):
    """One GradNCP meta-test step for one signal, by hand."""
    with torch.no_grad():
        pred, h = ref_forward(theta, coords, features=True)
        scores = (values - pred).norm(dim=-1) * torch.sqrt(h.pow(2).sum(-1) + 1)
    kept = scores.topk(k).indices
    g_sub = ref_grad(theta, coords[kept], values[kept])
    g_full = ref_grad(theta, coords, values)
    n_sub = torch.sqrt(sum(g.pow(2).sum() for g in g_sub.values()))
    n_full = torch.sqrt(sum(g.pow(2).sum() for g in g_full.values()))
    return {n: theta[n] - LR * (n_sub / n_full) * g_full[n] for n in theta}


def test_rescaled_gradient_has_sub_norm_and_full_direction():
    learner = make_learner()
    coords, values = data()
    params = {n: p.detach() for n, p in learner.start_params(3).items()}
    ctx_c, ctx_v = learner.select_context(params, coords, values, 0, training=False)
    g_sub = learner.inner_grads(params, ctx_c, ctx_v, create_graph=False)
    g_full = learner.inner_grads(params, coords, values, create_graph=False)
    out = rescaled_gradients(learner, params, coords, values, g_sub, 0)
    assert out.keys() == params.keys()
    for n in out:
        assert out[n].shape == params[n].shape
    for b in range(3):
        o, s, f = flat(out, b), flat(g_sub, b), flat(g_full, b)
        assert float(o.norm()) == pytest.approx(float(s.norm()), rel=1e-10)
        assert float(torch.dot(o, f) / (o.norm() * f.norm())) == pytest.approx(1.0, abs=1e-12)
        # g_sub and g_full really differ, so the test distinguishes them
        assert float(s.norm()) != pytest.approx(float(f.norm()), rel=1e-3)
    # per-signal scaling: signals get different factors
    factors = [float(flat(g_sub, b).norm() / flat(g_full, b).norm()) for b in range(3)]
    assert len({round(f, 8) for f in factors}) == 3


def test_rescaled_gradient_with_full_context_is_the_full_gradient():
    learner = make_learner(gamma=1.0)
    coords, values = data()
    params = {n: p.detach() for n, p in learner.start_params(3).items()}
    g_full = learner.inner_grads(params, coords, values, create_graph=False)
    out = rescaled_gradients(learner, params, coords, values, g_full, 0)
    for n in out:
        torch.testing.assert_close(out[n], g_full[n], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("steps", [1, 3])
def test_fit_with_rescaling_matches_manual_steps(steps):
    learner = make_learner(gamma=0.25)
    coords, values = data()
    result = fit(learner, coords, values, steps=steps, use_context=True, grad_hook=rescaled_gradients)
    assert result.psnr.shape == (steps + 1, 3)
    for b in range(3):
        theta = {n: p.detach().clone() for n, p in learner.partition.start_params().items()}
        for _ in range(steps):
            theta = ref_rescaled_step(theta, coords, values[b], k=7)  # ceil(0.25 * 25)
        for n in theta:
            torch.testing.assert_close(result.params[n][b], theta[n], rtol=1e-9, atol=1e-12)


def test_rescaling_differs_from_plain_pruned_and_full_steps():
    learner = make_learner(gamma=0.25)
    coords, values = data()
    rescaled = fit(learner, coords, values, steps=1, use_context=True, grad_hook=rescaled_gradients).params
    pruned = fit(learner, coords, values, steps=1, use_context=True).params
    full = fit(learner, coords, values, steps=1).params
    assert not torch.allclose(rescaled["w0"], pruned["w0"])
    assert not torch.allclose(rescaled["w0"], full["w0"])

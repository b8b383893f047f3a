"""GradNCP's bootstrapped correction: a detached target from L full-context SGD steps, the unsquared L2
term per signal, and an outer gradient that flows only through theta_K."""

from __future__ import annotations

import pytest
import torch

from metainr.context import BootstrapCorrection, GradNCPSelector
from metainr.fields import Siren
from metainr.meta import MetaLearner, ParamPartition

DEPTH, W0, OFFSET = 3, 30.0, 0.5


def grid(side: int) -> torch.Tensor:
    lin = torch.linspace(-1, 1, side, dtype=torch.float64)
    return torch.stack(torch.meshgrid(lin, lin, indexing="ij"), dim=-1).reshape(-1, 2)


def make_learner(term: BootstrapCorrection | None, inner_steps: int = 2, strategy: str = "loop",
                 gamma: float = 0.5) -> MetaLearner:
    field = Siren(2, 3, width=8, depth=DEPTH, w0=W0, output_offset=OFFSET)
    part = ParamPartition(field, adapt="all", inner_lr=0.1, seed=0)
    return MetaLearner(field, part, inner_steps=inner_steps, context=GradNCPSelector(gamma),
                       outer_terms=[term] if term is not None else [], strategy=strategy).double()


def ref_forward(params, coords):
    """SIREN by hand (one signal, unbatched params), with the +0.5 output offset."""
    h = coords
    for i in range(DEPTH):
        pre = h @ params[f"w{i}"].T + params[f"b{i}"]
        if i == DEPTH - 1:
            return pre + OFFSET
        h = torch.sin(W0 * pre)
    raise AssertionError


def ref_boot(theta: dict, coords, values, steps: int, lr: float) -> dict:
    """L plain SGD steps on the full-context MSE of one signal, from a detached copy."""
    cur = {n: p.detach().clone() for n, p in theta.items()}
    for _ in range(steps):
        leaves = {n: p.clone().requires_grad_(True) for n, p in cur.items()}
        loss = (ref_forward(leaves, coords) - values).pow(2).mean()
        grads = torch.autograd.grad(loss, list(leaves.values()))
        cur = {n: (p - lr * g).detach() for (n, p), g in zip(cur.items(), grads)}
    return cur


def data(batch: int = 2, side: int = 5, seed: int = 0):
    values = torch.rand(batch, side * side, 3, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
    return grid(side), values


def test_target_is_detached_and_equals_manual_full_context_sgd():
    term = BootstrapCorrection(steps=3, lr=5e-2, weight=100.0)
    learner = make_learner(term)
    coords, values = data()
    adapted = learner.adapt(coords, values, training=True)  # second order: carries a graph
    assert all(p.requires_grad for p in adapted.values())
    target = term.target(learner, adapted, coords, values)
    assert target.keys() == adapted.keys()
    for p in target.values():
        assert not p.requires_grad and p.grad_fn is None
    for b in range(values.shape[0]):
        expect = ref_boot({n: p[b] for n, p in adapted.items()}, coords, values[b], steps=3, lr=5e-2)
        for n in adapted:
            torch.testing.assert_close(target[n][b], expect[n], rtol=1e-10, atol=1e-12)
    # the target moved away from theta_K (the full-context steps did something)
    assert any(not torch.allclose(target[n], adapted[n].detach()) for n in adapted)


def test_target_uses_full_context_not_the_pruned_one():
    term = BootstrapCorrection(steps=2, lr=5e-2, weight=1.0)
    learner = make_learner(term, gamma=0.25)
    coords, values = data()
    adapted = {n: p.detach() for n, p in learner.adapt(coords, values).items()}
    target = term.target(learner, adapted, coords, values)
    expect = ref_boot({n: p[0] for n, p in adapted.items()}, coords, values[0], steps=2, lr=5e-2)
    for n in adapted:
        torch.testing.assert_close(target[n][0], expect[n], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weight", [1.0, 100.0])
def test_term_is_weight_times_unsquared_l2_over_all_params(weight):
    term = BootstrapCorrection(steps=2, lr=5e-2, weight=weight)
    learner = make_learner(term)
    coords, values = data(batch=3)
    adapted = learner.adapt(coords, values, training=True)
    out = term(learner, adapted, coords, values)
    assert out.shape == (3,)
    for b in range(3):
        theta_b = {n: p[b] for n, p in adapted.items()}
        boot = ref_boot(theta_b, coords, values[b], steps=2, lr=5e-2)
        sq = sum(float((theta_b[n].detach() - boot[n]).pow(2).sum()) for n in theta_b)
        assert float(out[b].detach()) == pytest.approx(weight * sq ** 0.5, rel=1e-10)


def test_zero_steps_gives_zero_term():
    term = BootstrapCorrection(steps=0, lr=5e-2, weight=100.0)
    learner = make_learner(term)
    coords, values = data()
    out = term(learner, learner.adapt(coords, values, training=True), coords, values)
    assert torch.all(out.abs() < 1e-9)


@pytest.mark.parametrize("strategy", ["loop", "batched", "vmap"])
def test_meta_gradient_flows_only_through_theta_k(strategy):
    """meta_backward with the term == autograd of mean_b[MSE_b(theta_K) + lambda ||theta_K - c_b||] with
    the target c_b a constant computed by hand."""
    steps, lr, weight = 2, 5e-2, 100.0
    coords, values = data(batch=2)
    learner = make_learner(BootstrapCorrection(steps=steps, lr=lr, weight=weight), strategy=strategy)
    learner.zero_grad()
    learner.meta_backward(coords, values)
    got = {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}

    ref = make_learner(None)  # same init, no outer term
    ref.zero_grad()
    adapted = ref.adapt(coords, values, training=True)
    total = 0.0
    for b in range(2):
        theta_b = {n: p[b] for n, p in adapted.items()}
        const = ref_boot(theta_b, coords, values[b], steps, lr)
        mse = (ref_forward(theta_b, coords) - values[b]).pow(2).mean()
        dist = torch.sqrt(sum((theta_b[n] - const[n]).pow(2).sum() for n in theta_b))
        total = total + mse + weight * dist
    (total / 2).backward()
    expect = {n: p.grad.clone() for n, p in ref.named_parameters() if p.grad is not None}
    assert got.keys() == expect.keys()
    for n in expect:
        torch.testing.assert_close(got[n], expect[n], rtol=1e-7, atol=1e-9)

    # and differs from a version whose target is not detached (gradient also through theta_boot)
    leaky = make_learner(None)
    leaky.zero_grad()
    adapted = leaky.adapt(coords, values, training=True)
    total = 0.0
    for b in range(2):
        theta_b = {n: p[b] for n, p in adapted.items()}
        cur = dict(theta_b)
        for _ in range(steps):
            loss = (ref_forward(cur, coords) - values[b]).pow(2).mean()
            grads = torch.autograd.grad(loss, list(cur.values()), create_graph=True)
            cur = {n: p - lr * g for (n, p), g in zip(cur.items(), grads)}
        mse = (ref_forward(theta_b, coords) - values[b]).pow(2).mean()
        total = total + mse + weight * torch.sqrt(sum((theta_b[n] - cur[n]).pow(2).sum() for n in theta_b))
    (total / 2).backward()
    assert any(not torch.allclose(got[n], p.grad) for n, p in leaky.named_parameters() if p.grad is not None)


def test_term_gradient_wrt_theta_k_is_the_unit_direction():
    """d/dtheta_K of lambda ||theta_K - c|| = lambda (theta_K - c) / ||theta_K - c|| (c constant)."""
    term = BootstrapCorrection(steps=2, lr=5e-2, weight=7.0)
    learner = make_learner(term)
    coords, values = data()
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in learner.adapt(coords, values).items()}
    out = term(learner, leaves, coords, values)
    out.sum().backward()
    target = term.target(learner, leaves, coords, values)
    for b in range(2):
        diff = {n: (leaves[n][b] - target[n][b]).detach() for n in leaves}
        norm = torch.sqrt(sum(d.pow(2).sum() for d in diff.values()))
        for n in leaves:
            torch.testing.assert_close(leaves[n].grad[b], 7.0 * diff[n] / norm, rtol=1e-9, atol=1e-12)


def test_chunked_outer_pass_gives_the_same_meta_gradient():
    """The coordinate-chunked outer backward (high resolution) handles the term like one pass."""
    coords, values = data(batch=2)
    grads = []
    for chunk in (None, 7):
        learner = make_learner(BootstrapCorrection(steps=2, lr=5e-2, weight=100.0), strategy="batched")
        learner.chunk = chunk
        learner.zero_grad()
        stats = learner.meta_backward(coords, values)
        grads.append((stats["loss"], {n: p.grad.clone() for n, p in learner.named_parameters()
                                      if p.grad is not None}))
    assert grads[1][0] == pytest.approx(grads[0][0], rel=1e-6)  # the chunked loss stat is float32
    assert grads[1][1].keys() == grads[0][1].keys()
    for n in grads[0][1]:
        torch.testing.assert_close(grads[1][1][n], grads[0][1][n], rtol=1e-8, atol=1e-10)

"""GradNCP context selection: the closed-form score against autograd, the kept set, per-step
recomputation, the three batching strategies, and the random-context baseline."""

from __future__ import annotations

import pytest
import torch

from metainr.context import GradNCPSelector, RandomSelector, build_selector, gradncp_scores
from metainr.fields import Siren
from metainr.meta import MetaLearner, ParamPartition

DEPTH = 3


def grid(side: int) -> torch.Tensor:
    lin = torch.linspace(-1, 1, side, dtype=torch.float64)
    return torch.stack(torch.meshgrid(lin, lin, indexing="ij"), dim=-1).reshape(-1, 2)


def make_learner(out_dim: int = 3, width: int = 8, offset: float = 0.0, inner_steps: int = 2,
                 context=None, strategy: str = "loop", inner_lr: float = 1e-2, chunk: int | None = None,
                 seed: int = 0) -> MetaLearner:
    field = Siren(2, out_dim, width=width, depth=DEPTH, w0=30.0, output_offset=offset)
    part = ParamPartition(field, adapt="all", inner_lr=inner_lr, seed=seed)
    return MetaLearner(field, part, inner_steps=inner_steps, context=context, strategy=strategy,
                       chunk=chunk).double()


def perturbed_params(learner: MetaLearner, batch: int, scale: float = 0.05, seed: int = 1):
    """Per-signal parameters (B, ...) that differ between signals."""
    gen = torch.Generator().manual_seed(seed)
    return {n: p.detach() + scale * torch.randn(batch, *p.shape, generator=gen, dtype=p.dtype)
            for n, p in learner.partition.start_params().items()}


def autograd_scores(learner: MetaLearner, params, coords, values) -> torch.Tensor:
    """||d/d(w_last, b_last) 1/2 ||y_i - f(x_i)||^2||, by autograd, one signal and coordinate at a time."""
    last_w, last_b = f"w{DEPTH - 1}", f"b{DEPTH - 1}"
    batch, n = values.shape[:2]
    out = torch.zeros(batch, n, dtype=values.dtype)
    for b in range(batch):
        for i in range(n):
            p = {k: v[b].detach().clone().requires_grad_(True) for k, v in params.items()}
            x = coords[b, i:i + 1] if coords.dim() == 3 else coords[i:i + 1]
            loss = 0.5 * (values[b, i:i + 1] - learner.predict(p, x)).pow(2).sum()
            gw, gb = torch.autograd.grad(loss, [p[last_w], p[last_b]])
            out[b, i] = torch.cat([gw.reshape(-1), gb.reshape(-1)]).norm()
    return out


def index_values(batch: int, n: int, channels: int = 3, seed: int = 2) -> torch.Tensor:
    """Values whose channel 0 encodes the coordinate index (i / n), the rest random."""
    gen = torch.Generator().manual_seed(seed)
    vals = torch.rand(batch, n, channels, generator=gen, dtype=torch.float64)
    vals[..., 0] = torch.arange(n, dtype=torch.float64) / n
    return vals


def decode_index(sel_values: torch.Tensor, n: int) -> torch.Tensor:
    return torch.round(sel_values[..., 0] * n).long()


# ------------------------------------------------------------------------------ closed-form score
@pytest.mark.parametrize("offset", [0.0, 0.5])
@pytest.mark.parametrize("per_signal_coords", [False, True])
def test_scores_equal_autograd_last_layer_gradient_norm(offset, per_signal_coords):
    learner = make_learner(offset=offset)
    coords = grid(5)
    if per_signal_coords:
        coords = torch.stack([coords, coords.flip(0) * 0.7])
    params = perturbed_params(learner, batch=2)
    values = torch.rand(2, 25, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    scores = gradncp_scores(learner, params, coords, values)
    assert scores.shape == (2, 25)
    assert not scores.requires_grad
    expect = autograd_scores(learner, params, coords, values)
    torch.testing.assert_close(scores, expect, rtol=1e-5, atol=1e-10)


def test_scores_are_the_same_when_chunked():
    params = perturbed_params(make_learner(), batch=2)
    values = torch.rand(2, 25, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    whole = gradncp_scores(make_learner(), params, grid(5), values)
    chunked = gradncp_scores(make_learner(chunk=7), params, grid(5), values)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)


def test_scores_use_the_output_with_its_offset():
    """With the +0.5 offset the score uses the offset output (e = y - f(x) - 0.5 would differ)."""
    plain, shifted = make_learner(offset=0.0), make_learner(offset=0.5)
    params = perturbed_params(plain, batch=2)
    values = torch.rand(2, 25, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    # Shifting the targets by the offset gives the same error vector, hence the same scores.
    torch.testing.assert_close(gradncp_scores(shifted, params, grid(5), values + 0.5),
                               gradncp_scores(plain, params, grid(5), values))


# ------------------------------------------------------------------------------ the kept set
# N = 25: ceil(gamma N); 0.28 * 25 == 7.000000000000001 and 0.56 * 25 == 14.000000000000002 in floats.
EXPECTED_KEPT = {0.01: 1, 0.1: 3, 0.2: 5, 0.25: 7, 0.28: 7, 0.5: 13, 0.56: 14, 0.9: 23, 1.0: 25}


@pytest.mark.parametrize("gamma", sorted(EXPECTED_KEPT))
@pytest.mark.parametrize("per_signal_coords", [False, True])
def test_selection_keeps_top_ceil_gamma_n(gamma, per_signal_coords):
    learner = make_learner()
    n, batch = 25, 2
    base = grid(5)
    if per_signal_coords:  # a different permutation of the grid per signal
        gen = torch.Generator().manual_seed(4)
        coords = torch.stack([base[torch.randperm(n, generator=gen)] for _ in range(batch)])
    else:
        coords = base
    values = index_values(batch, n)
    params = perturbed_params(learner, batch)
    sel_c, sel_v = GradNCPSelector(gamma).select(learner, params, coords, values, step=0, training=True)
    k = EXPECTED_KEPT[gamma]
    assert sel_c.shape == (batch, k, 2) and sel_v.shape == (batch, k, 3)
    scores = gradncp_scores(learner, params, coords, values)
    idx = decode_index(sel_v, n)
    for b in range(batch):
        kept = idx[b]
        assert len(set(kept.tolist())) == k  # distinct
        # values and coordinates gathered with the same indices
        torch.testing.assert_close(sel_v[b], values[b, kept], rtol=0, atol=0)
        c_b = coords[b] if per_signal_coords else coords
        torch.testing.assert_close(sel_c[b], c_b[kept], rtol=0, atol=0)
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[kept] = False
        if dropped.any():
            assert scores[b, kept].min() >= scores[b, dropped].max()


def test_selection_uses_one_index_set_for_all_channels_and_signals_independently():
    learner = make_learner()
    values = index_values(2, 25)
    params = perturbed_params(learner, 2)
    _, sel_v = GradNCPSelector(0.25).select(learner, params, grid(5), values, step=0, training=True)
    idx = decode_index(sel_v, 25)
    # every channel of a kept row comes from the same coordinate
    for b in range(2):
        torch.testing.assert_close(sel_v[b], values[b, idx[b]])
    scores = gradncp_scores(learner, params, grid(5), values)
    for b in range(2):
        expect = set(scores[b].topk(7).indices.tolist())
        assert set(idx[b].tolist()) == expect


def test_invalid_gamma_is_refused():
    for gamma in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            GradNCPSelector(gamma)
        with pytest.raises(ValueError):
            RandomSelector(gamma)
    assert build_selector("full") is None
    with pytest.raises(ValueError):
        build_selector("nope")


# ------------------------------------------------------------------------------ per-step recomputation
class SpySelector(GradNCPSelector):
    def __init__(self, gamma):
        super().__init__(gamma)
        self.calls: list[tuple[int, dict, torch.Tensor]] = []

    def select(self, learner, params, coords, values, step, training):
        sel_c, sel_v = super().select(learner, params, coords, values, step, training)
        snapshot = {n: p.detach().clone() for n, p in params.items()}
        self.calls.append((step, snapshot, decode_index(sel_v, values.shape[-2])))
        return sel_c, sel_v


def test_selection_is_recomputed_every_inner_step_with_current_params():
    steps, n = 4, 25
    spy = SpySelector(0.25)
    learner = make_learner(inner_steps=steps, context=spy, inner_lr=0.5, strategy="batched")
    values = index_values(2, n)
    learner.adapt(grid(5), values, training=True)
    assert [c[0] for c in spy.calls] == list(range(steps))
    # the params seen at step k are theta_k (the result of k inner steps), not theta_0
    for step, seen, idx in spy.calls:
        expect_params = make_learner(inner_steps=steps, context=GradNCPSelector(0.25), inner_lr=0.5).adapt(
            grid(5), values, steps=step, training=False, create_graph=False)
        for name, p in seen.items():
            torch.testing.assert_close(p, expect_params[name].detach())
        scores = gradncp_scores(learner, seen, grid(5), values)
        for b in range(2):
            assert set(idx[b].tolist()) == set(scores[b].topk(7).indices.tolist())
    # the selection actually moves as the params change
    assert any(set(spy.calls[0][2][b].tolist()) != set(c[2][b].tolist())
               for c in spy.calls[1:] for b in range(2))


@pytest.mark.parametrize("strategy,expected_calls", [("loop", 3 * 3), ("batched", 3)])
def test_meta_backward_selects_once_per_inner_step(strategy, expected_calls):
    spy = SpySelector(0.25)
    learner = make_learner(inner_steps=3, context=spy, strategy=strategy)
    learner.meta_backward(grid(5), index_values(3, 25))
    assert len(spy.calls) == expected_calls
    assert [c[0] for c in spy.calls] == [0, 1, 2] * (expected_calls // 3)


# ------------------------------------------------------------------------------ strategies agree
@pytest.mark.parametrize("per_signal_coords", [False, True])
def test_strategies_give_the_same_meta_gradient_with_gradncp(per_signal_coords):
    coords = grid(5)
    if per_signal_coords:
        coords = torch.stack([coords, coords * 0.9, coords.flip(0)])
    values = torch.rand(3, 25, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    results = {}
    for strategy in ("loop", "batched", "vmap"):
        learner = make_learner(inner_steps=3, context=GradNCPSelector(0.3), strategy=strategy, inner_lr=0.1)
        learner.zero_grad()
        stats = learner.meta_backward(coords, values)
        results[strategy] = (stats["loss"], {n: p.grad.clone() for n, p in learner.named_parameters()
                                             if p.grad is not None})
    ref_loss, ref_grads = results["loop"]
    assert ref_grads
    for strategy in ("batched", "vmap"):
        loss, grads = results[strategy]
        assert loss == pytest.approx(ref_loss, rel=1e-10)
        assert grads.keys() == ref_grads.keys()
        for name in ref_grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-8, atol=1e-10)


def test_pruned_context_changes_the_meta_gradient():
    """Sanity: the selector is actually used (gamma < 1 differs from full context, gamma = 1 equals it)."""
    values = torch.rand(2, 25, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def grads(context):
        learner = make_learner(inner_steps=2, context=context, inner_lr=0.1)
        learner.meta_backward(grid(5), values)
        return torch.cat([p.grad.reshape(-1) for p in learner.parameters() if p.grad is not None])

    full = grads(None)
    torch.testing.assert_close(grads(GradNCPSelector(1.0)), full)
    assert not torch.allclose(grads(GradNCPSelector(0.25)), full)


# ------------------------------------------------------------------------------ random baseline
def test_random_selector_count_distinct_consistent():
    learner = make_learner()
    values = index_values(4, 25)
    params = perturbed_params(learner, 4)
    sel = RandomSelector(0.25)
    sel_c, sel_v = sel.select(learner, params, grid(5), values, step=0, training=True)
    assert sel_c.shape == (4, 7, 2) and sel_v.shape == (4, 7, 3)
    idx = decode_index(sel_v, 25)
    for b in range(4):
        assert len(set(idx[b].tolist())) == 7
        torch.testing.assert_close(sel_c[b], grid(5)[idx[b]], rtol=0, atol=0)
        torch.testing.assert_close(sel_v[b], values[b, idx[b]], rtol=0, atol=0)


def test_random_selector_differs_across_calls_and_is_roughly_uniform():
    torch.manual_seed(0)
    learner = make_learner()
    n, batch, calls = 20, 100, 20
    coords = grid(5)[:n]
    values = index_values(batch, n)
    params = perturbed_params(learner, batch)
    sel = RandomSelector(0.25)
    counts = torch.zeros(n)
    sets = []
    for _ in range(calls):
        _, sel_v = sel.select(learner, params, coords, values, step=0, training=True)
        idx = decode_index(sel_v, n)
        assert idx.shape == (batch, 5)
        counts += torch.bincount(idx.reshape(-1), minlength=n).double()
        sets.append(frozenset(idx[0].tolist()))
    assert len(set(sets)) > calls // 2  # differs across calls (C(20, 5) = 15504 possible sets)
    freq = counts / (batch * calls)
    # each coordinate kept with probability 5/20; 2000 draws -> std ~0.01
    assert torch.all((freq - 0.25).abs() < 0.05), freq


@pytest.mark.parametrize("strategy", ["loop", "batched", "vmap"])
def test_random_context_meta_backward_runs_under_every_strategy(strategy):
    torch.manual_seed(0)
    learner = make_learner(inner_steps=2, context=RandomSelector(0.25), strategy=strategy)
    values = torch.rand(2, 25, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    stats = learner.meta_backward(grid(5), values)
    assert stats["batch"] == 2 and torch.isfinite(torch.tensor(stats["loss"]))
    grads = [p.grad for p in learner.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

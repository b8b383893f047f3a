"""MSCN hard-concrete gates: the gate formulas, gated inner updates (training samples and exact top-k
test gates), counted sparsity of fitted signals, fixed modulation patterns, the L0 penalty and its
gradient under every batching strategy, the lambda controller and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from metainr.meta.fit import fit
from metainr.methods import apply_preset, build_learner
from metainr.runs.checkpoint import load_checkpoint, save_checkpoint
from metainr.signals.grid import coordinate_grid
from metainr.sparsity.gates import BETA, GAMMA, ZETA, GatedUpdates, HardConcreteGate, realised_density


def make_learner(preset: str = "mscn-grad", strategy: str = "loop", seed: int = 0, gates=None,
                 **method_overrides):
    overrides = dict(method_overrides)
    if gates is not None:
        overrides["options"] = {"gates": gates}
    f, m = apply_preset(preset, field_overrides={"width": 8, "depth": 3}, method_overrides=overrides)
    return build_learner(f, m, 2, 3, seed=seed, strategy=strategy)


def make_data(batch: int = 3, side: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return coordinate_grid((side, side)), torch.rand(batch, side * side, 3, generator=g)


def gated(learner) -> GatedUpdates:
    (shaper,) = [s for s in learner.shapers if isinstance(s, GatedUpdates)]
    return shaper


def randomise_log_a(learner, seed: int = 0, scale: float = 2.0) -> None:
    """Distinct log_a values (no top-k ties) spanning closed, partly open and open gates."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in gated(learner).gates.values():
            gate.log_a.copy_(torch.randn(gate.log_a.shape, generator=g) * scale)


def hard_concrete(u: torch.Tensor, log_a: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_a) / BETA)
    return torch.clamp(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def nonzero_gates(gates: dict[str, torch.Tensor]) -> int:
    return sum(int(torch.count_nonzero(z)) for z in gates.values())


# ------------------------------------------------------------------------------ HardConcreteGate
def test_sample_equals_hard_concrete_formula():
    gate = HardConcreteGate((4, 5))
    with torch.no_grad():
        gate.log_a.copy_(torch.linspace(-4, 4, 20).view(4, 5))
    u = torch.rand(7, 4, 5, generator=torch.Generator().manual_seed(0)).clamp(1e-6, 1 - 1e-6)
    z = gate.sample(u=u)
    assert z.shape == (7, 4, 5)
    torch.testing.assert_close(z, hard_concrete(u, gate.log_a.detach()), rtol=1e-5, atol=1e-6)
    assert z.min() >= 0 and z.max() <= 1
    assert gate.sample((3, 2)).shape == (3, 2, 4, 5)


def test_sample_exact_zeros_and_ones():
    torch.manual_seed(0)
    gate = HardConcreteGate((1000,))
    with torch.no_grad():
        gate.log_a.fill_(-20.0)
    assert torch.equal(gate.sample(), torch.zeros(1000))
    with torch.no_grad():
        gate.log_a.fill_(20.0)
    assert torch.equal(gate.sample(), torch.ones(1000))
    with torch.no_grad():
        gate.log_a.fill_(0.0)
    z = gate.sample()
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()


def test_empirical_nonzero_probability_matches_expected_l0():
    torch.manual_seed(0)
    log_a = torch.tensor([-4.0, -2.0, -1.0, 0.0, 1.0, 2.5])
    gate = HardConcreteGate((6,))
    with torch.no_grad():
        gate.log_a.copy_(log_a)
    z = gate.sample((20000,))
    empirical = (z != 0).float().mean(0)
    expected = gate.expected_l0().detach()
    assert (empirical - expected).abs().max() < 0.02
    assert expected.min() < 0.2 and expected.max() > 0.9  # a range of probabilities was checked


def test_expected_l0_formula():
    gate = HardConcreteGate((5,))
    with torch.no_grad():
        gate.log_a.copy_(torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0]))
    want = [1.0 / (1.0 + math.exp(-(a - BETA * math.log(-GAMMA / ZETA))))
            for a in gate.log_a.tolist()]
    torch.testing.assert_close(gate.expected_l0().detach(), torch.tensor(want), rtol=1e-6, atol=1e-7)


def test_deterministic_gate_formula_and_exact_zeros():
    gate = HardConcreteGate((6,))
    log_a = torch.tensor([-30.0, -5.0, -2.5, 0.0, 1.0, 30.0])
    with torch.no_grad():
        gate.log_a.copy_(log_a)
    det = gate.deterministic().detach()
    want = (torch.sigmoid(log_a) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
    torch.testing.assert_close(det, want)
    assert det[0] == 0.0 and det[1] == 0.0 and det[2] == 0.0  # sigmoid < 1/12 -> exactly closed
    assert 0 < det[3] < 1 and 0 < det[4] < 1
    assert det[5] == 1.0
    # the default init starts with the gates (nearly) open
    assert (HardConcreteGate((3,)).deterministic() > 0.9).all()


def test_gradient_flows_from_sample_to_log_a():
    gate = HardConcreteGate((8,))
    with torch.no_grad():
        gate.log_a.copy_(torch.linspace(-3, 3, 8))
    u = torch.full((8,), 0.5)
    u[0], u[-1] = 1e-6, 1 - 1e-6   # clamped at 0 and at 1: no gradient there
    z = gate.sample(u=u)
    z.sum().backward()
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + gate.log_a.detach()) / BETA)
    inside = (z > 0) & (z < 1)
    want = torch.where(inside, (ZETA - GAMMA) * s * (1 - s) / BETA, torch.zeros(8))
    assert inside.sum() >= 4 and not inside[0] and not inside[-1]
    torch.testing.assert_close(gate.log_a.grad, want, rtol=1e-5, atol=1e-7)
    assert (gate.log_a.grad[inside] > 0).all()


# ------------------------------------------------------------------------- GatedUpdates (shaper)
def test_training_inner_step_is_gated_sgd():
    learner = make_learner()
    randomise_log_a(learner)
    shaper = gated(learner)
    coords, values = make_data()
    batch = values.shape[0]
    torch.manual_seed(123)
    adapted = learner.adapt(coords, values, steps=1, training=True, create_graph=False)
    torch.manual_seed(123)
    z = {n: g.sample((batch,)).detach() for n, g in shaper.gates.items()}
    zeros = sum(int((t == 0).sum()) for t in z.values())
    assert 0 < zeros < sum(t.numel() for t in z.values())  # some gates shut, some open
    theta0 = {n: p.detach() for n, p in learner.partition.start_params().items()}
    for i in range(batch):
        leaves = {n: p.clone().requires_grad_(True) for n, p in theta0.items()}
        pred = learner.field.forward({**learner.partition.shared_params(), **leaves}, coords)
        loss = (pred - values[i]).pow(2).mean()
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        for n, p0 in theta0.items():
            lr = learner.partition.lr(n)
            lr = lr.detach() if torch.is_tensor(lr) else lr
            want = p0 - lr * (z[n][i] * grads[n])
            got = adapted[n][i].detach()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
            shut = z[n][i] == 0
            assert torch.equal(got[shut], p0[shut])   # gated-off entries do not move at all


@pytest.mark.parametrize("target", [0.013, 0.05, 0.1, 0.37, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_test_gates_keep_exactly_the_target_count(target, ties):
    shaper = GatedUpdates({"a": (7, 5), "b": (11,), "c": (3, 4)}, target_density=target)
    if not ties:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for gate in shaper.gates.values():
                gate.log_a.copy_(torch.randn(gate.log_a.shape, generator=g) * 3)
    keep = round(target * shaper.num_gated)
    assert keep >= 1
    gates = shaper.test_gates()
    assert nonzero_gates(gates) == keep
    for z in gates.values():
        assert z.min() >= 0 and z.max() <= 1
    if not ties:  # one global top-k of log_a over all gated entries
        flat_log_a = torch.cat([g.log_a.detach().reshape(-1) for g in shaper.gates.values()])
        flat_z = torch.cat([z.reshape(-1) for z in gates.values()])
        want = torch.zeros_like(flat_log_a, dtype=torch.bool)
        want[torch.topk(flat_log_a, keep).indices] = True
        assert torch.equal(flat_z != 0, want)
    state = shaper.begin(None, 4, training=False)
    for n, z in gates.items():
        assert state[n].shape == (4, *z.shape)
        assert all(torch.equal(state[n][i], z) for i in range(4))


def test_test_gates_without_target_are_deterministic_gates():
    shaper = GatedUpdates({"a": (4, 3)})
    with torch.no_grad():
        shaper.gates["a"].log_a.copy_(torch.linspace(-6, 6, 12).view(4, 3))
    gates = shaper.test_gates()
    assert torch.equal(gates["a"], shaper.gates["a"].deterministic())
    assert (gates["a"] == 0).any()


def _meta_train(learner, steps: int = 3, seed: int = 0):
    coords, values = make_data(batch=2, seed=seed + 10)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        learner.meta_backward(coords, values)
        opt.step()
        learner.after_outer_step()
    return opt


def _check_realised_density(learner):
    shaper = gated(learner)
    coords, values = make_data(batch=3)
    result = fit(learner, coords, values, steps=3)
    theta0 = {n: p.detach() for n, p in learner.partition.start_params().items()}
    delta = {n: result.params[n] - theta0[n] for n in result.params}
    gates = {n: z[0] for n, z in learner.begin(1, training=False)[0].items()}  # what fit used
    keep = round(shaper.target_density * shaper.num_gated)
    assert nonzero_gates(gates) == keep
    assert realised_density(delta) == pytest.approx(keep / shaper.num_gated, abs=0)
    for n, d in delta.items():
        for i in range(values.shape[0]):
            assert torch.equal(d[i] != 0, gates[n] != 0)   # exactly the open entries moved
    return gates


def test_realised_density_equals_counted_test_gates():
    learner = make_learner()  # mscn-grad: gates on every adapted entry, Meta-SGD
    torch.manual_seed(0)
    _meta_train(learner)
    randomise_log_a(learner, seed=3)
    # meta-training drove some Meta-SGD rates to the clip at 0; one of them has a top log_a
    dead = {n: learner.partition.lr(n).detach() == 0 for n in learner.partition.adapt_names}
    assert any(d.any() for d in dead.values())
    gates = _check_realised_density(learner)
    assert not any((gates[n] != 0)[d].any() for n, d in dead.items())


def test_test_gates_skip_entries_that_cannot_move():
    """Entries with a zero Meta-SGD rate never move, so top-k passes over them (exact realised count)."""
    learner = make_learner()
    randomise_log_a(learner, seed=5)
    shaper = gated(learner)
    flat = torch.cat([g.log_a.detach().reshape(-1) for g in shaper.gates.values()])
    keep = round(shaper.target_density * shaper.num_gated)
    top = set(torch.topk(flat, keep + 3).indices[:3].tolist())  # zero the rates of the 3 best entries
    offset = 0
    with torch.no_grad():
        for n, g in shaper.gates.items():
            for j in range(g.log_a.numel()):
                if offset + j in top:
                    learner.partition.lrs[n].view(-1)[j] = -1.0   # clamped to exactly 0
            offset += g.log_a.numel()
    assert nonzero_gates(shaper.test_gates()) == keep          # without the learner: plain top-k
    gates = _check_realised_density(learner)
    chosen = torch.cat([z.reshape(-1) != 0 for z in gates.values()])
    want = torch.zeros_like(chosen)
    want[torch.topk(flat, keep + 3).indices[3:]] = True        # the next best entries instead
    assert torch.equal(chosen, want)


def test_realised_density_counts_zeros():
    delta = {"a": torch.tensor([[0.0, 1e-30, 0.0], [2.0, 0.0, 0.0]]), "b": torch.zeros(2, 4)}
    assert realised_density(delta) == pytest.approx(2 / 14)


# -------------------------------------------------------------------------------- mscn-mod
def test_mscn_mod_frozen_modulation_pattern_shared_by_all_signals():
    learner = make_learner("mscn-mod")
    assert learner.partition.adapt_names == ["mod0", "mod1"]
    randomise_log_a(learner, seed=1)
    shaper = gated(learner)
    gates = shaper.test_gates()
    keep = round(shaper.target_density * shaper.num_gated)
    assert nonzero_gates(gates) == keep
    patterns = []
    for seed in (1, 2):
        coords, values = make_data(batch=4, seed=seed)
        result = fit(learner, coords, values, steps=3)
        pattern = {n: p != 0 for n, p in result.params.items()}
        for n, pat in pattern.items():
            for i in range(values.shape[0]):
                assert torch.equal(pat[i], gates[n] != 0)   # same support for every signal
        assert sum(int(p[0].sum()) for p in pattern.values()) == keep
        patterns.append({n: p[0] for n, p in pattern.items()})
    assert all(torch.equal(patterns[0][n], patterns[1][n]) for n in patterns[0])


# -------------------------------------------------------------------------------- penalty
def test_global_penalty_is_lam_times_mean_expected_l0():
    learner = make_learner(gates={"lam": 0.3})
    randomise_log_a(learner)
    shaper = gated(learner)
    l0 = torch.cat([g.expected_l0().reshape(-1) for g in shaper.gates.values()])
    assert l0.numel() == shaper.num_gated == sum(p.numel() for p in learner.partition.start_params().values())
    torch.testing.assert_close(learner.global_penalty(), 0.3 * l0.mean())


def _log_a_grads(learner) -> dict[str, torch.Tensor]:
    return {n: g.log_a.grad.clone() for n, g in gated(learner).gates.items()}


def test_penalty_gradient_reaches_log_a_through_meta_backward():
    lam = 0.5
    learner = make_learner(gates={"lam": lam})
    randomise_log_a(learner)
    shaper = gated(learner)
    coords, values = make_data()
    grads = {}
    for value in (lam, 0.0):
        shaper.lam.fill_(value)
        learner.zero_grad()
        torch.manual_seed(7)  # the same gate samples in both runs
        stats = learner.meta_backward(coords, values)
        grads[value] = _log_a_grads(learner)
    assert stats["penalty"] == 0.0
    log_a = [g.log_a for g in shaper.gates.values()]
    penalty = lam * torch.cat([g.expected_l0().reshape(-1) for g in shaper.gates.values()]).mean()
    want = dict(zip(shaper.gates, torch.autograd.grad(penalty, log_a)))
    for n in want:
        torch.testing.assert_close(grads[lam][n] - grads[0.0][n], want[n], rtol=1e-4, atol=1e-8)
        assert (want[n] > 0).all()


def _deterministic_begin(self, learner, batch_size, training):
    return {n: g.deterministic().expand(batch_size, *g.log_a.shape) for n, g in self.gates.items()}


@pytest.mark.parametrize("preset", ["mscn-grad", "mscn-mod"])
def test_strategies_give_the_same_meta_gradients_for_fixed_gates(preset, monkeypatch):
    monkeypatch.setattr(GatedUpdates, "begin", _deterministic_begin)
    coords, values = make_data(batch=3)
    results = {}
    for strategy in ("loop", "batched", "vmap"):
        learner = make_learner(preset, strategy=strategy, gates={"lam": 0.1})
        with torch.no_grad():  # partly open gates (away from the clamp) so log_a gets an MSE gradient
            for gate in gated(learner).gates.values():
                gate.log_a.copy_(torch.linspace(-1.0, 1.5, gate.log_a.numel()).view_as(gate.log_a))
        learner.zero_grad()
        stats = learner.meta_backward(coords, values)
        grads = {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}
        results[strategy] = (stats, grads)
    ref_stats, ref = results["loop"]
    assert any(n.endswith("log_a") for n in ref)
    assert all(v.abs().sum() > 0 for n, v in ref.items() if n.endswith("log_a"))
    for strategy in ("batched", "vmap"):
        stats, grads = results[strategy]
        assert stats["loss"] == pytest.approx(ref_stats["loss"], rel=1e-5)
        assert grads.keys() == ref.keys()
        for n in ref:
            torch.testing.assert_close(grads[n], ref[n], rtol=1e-4, atol=1e-6, msg=f"{strategy} {n}")


def test_batched_and_vmap_draw_the_same_gate_samples():
    """Both sample the whole meta-batch's gates once, before the inner loop."""
    coords, values = make_data(batch=3)
    grads = {}
    for strategy in ("batched", "vmap"):
        learner = make_learner(strategy=strategy)
        learner.zero_grad()
        torch.manual_seed(5)
        learner.meta_backward(coords, values)
        grads[strategy] = _log_a_grads(learner)
    for n in grads["batched"]:
        torch.testing.assert_close(grads["vmap"][n], grads["batched"][n], rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------- lambda controller
def test_controller_raises_lam_when_too_dense():
    learner = make_learner(gates={"target_density": 0.01})
    shaper = gated(learner)
    assert float(shaper.expected_density().detach()) > 0.5
    lams = [float(shaper.lam)]
    for _ in range(5):
        learner.after_outer_step()
        lams.append(float(shaper.lam))
    assert all(b > a for a, b in zip(lams, lams[1:]))
    assert lams[-1] == pytest.approx(lams[0] * math.exp(5 * shaper.controller_rate), rel=1e-5)


def test_controller_lowers_lam_when_too_sparse():
    learner = make_learner(gates={"target_density": 0.9, "init_prob": 0.05})
    shaper = gated(learner)
    assert float(shaper.expected_density().detach()) < 0.5
    lams = [float(shaper.lam)]
    for _ in range(5):
        learner.after_outer_step()
        lams.append(float(shaper.lam))
    assert all(b < a for a, b in zip(lams, lams[1:]))


def test_controller_off_without_target_and_lam_is_not_trained():
    learner = make_learner(gates={"target_density": None, "lam": 0.2})
    shaper = gated(learner)
    learner.after_outer_step()
    assert float(shaper.lam) == pytest.approx(0.2)
    assert all(p is not shaper.lam for p in learner.parameters())


# ------------------------------------------------------------------------------ checkpoints
def test_gates_and_lam_survive_checkpoint(tmp_path):
    learner = make_learner()
    torch.manual_seed(0)
    opt = _meta_train(learner, steps=3)
    shaper = gated(learner)
    assert float(shaper.lam) != pytest.approx(1e-3)   # the controller moved it
    assert any((g.log_a != g.log_a.flatten()[0]).any() for g in shaper.gates.values())  # trained
    path = save_checkpoint(tmp_path, 3, learner, opt, {"preset": "mscn-grad"})

    fresh = make_learner(seed=1)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    load_checkpoint(path, fresh, fresh_opt, {"preset": "mscn-grad"})
    fresh_shaper = gated(fresh)
    assert torch.equal(fresh_shaper.lam, shaper.lam)
    for n, g in shaper.gates.items():
        assert torch.equal(fresh_shaper.gates[n].log_a, g.log_a)
    tg, fresh_tg = shaper.test_gates(), fresh_shaper.test_gates()
    assert all(torch.equal(tg[n], fresh_tg[n]) for n in tg)
    coords, values = make_data(batch=2, seed=4)
    a = fit(learner, coords, values, steps=2)
    b = fit(fresh, coords, values, steps=2)
    assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)

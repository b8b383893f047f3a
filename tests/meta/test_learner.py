"""The functional MAML core against a hand-written reference, and its invariants (masks, batching)."""

from __future__ import annotations

import pytest
import torch

from metainr.fields import ModulatedSiren, Siren
from metainr.meta import MetaLearner, ParamPartition

STRATEGIES = ("loop", "batched", "vmap")
W0 = 30.0


# ------------------------------------------------------------------------------ hand-written MAML
def ref_forward(params, coords, depth, masks=None, width=None):
    """SIREN by hand; optional shift modulations ``mod{i}`` or a latent with a linear map."""
    mods = None
    if "latent" in params:
        flat = params["map_w"] @ params["latent"] + params["map_b"]
        mods = [flat[i * width:(i + 1) * width] for i in range(depth - 1)]
    elif "mod0" in params:
        mods = [params[f"mod{i}"] for i in range(depth - 1)]
    h = coords
    for i in range(depth):
        w = params[f"w{i}"]
        if masks and f"w{i}" in masks:
            w = w * masks[f"w{i}"]
        pre = h @ w.T + params[f"b{i}"]
        if i == depth - 1:
            return pre
        if mods is not None:
            pre = pre + mods[i]
        h = torch.sin(W0 * pre)
    raise AssertionError


def ref_maml(part: ParamPartition, coords, values, steps, first_order, depth, width=None):
    """Per-signal MAML with explicit tensors; returns adapted params (stacked), the mean outer loss
    and the meta-gradient of every trainable tensor of the partition (by name)."""
    names = list(part.adapt_names)
    shared = {k: v for k, v in part.shared.items()}
    masks = part.mask_dict()
    trainable = {**{f"shared.{k}": v for k, v in part.shared.items()},
                 **{f"init.{k}": v for k, v in part.init.items()},
                 **{f"lrs.{k}": v for k, v in part.lrs.items()}}
    lrs = {n: (part.lrs[n].clamp(0, 1) if part.meta_sgd else part.inner_lr) for n in names}
    batch = values.shape[0]
    outer, adapted_all = 0.0, []
    for i in range(batch):
        c = coords[i] if coords.dim() == 3 else coords
        theta = {}
        for n in names:
            if n in part.init:
                theta[n] = part.init[n]
            else:
                theta[n] = part.fixed_init[n].clone().requires_grad_(True)
        for _ in range(steps):
            if first_order:
                leaves = {n: t.detach().requires_grad_(True) for n, t in theta.items()}
                loss = (ref_forward({**shared, **leaves}, c, depth, masks, width) - values[i]).pow(2).mean()
                grads = torch.autograd.grad(loss, list(leaves.values()))
            else:
                loss = (ref_forward({**shared, **theta}, c, depth, masks, width) - values[i]).pow(2).mean()
                grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
            theta = {n: theta[n] - lrs[n] * g for n, g in zip(names, grads, strict=True)}
        adapted_all.append(theta)
        outer = outer + (ref_forward({**shared, **theta}, c, depth, masks, width) - values[i]).pow(2).mean()
    outer = outer / batch
    keys = list(trainable)
    grads = torch.autograd.grad(outer, [trainable[k] for k in keys], allow_unused=True)
    meta_grads = {k: (torch.zeros_like(trainable[k]) if g is None else g)
                  for k, g in zip(keys, grads, strict=True)}
    adapted = {n: torch.stack([a[n] for a in adapted_all]).detach() for n in names}
    return adapted, float(outer.detach()), meta_grads


def learner_grads(part: ParamPartition) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, d in (("shared", part.shared), ("init", part.init), ("lrs", part.lrs)):
        for k, v in d.items():
            out[f"{prefix}.{k}"] = torch.zeros_like(v) if v.grad is None else v.grad.clone()
    return out


def zero_grads(learner: MetaLearner) -> None:
    for p in learner.parameters():
        p.grad = None


def make_learner(adapt="all", meta_sgd=False, first_order=False, strategy="loop", steps=2, depth=3,
                 width=16, dtype=torch.float64, seed=0, field=None):
    field = field or Siren(2, 3, width=width, depth=depth, w0=W0)
    part = ParamPartition(field, adapt=adapt, meta_sgd=meta_sgd, inner_lr=1e-2, seed=seed)
    learner = MetaLearner(field, part, inner_steps=steps, first_order=first_order, strategy=strategy)
    return learner.to(dtype)


def make_data(batch=3, n=20, channels=3, per_signal_coords=False, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, n, 2) if per_signal_coords else (n, 2)
    coords = (torch.rand(*shape, generator=g) * 2 - 1).to(dtype)
    values = torch.rand(batch, n, channels, generator=g).to(dtype)
    return coords, values


def assert_grads_close(got, want, atol, rtol=1e-6):
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=atol, rtol=rtol, msg=lambda m, k=k: f"{k}: {m}")


# ----------------------------------------------------------------------- reference comparisons
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("meta_sgd", [False, True])
@pytest.mark.parametrize("adapt", ["all", "w2,b2"])
@pytest.mark.parametrize("per_signal_coords", [False, True])
def test_second_order_matches_reference(strategy, meta_sgd, adapt, per_signal_coords):
    learner = make_learner(adapt=adapt, meta_sgd=meta_sgd, strategy=strategy)
    part = learner.partition
    coords, values = make_data(per_signal_coords=per_signal_coords)
    ref_adapted, ref_loss, ref_grads = ref_maml(part, coords, values, 2, first_order=False, depth=3)

    adapted = learner.adapt(coords, values, training=True)
    assert set(adapted) == set(part.adapt_names)
    for n in part.adapt_names:
        assert adapted[n].shape == (3, *part.start(n).shape)
        torch.testing.assert_close(adapted[n].detach(), ref_adapted[n], atol=1e-9, rtol=1e-7)

    zero_grads(learner)
    stats = learner.meta_backward(coords, values)
    assert stats["loss"] == pytest.approx(ref_loss, rel=1e-9)
    assert stats["batch"] == 3
    got = learner_grads(part)
    assert_grads_close(got, ref_grads, atol=1e-9)
    # Every trainable tensor receives a non-trivial outer gradient (shared ones included).
    for k, g in got.items():
        assert g.abs().sum() > 0, k
    if adapt != "all":
        assert set(part.shared) == {"w0", "b0", "w1", "b1"} and set(part.init) == {"w2", "b2"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float32_matches_reference(strategy):
    learner = make_learner(meta_sgd=True, strategy=strategy, dtype=torch.float32)
    coords, values = make_data(dtype=torch.float32)
    ref_adapted, _, ref_grads = ref_maml(learner.partition, coords, values, 2, first_order=False, depth=3)
    adapted = learner.adapt(coords, values, training=True)
    for n, v in ref_adapted.items():
        torch.testing.assert_close(adapted[n].detach(), v, atol=1e-6, rtol=1e-5)
    zero_grads(learner)
    learner.meta_backward(coords, values)
    assert_grads_close(learner_grads(learner.partition), ref_grads, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("meta_sgd", [False, True])
@pytest.mark.parametrize("adapt", ["all", "w2,b2"])
def test_first_order_matches_reference_and_differs_from_second_order(strategy, meta_sgd, adapt):
    coords, values = make_data()
    fo = make_learner(adapt=adapt, meta_sgd=meta_sgd, strategy=strategy, first_order=True)
    _, ref_loss, ref_grads = ref_maml(fo.partition, coords, values, 2, first_order=True, depth=3)
    stats = fo.meta_backward(coords, values)
    assert stats["loss"] == pytest.approx(ref_loss, rel=1e-9)
    got_fo = learner_grads(fo.partition)
    assert_grads_close(got_fo, ref_grads, atol=1e-9)

    so = make_learner(adapt=adapt, meta_sgd=meta_sgd, strategy=strategy, first_order=False)
    so.meta_backward(coords, values)
    got_so = learner_grads(so.partition)
    diff = max(float((got_fo[k] - got_so[k]).abs().max()) for k in got_so if not k.startswith("lrs."))
    scale = max(float(got_so[k].abs().max()) for k in got_so)
    assert diff > 1e-3 * scale


def test_first_order_adapt_at_meta_test_has_no_graph():
    learner = make_learner(first_order=False)
    coords, values = make_data()
    adapted = learner.adapt(coords, values)  # training=False: no create_graph
    ref_adapted, _, _ = ref_maml(learner.partition, coords, values, 2, first_order=True, depth=3)
    for n, v in ref_adapted.items():
        torch.testing.assert_close(adapted[n].detach(), v, atol=1e-12, rtol=0)


def test_steps_argument_and_zero_steps():
    learner = make_learner()
    coords, values = make_data()
    a0 = learner.adapt(coords, values, steps=0)
    for n, v in a0.items():
        assert torch.equal(v, learner.partition.init[n].expand_as(v))
    ref3, _, _ = ref_maml(learner.partition, coords, values, 3, first_order=True, depth=3)
    a3 = learner.adapt(coords, values, steps=3)
    for n, v in ref3.items():
        torch.testing.assert_close(a3[n].detach(), v, atol=1e-12, rtol=0)


def test_unknown_strategy_rejected_and_auto_resolves():
    with pytest.raises(ValueError):
        make_learner(strategy="fast")
    learner = make_learner(strategy="auto")
    assert learner.resolve_strategy(torch.device("cpu")) in STRATEGIES


# --------------------------------------------------------------------------------- Meta-SGD
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_meta_sgd_rates_get_gradients_and_are_clipped(strategy):
    learner = make_learner(meta_sgd=True, strategy=strategy, steps=1)
    part = learner.partition
    for n in part.adapt_names:
        lr = part.lrs[n].detach()
        assert lr.shape == part.start(n).shape
        assert float(lr.min()) >= 0.005 and float(lr.max()) <= 0.1
    coords, values = make_data()
    learner.meta_backward(coords, values)
    for n in part.adapt_names:
        assert part.lrs[n].grad is not None and part.lrs[n].grad.abs().sum() > 0

    with torch.no_grad():
        part.lrs["w2"].view(-1)[0] = 5.0
        part.lrs["w2"].view(-1)[1] = -1.0
    clamped = part.lr("w2").detach()
    assert float(clamped.view(-1)[0]) == 1.0 and float(clamped.view(-1)[1]) == 0.0
    assert float(clamped.max()) <= 1.0 and float(clamped.min()) >= 0.0
    # The clamped rate is what the inner step uses: one step, delta = -clamp(lr) * grad.
    w = part.init["w2"].detach().clone().requires_grad_(True)
    params = {**{k: v.detach() for k, v in part.all_network_params().items()}, "w2": w}
    adapted = learner.adapt(coords, values, steps=1)
    delta = adapted["w2"].detach()[0] - part.init["w2"].detach()
    gi = torch.autograd.grad((ref_forward(params, coords, 3) - values[0]).pow(2).mean(), w)[0]
    torch.testing.assert_close(delta, -clamped.detach() * gi, atol=1e-12, rtol=1e-9)
    assert float(delta.view(-1)[1]) == 0.0  # rate -1 -> 0: entry frozen
    assert float(gi.view(-1)[1]) != 0.0
    # Outside the clip range the rate gets no gradient (clamp is flat there).
    for p in learner.parameters():
        p.grad = None
    learner.meta_backward(coords, values)
    assert float(part.lrs["w2"].grad.view(-1)[0]) == 0.0
    assert float(part.lrs["w2"].grad.view(-1)[1]) == 0.0


def test_fixed_rate_without_meta_sgd():
    learner = make_learner(meta_sgd=False)
    assert learner.partition.lr("w0") == pytest.approx(1e-2)
    assert len(learner.partition.lrs) == 0


# ------------------------------------------------------------------------------------- masks
def _set_random_masks(part, names, seed=3):
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for n in names:
        target = part.shared[n] if n in part.shared else part.init[n]
        m = (torch.rand(target.shape, generator=g) < 0.5).to(target.dtype)
        part.set_mask(n, m)
        masks[n] = m
    return masks


def _stored(part, n):
    return part.shared[n] if n in part.shared else part.init[n]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("adapt", ["all", "w2,b2"])
@pytest.mark.parametrize("meta_sgd", [False, True])
def test_masks_stay_exactly_zero(strategy, adapt, meta_sgd):
    learner = make_learner(adapt=adapt, meta_sgd=meta_sgd, strategy=strategy, dtype=torch.float32)
    part = learner.partition
    coords, values = make_data(dtype=torch.float32)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
    # Build up Adam momentum on every entry before any mask exists.
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        learner.meta_backward(coords, values)
        opt.step()
    masks = _set_random_masks(part, ["w0", "w1", "w2"])
    for n, m in masks.items():
        assert torch.all(_stored(part, n)[m == 0] == 0)
    moved_without_reapply = False
    for _ in range(4):
        opt.zero_grad(set_to_none=True)
        learner.meta_backward(coords, values)
        for n, m in masks.items():
            grad = _stored(part, n).grad
            assert torch.all(grad[m == 0] == 0), n
            assert grad[m == 1].abs().sum() > 0, n
        opt.step()
        # Momentum from before the masks moves masked entries; the re-application zeroes them.
        moved_without_reapply |= any(bool((_stored(part, n)[m == 0] != 0).any()) for n, m in masks.items())
        learner.after_outer_step()
        for n, m in masks.items():
            assert torch.all(_stored(part, n)[m == 0] == 0), n
    assert moved_without_reapply
    adapted = learner.adapt(coords, values, training=True)
    for n, m in masks.items():
        if n in adapted:
            assert torch.all(adapted[n][:, m == 0] == 0), n
            assert adapted[n][:, m == 1].abs().sum() > 0
    # The masked network is the network with those weights removed.
    mask_free = {k: v.detach() * masks[k] if k in masks else v.detach() for k, v in adapted.items()}
    pred = learner.predict(adapted, coords)
    part_masks = part.masks.as_dict()
    for k in list(part.masks.keys()):
        del part.masks._buffers[k]
    torch.testing.assert_close(pred, learner.predict(mask_free, coords))
    for k, v in part_masks.items():
        part.masks[k] = v


def test_set_mask_validates_shape_and_zeroes_storage():
    learner = make_learner()
    part = learner.partition
    with pytest.raises(ValueError):
        part.set_mask("w1", torch.ones(3, 3))
    mask = torch.zeros_like(part.init["w1"])
    mask[0] = 1
    part.set_mask("w1", mask)
    assert torch.all(part.init["w1"][1:] == 0) and part.init["w1"][0].abs().sum() > 0
    assert part.mask_dict() is not None and "w1" in part.mask_dict()
    assert "partition.masks.w1" in learner.state_dict()


# ------------------------------------------------------------------------------ meta-batches
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("per_signal_coords", [False, True])
def test_meta_batch_gradient_is_mean_of_single_signal_gradients(strategy, per_signal_coords):
    batch = 4
    coords, values = make_data(batch=batch, per_signal_coords=per_signal_coords)
    learner = make_learner(meta_sgd=True, strategy=strategy)
    full_stats = learner.meta_backward(coords, values)
    full = learner_grads(learner.partition)

    singles = []
    for i in range(batch):
        zero_grads(learner)
        c = coords[i:i + 1] if per_signal_coords else coords
        learner.meta_backward(c, values[i:i + 1])
        singles.append(learner_grads(learner.partition))
    mean = {k: torch.stack([s[k] for s in singles]).mean(0) for k in full}
    assert_grads_close(full, mean, atol=1e-10)

    # Two halves with global_batch accumulate the same gradient as one call.
    zero_grads(learner)
    half = batch // 2
    s1 = learner.meta_backward(coords[:half] if per_signal_coords else coords, values[:half],
                               global_batch=batch)
    s2 = learner.meta_backward(coords[half:] if per_signal_coords else coords, values[half:],
                               global_batch=batch)
    assert_grads_close(learner_grads(learner.partition), full, atol=1e-10)
    assert (s1["loss"] + s2["loss"]) / 2 == pytest.approx(full_stats["loss"], rel=1e-9)
    assert s1["batch"] == half


def test_strategies_agree_with_each_other():
    coords, values = make_data(batch=3)
    grads = {}
    for strategy in STRATEGIES:
        learner = make_learner(meta_sgd=True, adapt="w1,b1,w2,b2", strategy=strategy)
        learner.meta_backward(coords, values)
        grads[strategy] = learner_grads(learner.partition)
    assert_grads_close(grads["batched"], grads["loop"], atol=1e-10)
    assert_grads_close(grads["vmap"], grads["loop"], atol=1e-10)


def test_psnr_in_stats_uses_clamped_output():
    learner = make_learner(steps=0)
    coords, values = make_data()
    with torch.no_grad():
        learner.partition.init["b2"].fill_(3.0)  # predictions far above 1
    stats = learner.meta_backward(coords, values)
    pred = learner.predict(learner.start_params(3), coords).detach()
    mse = (pred.clamp(0, 1) - values).pow(2).mean(dim=(1, 2))
    assert stats["psnr"] == pytest.approx(float((-10 * torch.log10(mse)).mean()), rel=1e-9)
    assert stats["loss"] == pytest.approx(float((pred - values).pow(2).mean(dim=(1, 2)).mean()), rel=1e-9)


# ---------------------------------------------------------------------- modulation-only (Functa)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("latent", [False, True])
def test_modulation_only_adaptation(strategy, latent):
    width, depth = 8, 3
    field = ModulatedSiren(2, 3, width=width, depth=depth, w0=W0, latent_dim=5 if latent else None)
    learner = make_learner(adapt="signal", meta_sgd=latent, strategy=strategy, field=field)
    part = learner.partition
    expected = ["latent"] if latent else ["mod0", "mod1"]
    assert part.adapt_names == expected and len(part.init) == 0
    assert set(part.shared) == set(field.init_params())
    coords, values = make_data()
    ref_adapted, ref_loss, ref_grads = ref_maml(part, coords, values, 2, first_order=False, depth=depth,
                                                width=width)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    for it in range(2):
        opt.zero_grad(set_to_none=True)
        stats = learner.meta_backward(coords, values)
        if it == 0:
            assert stats["loss"] == pytest.approx(ref_loss, rel=1e-9)
            got = learner_grads(part)
            assert_grads_close(got, ref_grads, atol=1e-9)
            for k in part.shared:  # every shared weight (and the latent map) gets an outer gradient
                assert got[f"shared.{k}"].abs().sum() > 0, k
        opt.step()
        learner.after_outer_step()
        # Per-signal parameters restart from zero on every call: never trained, never carried over.
        for n in expected:
            assert torch.all(part.fixed_init[n] == 0)
            assert not part.fixed_init[n].requires_grad
    zero = learner.adapt(coords, values, steps=0)
    for n in expected:
        assert torch.all(zero[n] == 0) and zero[n].shape[0] == 3
    a1 = learner.adapt(coords, values)
    a2 = learner.adapt(coords, values)
    for n in expected:
        assert torch.equal(a1[n], a2[n]) and a1[n].abs().sum() > 0


def test_resolve_adapt_errors():
    with pytest.raises(ValueError):
        make_learner(adapt="signal")  # plain Siren has no per-signal parameters
    with pytest.raises(ValueError):
        make_learner(adapt="w9")


def test_adapt_works_under_no_grad():
    learner = make_learner(meta_sgd=True)
    coords, values = make_data()
    want = learner.adapt(coords, values)
    with torch.no_grad():
        got = learner.adapt(coords, values)
    for n in want:
        torch.testing.assert_close(got[n], want[n].detach(), atol=0, rtol=0)

"""Global pruning masks (magnitude / random) and fixed masks on a meta-learner: exact counts, global
ranking across layers, and masked entries staying exactly zero through inner loop, outer loop and
checkpoints."""

from __future__ import annotations

import pytest
import torch

from metainr.fields import Siren
from metainr.meta import MetaLearner, ParamPartition
from metainr.runs.checkpoint import load_checkpoint, save_checkpoint
from metainr.signals.grid import coordinate_grid
from metainr.sparsity import prune_learner, pruning_masks


def layered_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Three matrices of very different scales (so per-layer and global pruning differ)."""
    g = torch.Generator().manual_seed(seed)
    return {"w0": torch.randn(6, 2, generator=g) * 0.01,
            "w1": torch.randn(6, 6, generator=g),
            "w2": torch.randn(3, 6, generator=g) * 100.0}


def flat(d: dict[str, torch.Tensor], batch: bool = False) -> torch.Tensor:
    if batch:
        return torch.cat([t.reshape(t.shape[0], -1) for t in d.values()], dim=1)
    return torch.cat([t.reshape(-1) for t in d.values()])


def expected_remaining(total: int, rounds: int, fraction: float = 0.2) -> list[int]:
    out, rem = [total], total
    for _ in range(rounds):
        rem -= round(rem * fraction)
        out.append(rem)
    return out


# ----------------------------------------------------------------------------------- pruning_masks
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_magnitude_removes_globally_smallest(fraction):
    w = layered_weights()
    total = sum(t.numel() for t in w.values())
    masks = pruning_masks(w, fraction)
    assert set(masks) == set(w)
    for n in w:
        assert masks[n].shape == w[n].shape
        assert set(masks[n].unique().tolist()) <= {0.0, 1.0}
    m = flat(masks)
    n_removed = round(fraction * total)
    assert int((m == 0).sum()) == n_removed
    # exactly the n_removed smallest magnitudes over all layers together
    order = flat(w).abs().argsort()
    assert torch.all(m[order[:n_removed]] == 0)
    assert torch.all(m[order[n_removed:]] == 1)


def test_global_not_per_layer():
    w = layered_weights()
    masks = pruning_masks(w, 0.3)  # 30% of 66 = 20 > the 12 entries of the tiny-scale layer
    assert int(masks["w0"].sum()) == 0          # the small-scale layer goes first, entirely
    assert int(masks["w2"].sum()) == masks["w2"].numel()  # the large-scale layer is untouched
    assert int((masks["w1"] == 0).sum()) == 20 - 12


def test_already_masked_entries_stay_masked():
    w = layered_weights(1)
    g = torch.Generator().manual_seed(3)
    old = {n: (torch.rand(t.shape, generator=g) > 0.3).float() for n, t in w.items()}
    # make the masked entries the *largest* ones, so an unmasked ranking would keep them
    w = {n: torch.where(old[n] == 0, t.sign() * 1e6 + t, t) for n, t in w.items()}
    remaining = int(flat(old).sum())
    new = pruning_masks(w, 0.25, masks=old)
    for n in w:
        assert torch.all(new[n] <= old[n])
    assert int(flat(new).sum()) == remaining - round(0.25 * remaining)
    # the removed ones are the smallest among the remaining
    fw, fo, fn = flat(w).abs(), flat(old), flat(new)
    removed = (fo == 1) & (fn == 0)
    kept = fn == 1
    assert fw[removed].max() < fw[kept].min()


@pytest.mark.parametrize("keep", [1, 10, 50, 66, 100])
def test_keep_gives_exactly_that_many(keep):
    w = layered_weights(2)
    masks = pruning_masks(w, keep=keep)
    assert int(flat(masks).sum()) == min(keep, 66)
    order = flat(w).abs().argsort(descending=True)
    assert torch.all(flat(masks)[order[:min(keep, 66)]] == 1)


def test_keep_with_existing_masks():
    w = layered_weights(2)
    first = pruning_masks(w, 0.5)
    second = pruning_masks(w, masks=first, keep=20)
    assert int(flat(second).sum()) == 20
    assert torch.all(flat(second) <= flat(first))


def test_batch_mode_ranks_per_signal():
    g = torch.Generator().manual_seed(5)
    scales = {"w0": 0.01, "w1": 1.0, "w2": 100.0}
    shapes = {"w0": (6, 2), "w1": (6, 6), "w2": (3, 6)}
    batched = {n: torch.randn(4, *shapes[n], generator=g) * scales[n] for n in shapes}
    batched["w1"][2] *= 1e4   # signal 2 ranks the layers differently from the others
    prior = {n: (torch.rand(4, *shapes[n], generator=g) > 0.2).float() for n in shapes}
    for masks_in in (None, prior):
        out = pruning_masks(batched, 0.3, masks=masks_in, batch=True)
        for n in shapes:
            assert out[n].shape == batched[n].shape
        for b in range(4):
            single = pruning_masks({n: t[b] for n, t in batched.items()}, 0.3,
                                   masks=None if masks_in is None else {n: t[b] for n, t in masks_in.items()})
            for n in shapes:
                assert torch.equal(out[n][b], single[n])
        counts = flat(out, batch=True).sum(1)
        if masks_in is None:
            assert torch.all(counts == 66 - round(0.3 * 66))
    kept = pruning_masks(batched, batch=True, keep=30)
    assert torch.all(flat(kept, batch=True).sum(1) == 30)
    # per-signal ranking: the signals do not all get the same mask
    assert not torch.equal(kept["w1"][2], kept["w1"][0])


def test_random_kind_count_and_reproducible():
    w = layered_weights(3)
    a = pruning_masks(w, 0.2, kind="random", generator=torch.Generator().manual_seed(7))
    b = pruning_masks(w, 0.2, kind="random", generator=torch.Generator().manual_seed(7))
    c = pruning_masks(w, 0.2, kind="random", generator=torch.Generator().manual_seed(8))
    mag = pruning_masks(w, 0.2)
    assert int((flat(a) == 0).sum()) == round(0.2 * 66)
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))
    assert not torch.equal(flat(a), flat(mag))  # not a magnitude ranking
    # random pruning also respects existing masks and its count
    again = pruning_masks(w, 0.2, masks=a, kind="random", generator=torch.Generator().manual_seed(9))
    assert torch.all(flat(again) <= flat(a))
    assert int(flat(again).sum()) == 53 - round(0.2 * 53)


def test_unknown_kind_and_bad_fraction():
    w = layered_weights()
    with pytest.raises(ValueError):
        pruning_masks(w, 0.2, kind="nonsense")
    with pytest.raises(ValueError):
        pruning_masks(w, 1.5)


@pytest.mark.parametrize("kind", ["magnitude", "random"])
def test_iterated_rounds_density(kind):
    g = torch.Generator().manual_seed(11)
    w = {"w0": torch.randn(32, 2, generator=g), "w1": torch.randn(32, 32, generator=g),
         "w2": torch.randn(3, 32, generator=g)}
    total = sum(t.numel() for t in w.values())
    expected = expected_remaining(total, 8)
    masks = None
    gen = torch.Generator().manual_seed(0)
    for r in range(1, 9):
        masks = pruning_masks(w, 0.2, masks=masks, kind=kind, generator=gen)
        kept = int(flat(masks).sum())
        assert kept == expected[r]
        assert abs(kept / total - 0.8 ** r) < 2 * r / total


# ------------------------------------------------------------------------------ prune_learner
def make_learner(width: int = 8, depth: int = 3, meta_sgd: bool = False) -> MetaLearner:
    field = Siren(2, 3, width=width, depth=depth, w0=30.0)
    part = ParamPartition(field, adapt="all", meta_sgd=meta_sgd, inner_lr=1e-2, seed=0)
    return MetaLearner(field, part, inner_steps=2, strategy="loop")


def make_data(batch: int = 3, side: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return coordinate_grid((side, side)), torch.rand(batch, side * side, 3, generator=g)


def outer_step(learner, opt, coords, values):
    opt.zero_grad(set_to_none=True)
    learner.meta_backward(coords, values)
    torch.nn.utils.clip_grad_norm_([p for p in learner.parameters() if p.requires_grad], 1.0)
    opt.step()
    learner.after_outer_step()


def weight_params(learner):
    stored = learner.partition.all_network_params()
    return {n: stored[n] for n in learner.field.prunable()}


def test_prune_learner_masks_weights_not_biases_and_clears_adam():
    learner = make_learner()
    coords, values = make_data()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    outer_step(learner, opt, coords, values)
    before = {n: p.detach().clone() for n, p in learner.partition.all_network_params().items()}
    moments = {n: {k: opt.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")}
               for n, p in learner.partition.all_network_params().items()}
    stats = prune_learner(learner, 0.2, optimizer=opt)

    masks = learner.partition.mask_dict()
    assert set(masks) == {"w0", "w1", "w2"}          # biases never get masks
    total = sum(m.numel() for m in masks.values())
    assert stats["total_weights"] == total
    assert stats["kept_weights"] == total - round(0.2 * total) == int(sum(m.sum() for m in masks.values()))
    assert stats["density"] == pytest.approx(stats["kept_weights"] / total)
    stored = learner.partition.all_network_params()
    for n, p in stored.items():
        if n.startswith("b"):
            assert torch.equal(p.detach(), before[n])
            for k in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(opt.state[p][k], moments[n][k])
            continue
        m = masks[n]
        assert torch.all(p.detach()[m == 0] == 0)
        assert torch.equal(p.detach()[m == 1], before[n][m == 1])
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.all(opt.state[p][k][m == 0] == 0)
            assert torch.equal(opt.state[p][k][m == 1], moments[n][k][m == 1])
    # the smallest-magnitude weights over all layers were the ones removed
    all_before = torch.cat([before[n].reshape(-1) for n in masks]).abs()
    all_masks = torch.cat([masks[n].reshape(-1) for n in masks])
    assert all_before[all_masks == 0].max() <= all_before[all_masks == 1].min()


@pytest.mark.parametrize("meta_sgd", [False, True])
def test_masks_stay_zero_through_inner_and_outer_loops(meta_sgd):
    learner = make_learner(meta_sgd=meta_sgd)
    coords, values = make_data()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)  # large steps: any leak would show
    outer_step(learner, opt, coords, values)
    prune_learner(learner, 0.5, optimizer=opt)
    masks = {n: m.clone() for n, m in learner.partition.mask_dict().items()}

    adapted = learner.adapt(coords, values, steps=3)
    for n, m in masks.items():
        assert torch.all(adapted[n][:, m == 0] == 0)
        assert adapted[n][:, m == 1].abs().sum() > 0
    adapted = learner.adapt(coords, values, training=True)
    for n, m in masks.items():
        assert torch.all(adapted[n].detach()[:, m == 0] == 0)

    for _ in range(4):
        opt.zero_grad(set_to_none=True)
        learner.meta_backward(coords, values)
        for n, p in weight_params(learner).items():
            assert torch.all(p.grad[masks[n] == 0] == 0)  # masked entries receive no gradient
        opt.step()
        learner.after_outer_step()
        for n, p in weight_params(learner).items():
            assert torch.all(p.detach()[masks[n] == 0] == 0)
            assert torch.equal(learner.partition.masks[n], masks[n])
    prune_learner(learner, 0.5, optimizer=opt)  # a second round only removes more
    for n, m in learner.partition.mask_dict().items():
        assert torch.all(m <= masks[n])


def test_masks_survive_checkpoint_into_fresh_learner(tmp_path):
    learner = make_learner()
    coords, values = make_data()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    outer_step(learner, opt, coords, values)
    prune_learner(learner, 0.2, optimizer=opt)
    outer_step(learner, opt, coords, values)
    prune_learner(learner, 0.2, optimizer=opt)
    path = save_checkpoint(tmp_path, 2, learner, opt, {"test": 1}, extra={"prunings": 2})

    fresh = make_learner()
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    assert fresh.partition.mask_dict() is None
    meta = load_checkpoint(path, fresh, fresh_opt, {"test": 1}, restore_rng=False)
    assert meta["extra"]["prunings"] == 2
    assert set(fresh.partition.mask_dict()) == set(learner.partition.mask_dict())
    for n, m in learner.partition.mask_dict().items():
        assert torch.equal(fresh.partition.masks[n], m)
    for (n, p), q in zip(learner.named_parameters(), fresh.parameters()):
        assert torch.equal(p, q), n
    # training on in both gives identical, still exactly sparse results
    outer_step(learner, opt, coords, values)
    outer_step(fresh, fresh_opt, coords, values)
    for (n, p), q in zip(learner.named_parameters(), fresh.parameters()):
        assert torch.equal(p, q), n
    for n, p in weight_params(fresh).items():
        assert torch.all(p.detach()[fresh.partition.masks[n] == 0] == 0)

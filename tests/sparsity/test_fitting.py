"""Per-signal pruning during fitting (MAML + One-Shot / MAML + IMP): schedules, exact target counts
per signal, masked entries staying zero, PSNR bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch

from metainr.fields import ModulatedSiren, Siren
from metainr.meta import MetaLearner, ParamPartition
from metainr.meta.fit import evaluate_psnr
from metainr.signals.grid import coordinate_grid
from metainr.sparsity.fitting import fit_with_pruning, prune_schedule, pruning_hook

PRUNABLE = ("w0", "w1", "w2")


def make_learner(width: int = 8, depth: int = 3) -> MetaLearner:
    field = Siren(2, 3, width=width, depth=depth, w0=30.0)
    return MetaLearner(field, ParamPartition(field, adapt="all", inner_lr=1e-2, seed=0), strategy="loop")


def make_data(batch: int = 3, side: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return coordinate_grid((side, side)), torch.rand(batch, side * side, 3, generator=g)


def nonzero_per_signal(params) -> torch.Tensor:
    return sum(torch.count_nonzero(params[n].reshape(params[n].shape[0], -1), dim=1) for n in PRUNABLE)


def total_weights(learner) -> int:
    return sum(learner.partition.start(n).numel() for n in PRUNABLE)


# ------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("steps", [1, 2, 7, 100, 101])
def test_oneshot_schedule(steps):
    assert prune_schedule(steps, 0.1, "oneshot") == [steps // 2]


@pytest.mark.parametrize("density", [0.9, 0.5, 0.3, 0.1, 0.05, 0.01])
@pytest.mark.parametrize("steps", [100, 1000])
def test_imp_schedule(density, steps):
    s = prune_schedule(steps, density, "imp")
    assert len(s) == math.ceil(math.log(density) / math.log(0.8))
    assert all(a < b for a, b in zip(s, s[1:]))
    assert s[0] >= 0 and s[-1] < steps // 2
    assert s[-1] == steps // 2 - 1   # the last (target) pruning ends the first half


@pytest.mark.parametrize("rounds", [1, 2, 3, 4, 8, 10])
def test_imp_schedule_rounds_for_powers_of_keep_fraction(rounds):
    """Target densities 0.8^r written as decimals (0.64, 0.512, ...) need exactly r prunings."""
    for density in (0.8 ** rounds, float(f"{0.8 ** rounds:.10g}")):
        assert len(prune_schedule(1000, density, "imp")) == rounds


def test_unknown_mode_and_dense_hook_requirements():
    with pytest.raises(ValueError):
        prune_schedule(10, 0.5, "gradual")
    field = ModulatedSiren(2, 3, width=8, depth=3)
    learner = MetaLearner(field, ParamPartition(field, adapt="signal", seed=0), strategy="loop")
    with pytest.raises(ValueError):
        pruning_hook(learner, 10, 0.5, "oneshot")


# ------------------------------------------------------------------------------------ fitting
@pytest.mark.parametrize("optimizer,lr", [("adam", 1e-3), ("sgd", None)])
@pytest.mark.parametrize("mode", ["oneshot", "imp"])
@pytest.mark.parametrize("density", [0.3, 0.64])
def test_fit_reaches_exact_target_per_signal(optimizer, lr, mode, density):
    learner = make_learner()
    coords, values = make_data()
    steps = 24
    total = total_weights(learner)
    target = round(density * total)
    schedule = prune_schedule(steps, density, mode)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def on_record(step, params, c, v):
        snapshots[step] = {n: params[n].clone() for n in PRUNABLE}

    result = fit_with_pruning(learner, coords, values, steps, density, mode, optimizer=optimizer, lr=lr,
                              on_record=on_record)
    batch = values.shape[0]
    # exactly the target count of non-zero weights per signal in the returned params and masks
    assert torch.all(nonzero_per_signal(result.params) == target)
    assert result.masks is not None and set(result.masks) == set(PRUNABLE)
    kept = sum(result.masks[n].reshape(batch, -1).sum(1) for n in PRUNABLE)
    assert torch.all(kept == target)
    for n in PRUNABLE:
        assert torch.all(result.params[n][result.masks[n] == 0] == 0)
    # biases are dense and were fitted
    for n in ("b0", "b1", "b2"):
        assert torch.count_nonzero(result.params[n]) == result.params[n].numel()
    # the learner's own init is untouched
    assert learner.partition.mask_dict() is None
    assert torch.count_nonzero(learner.partition.init["w1"]) == learner.partition.init["w1"].numel()

    # count per signal at every step: dense up to the first pruning, then as the schedule says
    expected, rem = [], total
    for i in range(len(schedule)):
        rem = target if i == len(schedule) - 1 else max(target, rem - round(0.2 * rem))
        expected.append(rem)
    for step in range(steps + 1):
        done = [s for s in schedule if s < step]
        want = total if not done else expected[len(done) - 1]
        assert torch.all(nonzero_per_signal(snapshots[step]) == want), step
    # once pruned, an entry stays exactly zero until the end
    final_zero = {n: result.masks[n] == 0 for n in PRUNABLE}
    for step in range(schedule[-1] + 1, steps + 1):
        for n in PRUNABLE:
            assert torch.all(snapshots[step][n][final_zero[n]] == 0)
    for a, b in zip(range(schedule[0] + 1, steps), range(schedule[0] + 2, steps + 1)):
        for n in PRUNABLE:
            assert torch.all(snapshots[b][n][snapshots[a][n] == 0] == 0)
    # the signals were ranked separately
    assert not all(torch.equal(result.masks[n][0], result.masks[n][1]) for n in PRUNABLE)


@pytest.mark.parametrize("width,depth,density", [(12, 2, 0.26), (4, 3, 0.32), (8, 3, 0.64)])
def test_imp_never_undershoots_target(width, depth, density):
    """20% roundings could pass the target before the last pruning (60 weights at density 0.26:
    60 -> 48 -> 38 -> 30 -> 24 -> 19 -> 15 < 16); the count must still end exactly on target."""
    learner = make_learner(width=width, depth=depth)
    prunable = learner.field.prunable()
    total = sum(learner.partition.start(n).numel() for n in prunable)
    target = round(density * total)
    coords, values = make_data(batch=2)
    counts = []

    def on_record(step, params, c, v):
        counts.append(sum(torch.count_nonzero(params[n].reshape(2, -1), dim=1) for n in prunable))

    steps = 40
    result = fit_with_pruning(learner, coords, values, steps, density, "imp", optimizer="adam", lr=1e-3,
                              on_record=on_record)
    counts = torch.stack(counts)
    assert torch.all(counts >= target)
    assert torch.all(counts[1:] <= counts[:-1])
    assert torch.all(counts[-1] == target)
    assert torch.all(sum(result.masks[n].reshape(2, -1).sum(1) for n in prunable) == target)


@pytest.mark.parametrize("mode", ["oneshot", "imp"])
def test_psnr_recording_with_pruning(mode):
    learner = make_learner()
    coords, values = make_data(batch=2)
    steps = 20
    record = [0, 5, 10, 15, 20]
    result = fit_with_pruning(learner, coords, values, steps, 0.3, mode, optimizer="adam", lr=1e-3,
                              record_steps=record)
    assert result.record_steps == record
    assert result.psnr.shape == (len(record), 2)
    assert torch.isfinite(result.psnr).all()
    # the final PSNR is that of the returned (exactly sparse) params, with or without the masks
    final = evaluate_psnr(learner, result.params, coords, values)
    assert torch.allclose(result.psnr[-1], final, atol=1e-4)
    with_masks = evaluate_psnr(learner, result.params, coords, values, result.masks)
    assert torch.allclose(with_masks, final, atol=1e-4)
    # fitting still improves over the init after pruning
    assert torch.all(result.psnr[-1] > result.psnr[0])


def test_chunked_fit_equals_whole_batch():
    learner = make_learner()
    coords, values = make_data(batch=3)
    whole = fit_with_pruning(learner, coords, values, 12, 0.3, "imp", optimizer="adam", lr=1e-3)
    chunked = fit_with_pruning(learner, coords, values, 12, 0.3, "imp", optimizer="adam", lr=1e-3,
                               batch_size=2)
    for n in PRUNABLE:
        assert torch.equal(whole.masks[n], chunked.masks[n])
        assert torch.allclose(whole.params[n], chunked.params[n], atol=1e-6)

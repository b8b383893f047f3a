"""Parameter counting (non-zero weights + biases) and the Dense-Narrow width search."""

from __future__ import annotations

import pytest
import torch

from metainr.fields import ModulatedSiren, Siren
from metainr.meta import MetaLearner, ParamPartition
from metainr.methods import FieldConfig, MethodConfig, apply_preset, build_learner
from metainr.sparsity import count_params, prune_learner
from metainr.sparsity.narrow import narrow_width, siren_param_count


def learner_for(field, adapt="all", meta_sgd=False) -> MetaLearner:
    return MetaLearner(field, ParamPartition(field, adapt=adapt, meta_sgd=meta_sgd, seed=0), strategy="loop")


def hand_count(in_dim, out_dim, width, depth):
    weights = in_dim * width + (depth - 2) * width * width + width * out_dim
    biases = (depth - 1) * width + out_dim
    return weights, biases


def test_count_params_tiny_siren_with_known_mask():
    learner = learner_for(Siren(2, 3, width=4, depth=3))
    # weights 4*2 + 4*4 + 3*4 = 36, biases 4 + 4 + 3 = 11
    dense = count_params(learner)
    assert dense == {"weights_nonzero": 36, "weights_dense": 36, "other": 11, "total": 47}
    m0 = torch.ones(4, 2)
    m0[0, 0] = m0[1, 1] = m0[3, 0] = 0       # 3 masked
    m2 = torch.ones(3, 4)
    m2[0] = 0                                 # 4 masked
    m2[2, 3] = 0                              # 1 more
    learner.partition.set_mask("w0", m0)
    learner.partition.set_mask("w2", m2)
    counts = count_params(learner)
    assert counts == {"weights_nonzero": 36 - 8, "weights_dense": 36, "other": 11, "total": 28 + 11}
    # biases are counted even when zero; a stored zero weight without a mask is not counted
    with torch.no_grad():
        learner.partition.init["b1"].zero_()
        learner.partition.init["w1"][0, 0] = 0.0
    counts = count_params(learner)
    assert counts["other"] == 11
    assert counts["weights_nonzero"] == 27


def test_count_params_after_pruning_and_learning_rates_not_counted():
    plain = learner_for(Siren(2, 3, width=8, depth=4))
    msgd = learner_for(Siren(2, 3, width=8, depth=4), meta_sgd=True)
    assert count_params(plain) == count_params(msgd)   # Meta-SGD rates are not network parameters
    stats = prune_learner(msgd, 0.2)
    counts = count_params(msgd)
    assert counts["weights_nonzero"] == stats["kept_weights"]
    assert counts["weights_dense"] == stats["total_weights"]
    assert counts["total"] == stats["kept_weights"] + counts["other"]


def test_count_params_modulated_counts_shared_map_not_latent():
    field = ModulatedSiren(2, 3, width=8, depth=3, latent_dim=5)
    counts = count_params(learner_for(field, adapt="signal", meta_sgd=True))
    weights, biases = hand_count(2, 3, 8, 3)
    mods = 8 * 2
    assert counts["weights_dense"] == counts["weights_nonzero"] == weights
    assert counts["other"] == biases + mods * 5 + mods   # map_w, map_b; the latent is per signal


@pytest.mark.parametrize("in_dim,out_dim,width,depth", [(2, 3, 1, 2), (2, 3, 16, 3), (2, 1, 32, 5),
                                                        (1, 1, 7, 4), (3, 4, 10, 6)])
def test_siren_param_count_matches_hand_formula_and_dense_learner(in_dim, out_dim, width, depth):
    weights, biases = hand_count(in_dim, out_dim, width, depth)
    assert siren_param_count(in_dim, out_dim, width, depth) == weights + biases
    fcfg, mcfg = apply_preset("maml", FieldConfig(width=width, depth=depth), MethodConfig())
    counts = count_params(build_learner(fcfg, mcfg, in_dim, out_dim))
    assert counts["total"] == weights + biases
    assert counts["weights_nonzero"] == counts["weights_dense"] == weights
    assert counts["other"] == biases


def test_siren_param_count_rejects_depth_below_two():
    with pytest.raises(ValueError):
        siren_param_count(2, 3, 8, 1)


@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("target", [100, 1_000, 8_704, 17_708, 50_000, 263_427])
def test_narrow_width_is_widest_within_target(depth, target):
    if siren_param_count(2, 3, 1, depth) > target:
        pytest.skip("impossible")
    w = narrow_width(target, 2, 3, depth)
    assert w >= 1
    assert siren_param_count(2, 3, w, depth) <= target
    assert siren_param_count(2, 3, w + 1, depth) > target


@pytest.mark.parametrize("depth", [3, 5])
def test_narrow_width_exact_counts(depth):
    for w in (1, 2, 3, 17, 64, 100):
        n = siren_param_count(2, 3, w, depth)
        assert narrow_width(n, 2, 3, depth) == w
        if w > 1:
            assert narrow_width(n - 1, 2, 3, depth) == w - 1


def test_narrow_width_matches_sparse_count():
    """The Dense-Narrow baseline for a pruned net: width whose count is <= the sparse #params."""
    learner = learner_for(Siren(2, 3, width=32, depth=5))
    for _ in range(5):
        prune_learner(learner, 0.2)
    target = count_params(learner)["total"]
    w = narrow_width(target, 2, 3, 5)
    assert w < 32
    assert siren_param_count(2, 3, w, 5) <= target < siren_param_count(2, 3, w + 1, 5)


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_narrow_width_impossible_target_raises(depth):
    smallest = siren_param_count(2, 3, 1, depth)
    for target in (0, smallest - 1):
        with pytest.raises(ValueError):
            narrow_width(target, 2, 3, depth)
    assert narrow_width(smallest, 2, 3, depth) == 1

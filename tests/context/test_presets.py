"""The gradncp and random-context presets: the spec's defaults, and that meta-training learns."""

from __future__ import annotations

import pytest
import torch

from metainr.context import BootstrapCorrection, GradNCPSelector, RandomSelector
from metainr.meta import per_signal_mse
from metainr.methods import apply_preset, build_learner, build_parts

TINY = {"width": 16, "depth": 3}


def test_gradncp_preset_defaults_follow_the_spec():
    fcfg, mcfg = apply_preset("gradncp", field_overrides=TINY)
    assert fcfg.output_offset == 0.5
    assert mcfg.inner_steps == 16 and mcfg.adapt == "all" and not mcfg.first_order
    assert mcfg.options["context"] == {"kind": "gradncp", "gamma": 0.25}
    assert mcfg.options["bootstrap"] == {"steps": 5, "lr": 5e-2, "weight": 100.0}

    learner = build_learner(fcfg, mcfg, in_dim=2, out_dim=3)
    assert learner.inner_steps == 16
    assert learner.field.output_offset == 0.5
    assert isinstance(learner.context, GradNCPSelector) and learner.context.gamma == 0.25
    terms = list(learner.outer_terms)
    assert len(terms) == 1 and isinstance(terms[0], BootstrapCorrection)
    assert (terms[0].steps, terms[0].lr, terms[0].weight) == (5, 5e-2, 100.0)
    assert not learner.shapers


def test_part_defaults_match_the_preset():
    assert GradNCPSelector().gamma == 0.25
    boot = BootstrapCorrection()
    assert (boot.steps, boot.lr, boot.weight) == (5, 5e-2, 100.0)


def test_random_context_preset():
    fcfg, mcfg = apply_preset("random-context", field_overrides=TINY)
    learner = build_learner(fcfg, mcfg, in_dim=2, out_dim=1)
    assert learner.inner_steps == 16 and learner.field.output_offset == 0.5
    assert isinstance(learner.context, RandomSelector) and learner.context.gamma == 0.25
    assert not list(learner.outer_terms)


def test_options_can_be_overridden_and_bad_options_are_refused():
    from metainr.errors import ConfigError
    from metainr.methods import MethodConfig

    parts = build_parts(MethodConfig(options={"context": {"kind": "gradncp", "gamma": 0.5}}))
    assert parts["context"].gamma == 0.5 and parts["outer_terms"] == []
    with pytest.raises(ConfigError):
        build_parts(MethodConfig(options={"context": {"kind": "gradncp", "gamma": 2.0}}))
    with pytest.raises(ConfigError):
        build_parts(MethodConfig(options={"bootstrap": {"steps": 5, "bogus": 1}}))


def test_gradncp_meta_training_decreases_outer_mse():
    torch.manual_seed(0)
    fcfg, mcfg = apply_preset("gradncp", field_overrides={"width": 16, "depth": 3, "w0": 10.0})
    learner = build_learner(fcfg, mcfg, in_dim=2, out_dim=1, strategy="batched")
    side = 6
    lin = torch.linspace(-1, 1, side)
    coords = torch.stack(torch.meshgrid(lin, lin, indexing="ij"), dim=-1).reshape(-1, 2)
    # smooth training signals in [0, 1]
    phase = torch.rand(4, 1, 1, generator=torch.Generator().manual_seed(1)) * 3
    values = 0.5 + 0.4 * torch.sin(2 * coords[:, :1] + coords[:, 1:] + phase)

    def outer_mse() -> float:
        adapted = learner.adapt(coords, values)
        with torch.no_grad():
            return float(per_signal_mse(learner.predict(adapted, coords), values).mean())

    before = outer_mse()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    for _ in range(15):
        opt.zero_grad()
        stats = learner.meta_backward(coords, values)
        opt.step()
        learner.after_outer_step()
        assert torch.isfinite(torch.tensor(stats["loss"]))
    after = outer_mse()
    assert after < 0.8 * before, (before, after)

"""Behaviour of the SIREN fields and the coordinate grid they are evaluated on."""

from __future__ import annotations

import math

import pytest
import torch

from metainr.fields import ModulatedSiren, Siren, build_field
from metainr.signals.grid import GridConverter, coordinate_grid


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_forward(params, coords, w0, w0_first, offset, depth, mods=None, masks=None):
    """Plain per-layer loop over unbatched params: h = sin(w0 (x W^T + b [+ m])), linear last layer."""
    h = coords
    for i in range(depth):
        w, b = params[f"w{i}"], params[f"b{i}"]
        if masks is not None and f"w{i}" in masks:
            w = w * masks[f"w{i}"]
        pre = h @ w.T + b
        if i == depth - 1:
            return pre + offset
        if mods is not None:
            pre = pre + mods[i]
        h = torch.sin((w0_first if i == 0 else w0) * pre)
    raise AssertionError


# ------------------------------------------------------------------------------------------ init
def test_init_bounds_and_uniformity():
    field = Siren(3, 2, width=256, depth=4, w0=30.0)
    params = field.init_params(_gen(1))
    assert set(params) == {f"{k}{i}" for i in range(4) for k in "wb"}
    for i, (fan_out, fan_in) in enumerate(field.layer_dims()):
        w, b = params[f"w{i}"], params[f"b{i}"]
        assert w.shape == (fan_out, fan_in) and b.shape == (fan_out,)
        bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / 30.0
        for t in (w, b):
            assert t.abs().max() <= bound
        # Uniform: extremes near the bound, mean ~0, std ~ bound/sqrt(3).
        assert w.abs().max() > 0.97 * bound
        assert abs(float(w.mean())) < 0.1 * bound
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    # The large hidden weight matrix is flat over its range (histogram of 10 bins).
    w1 = params["w1"]
    bound = math.sqrt(6.0 / 256) / 30.0
    hist = torch.histc(w1, bins=10, min=-bound, max=bound)
    expected = w1.numel() / 10
    assert float((hist - expected).abs().max()) < 0.1 * expected


def test_init_is_seeded_and_first_layer_bound_uses_w0_independent_rule():
    field = Siren(2, 3, width=32, depth=3, w0=200.0, w0_first=30.0)
    a, b = field.init_params(_gen(5)), field.init_params(_gen(5))
    for k in a:
        assert torch.equal(a[k], b[k])
    # The first-layer bound is 1/fan_in regardless of w0; the others scale with 1/w0 (hidden w0).
    assert a["w0"].abs().max() <= 1.0 / 2
    assert a["w1"].abs().max() <= math.sqrt(6.0 / 32) / 200.0


def test_depth_must_be_at_least_two():
    with pytest.raises(ValueError):
        Siren(2, 3, width=8, depth=1)


def test_config_rebuilds_the_same_field():
    for field in (Siren(2, 3, width=8, depth=3, w0=20.0, w0_first=10.0, output_offset=0.5),
                  ModulatedSiren(2, 1, width=8, depth=4, latent_dim=5)):
        rebuilt = build_field(field.config())
        assert type(rebuilt) is type(field)
        assert rebuilt.config() == field.config()


# --------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_forward_matches_reference_loop(offset):
    field = Siren(2, 3, width=16, depth=4, w0=30.0, w0_first=20.0, output_offset=offset)
    params = field.init_params(_gen(2))
    coords = torch.rand(37, 2) * 2 - 1
    out = field.forward(params, coords)
    ref = _reference_forward(params, coords, 30.0, 20.0, offset, 4)
    assert out.shape == (37, 3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_return_features_are_the_penultimate_activations():
    field = Siren(2, 3, width=16, depth=3)
    params = field.init_params(_gen(3))
    coords = torch.rand(11, 2) * 2 - 1
    out, feats = field.forward(params, coords, return_features=True)
    assert feats.shape == (11, 16)
    torch.testing.assert_close(out, feats @ params["w2"].T + params["b2"])


def _batched_params(field, batch, seed=0):
    per = [field.init_params(_gen(seed + i)) for i in range(batch)]
    return per, {k: torch.stack([p[k] for p in per]) for k in per[0]}


@pytest.mark.parametrize("per_signal_coords", [False, True])
def test_batched_params_equal_per_signal_evaluation(per_signal_coords):
    field = Siren(2, 3, width=16, depth=3, output_offset=0.5)
    per, batched = _batched_params(field, 4)
    coords = torch.rand(4, 13, 2) * 2 - 1 if per_signal_coords else torch.rand(13, 2) * 2 - 1
    out = field.forward(batched, coords)
    assert out.shape == (4, 13, 3)
    for i in range(4):
        c = coords[i] if per_signal_coords else coords
        torch.testing.assert_close(out[i], field.forward(per[i], c), rtol=1e-5, atol=1e-6)


def test_mixed_batched_and_shared_params():
    """Only some parameters batched (the adapted ones): the rest are broadcast."""
    field = Siren(2, 1, width=8, depth=3)
    shared = field.init_params(_gen(0))
    per, batched = _batched_params(field, 3, seed=10)
    params = {**shared, "w2": batched["w2"], "b2": batched["b2"], "b0": batched["b0"]}
    coords = torch.rand(3, 9, 2) * 2 - 1
    out = field.forward(params, coords)
    for i in range(3):
        p = {**shared, "w2": per[i]["w2"], "b2": per[i]["b2"], "b0": per[i]["b0"]}
        torch.testing.assert_close(out[i], field.forward(p, coords[i]), rtol=1e-5, atol=1e-6)


def test_per_signal_coords_with_shared_params():
    field = Siren(2, 3, width=8, depth=3)
    params = field.init_params(_gen(0))
    coords = torch.rand(2, 5, 2) * 2 - 1
    out = field.forward(params, coords)
    for i in range(2):
        torch.testing.assert_close(out[i], field.forward(params, coords[i]))


# ----------------------------------------------------------------------------------------- masks
def test_masks_equal_explicitly_zeroed_weights_and_block_gradients():
    field = Siren(2, 3, width=16, depth=3)
    params = field.init_params(_gen(4))
    g = _gen(9)
    masks = {k: (torch.rand(params[k].shape, generator=g) < 0.5).float() for k in ("w0", "w2")}
    coords = torch.rand(21, 2) * 2 - 1
    zeroed = {k: (v * masks[k] if k in masks else v) for k, v in params.items()}
    out_masked = field.forward(params, coords, masks=masks)
    torch.testing.assert_close(out_masked, field.forward(zeroed, coords), rtol=0, atol=0)
    ref = _reference_forward(params, coords, 30.0, 30.0, 0.0, 3, masks=masks)
    torch.testing.assert_close(out_masked, ref, rtol=1e-5, atol=1e-6)
    # Masked entries receive exactly zero gradient.
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    field.forward(leaves, coords, masks=masks).pow(2).sum().backward()
    for k, m in masks.items():
        assert torch.all(leaves[k].grad[m == 0] == 0)
        assert leaves[k].grad[m == 1].abs().sum() > 0


def test_masks_with_batched_params():
    field = Siren(2, 1, width=8, depth=3)
    per, batched = _batched_params(field, 2)
    mask = (torch.rand(8, 8, generator=_gen(1)) < 0.5).float()
    coords = torch.rand(7, 2) * 2 - 1
    out = field.forward(batched, coords, masks={"w1": mask})
    for i in range(2):
        torch.testing.assert_close(out[i], field.forward(per[i], coords, masks={"w1": mask}))


# ------------------------------------------------------------------------------- ModulatedSiren
def test_modulated_signal_params_start_at_zero():
    field = ModulatedSiren(2, 3, width=8, depth=4)
    sp = field.signal_params()
    assert set(sp) == {"mod0", "mod1", "mod2"}
    assert all(v.shape == (8,) and torch.all(v == 0) for v in sp.values())
    lat = ModulatedSiren(2, 3, width=8, depth=4, latent_dim=6)
    assert set(lat.signal_params()) == {"latent"}
    assert torch.all(lat.signal_params()["latent"] == 0)
    p = lat.init_params(_gen(0))
    assert p["map_w"].shape == (lat.num_modulations, 6) and torch.all(p["map_b"] == 0)
    assert lat.num_modulations == 8 * 3


def test_zero_modulations_equal_plain_siren():
    kw = dict(width=16, depth=4, w0=30.0, w0_first=25.0, output_offset=0.5)
    plain, mod = Siren(2, 3, **kw), ModulatedSiren(2, 3, **kw)
    params = plain.init_params(_gen(6))
    coords = torch.rand(17, 2) * 2 - 1
    out = mod.forward({**params, **mod.signal_params()}, coords)
    torch.testing.assert_close(out, plain.forward(params, coords), rtol=0, atol=0)
    # Also batched zero modulations.
    zeros = {k: v.expand(3, *v.shape) for k, v in mod.signal_params().items()}
    out_b = mod.forward({**params, **zeros}, coords)
    for i in range(3):
        torch.testing.assert_close(out_b[i], plain.forward(params, coords), rtol=1e-6, atol=1e-6)


def test_nonzero_modulations_match_reference_and_batch():
    field = ModulatedSiren(2, 3, width=8, depth=3, w0=30.0)
    params = field.init_params(_gen(7))
    g = _gen(8)
    mods = [torch.randn(3, 8, generator=g) * 0.1 for _ in range(2)]
    coords = torch.rand(3, 10, 2) * 2 - 1
    out = field.forward({**params, "mod0": mods[0], "mod1": mods[1]}, coords)
    for i in range(3):
        ref = _reference_forward(params, coords[i], 30.0, 30.0, 0.0, 3, mods=[m[i] for m in mods])
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-6)


def test_latent_path_with_identity_map_equals_explicit_modulations():
    width, depth = 8, 4
    field = ModulatedSiren(2, 3, width=width, depth=depth, latent_dim=width * (depth - 1))
    explicit = ModulatedSiren(2, 3, width=width, depth=depth)
    params = field.init_params(_gen(11))
    params["map_w"] = torch.eye(field.num_modulations)
    params["map_b"] = torch.zeros(field.num_modulations)
    net = {k: v for k, v in params.items() if not k.startswith("map_")}
    coords = torch.rand(12, 2) * 2 - 1
    # Unbatched latent.
    z = torch.randn(field.num_modulations, generator=_gen(12)) * 0.2
    out = field.forward({**params, "latent": z}, coords)
    mods = {f"mod{i}": z[i * width:(i + 1) * width] for i in range(depth - 1)}
    torch.testing.assert_close(out, explicit.forward({**net, **mods}, coords), rtol=1e-5, atol=1e-6)
    # Batched latent (B, latent_dim) and per-signal coordinates.
    zb = torch.randn(2, field.num_modulations, generator=_gen(13)) * 0.2
    cb = torch.rand(2, 12, 2) * 2 - 1
    out_b = field.forward({**params, "latent": zb}, cb)
    mods_b = {f"mod{i}": zb[:, i * width:(i + 1) * width] for i in range(depth - 1)}
    torch.testing.assert_close(out_b, explicit.forward({**net, **mods_b}, cb), rtol=1e-5, atol=1e-6)


def test_latent_map_bias_acts_as_a_shared_shift():
    width, depth = 8, 3
    field = ModulatedSiren(2, 1, width=width, depth=depth, latent_dim=4)
    explicit = ModulatedSiren(2, 1, width=width, depth=depth)
    params = field.init_params(_gen(14))
    params["map_b"] = torch.randn(field.num_modulations, generator=_gen(15)) * 0.1
    z = torch.randn(4, generator=_gen(16))
    coords = torch.rand(6, 2) * 2 - 1
    flat = params["map_w"] @ z + params["map_b"]
    net = {k: v for k, v in params.items() if not k.startswith("map_")}
    mods = {f"mod{i}": flat[i * width:(i + 1) * width] for i in range(depth - 1)}
    torch.testing.assert_close(field.forward({**params, "latent": z}, coords),
                               explicit.forward({**net, **mods}, coords), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------- coordinates
def test_coordinate_grid_corners_and_row_major_order():
    grid = coordinate_grid((3, 4))
    assert grid.shape == (12, 2)
    assert torch.equal(grid[0], torch.tensor([-1.0, -1.0]))
    assert torch.equal(grid[-1], torch.tensor([1.0, 1.0]))
    assert torch.equal(grid[3], torch.tensor([-1.0, 1.0]))   # end of first row: last axis varies fastest
    assert torch.equal(grid[8], torch.tensor([1.0, -1.0]))   # start of last row
    torch.testing.assert_close(grid[1], torch.tensor([-1.0, -1.0 / 3]))
    assert torch.equal(grid[4], torch.tensor([0.0, -1.0]))
    assert grid.min() == -1 and grid.max() == 1
    # Each axis is linspace(-1, 1, n) including both ends.
    torch.testing.assert_close(grid.reshape(3, 4, 2)[:, 0, 0], torch.linspace(-1, 1, 3))
    torch.testing.assert_close(grid.reshape(3, 4, 2)[0, :, 1], torch.linspace(-1, 1, 4))


def test_coordinate_grid_1d_3d_and_singleton_axes():
    g1 = coordinate_grid((5,))
    assert g1.shape == (5, 1) and g1[0, 0] == -1 and g1[-1, 0] == 1
    g3 = coordinate_grid((2, 3, 4))
    assert g3.shape == (24, 3)
    assert torch.equal(g3[0], -torch.ones(3)) and torch.equal(g3[-1], torch.ones(3))
    torch.testing.assert_close(g3[1], torch.tensor([-1.0, -1.0, -1.0 / 3]))
    gs = coordinate_grid((1, 3))
    assert torch.all(gs[:, 0] == 0)
    assert coordinate_grid((2, 2), dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("shape,channels", [((5, 7), 3), ((9,), 2), ((2, 3, 4), 1)])
def test_grid_converter_round_trip_is_exact(shape, channels):
    conv = GridConverter(shape, channels)
    signals = torch.rand(2, channels, *shape, generator=_gen(0))
    values = conv.to_values(signals)
    assert values.shape == (2, conv.num_points, channels)
    assert conv.coord_dim == len(shape)
    assert torch.equal(conv.to_signals(values), signals)
    # Value n sits at coordinate n: the pixel at grid index idx of the signal.
    coords = conv.coords()
    assert coords.shape == (conv.num_points, len(shape))
    idx = tuple(s - 1 for s in shape)  # last point = all-ones corner
    assert torch.equal(values[:, -1], signals[(slice(None), slice(None), *idx)])
    assert torch.all(coords[-1] == 1)
    assert conv.coords() is coords  # cached


def test_grid_converter_pixel_position_matches_coordinate():
    conv = GridConverter((4, 6), 1)
    img = torch.zeros(1, 1, 4, 6)
    img[0, 0, 1, 4] = 1.0  # row 1, column 4
    values = conv.to_values(img)
    n = int(values[0, :, 0].argmax())
    torch.testing.assert_close(conv.coords()[n], torch.tensor([-1 + 2 / 3, -1 + 2 * 4 / 5]))


def test_grid_converter_rejects_wrong_shapes():
    conv = GridConverter((4, 4), 3)
    with pytest.raises(ValueError):
        conv.to_values(torch.rand(1, 3, 4, 5))
    with pytest.raises(ValueError):
        conv.to_values(torch.rand(1, 1, 4, 4))

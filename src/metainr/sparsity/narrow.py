"""The Dense-Narrow baseline: the widest dense SIREN with #params <= a target."""

from __future__ import annotations


def siren_param_count(in_dim: int, out_dim: int, width: int, depth: int) -> int:
    """Weights + biases of a SIREN with ``depth`` linear layers of hidden ``width``."""
    if depth < 2:
        raise ValueError("depth must be >= 2")
    dims = [in_dim] + [width] * (depth - 1) + [out_dim]
    return sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(depth))


def narrow_width(target_params: int, in_dim: int, out_dim: int, depth: int) -> int:
    """Largest width w >= 1 with siren_param_count(w) <= target (the count grows with w)."""
    if siren_param_count(in_dim, out_dim, 1, depth) > target_params:
        raise ValueError(f"no SIREN of depth {depth} has <= {target_params} parameters")
    lo, hi = 1, 2
    while siren_param_count(in_dim, out_dim, hi, depth) <= target_params:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if siren_param_count(in_dim, out_dim, mid, depth) <= target_params:
            lo = mid
        else:
            hi = mid
    return lo

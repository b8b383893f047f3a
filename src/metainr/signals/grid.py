"""Regular coordinate grids and the converter between gridded signals and (coords, values).

A gridded signal is a tensor (C, *spatial) (images: (C, H, W); audio: (C, T); video: (C, T, H, W)).
Its coordinates are the grid points in [-1, 1]^d (linspace including both ends), flattened in
row-major order, so values (N, C) reshape back to the signal exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def coordinate_grid(shape: Sequence[int], device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Grid of shape (prod(shape), len(shape)) with each axis in [-1, 1], row-major order."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) if n > 1
            else torch.zeros(1, device=device, dtype=dtype) for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, len(shape))


class GridConverter:
    """Converts batches of gridded signals (B, C, *shape) to values (B, N, C) and back."""

    def __init__(self, shape: Sequence[int], channels: int):
        self.shape = tuple(int(s) for s in shape)
        self.channels = int(channels)
        self._grids: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    @property
    def num_points(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def coord_dim(self) -> int:
        return len(self.shape)

    def coords(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
               ) -> torch.Tensor:
        key = (str(device), dtype)
        if key not in self._grids:
            self._grids[key] = coordinate_grid(self.shape, device=device, dtype=dtype)
        return self._grids[key]

    def to_values(self, signals: torch.Tensor) -> torch.Tensor:
        """(B, C, *shape) -> (B, N, C)."""
        if tuple(signals.shape[2:]) != self.shape or signals.shape[1] != self.channels:
            raise ValueError(f"expected signals of shape (B, {self.channels}, {self.shape}), "
                             f"got {tuple(signals.shape)}")
        return signals.flatten(2).transpose(1, 2)

    def to_signals(self, values: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, C, *shape)."""
        return values.transpose(1, 2).reshape(values.shape[0], self.channels, *self.shape)

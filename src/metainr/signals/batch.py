"""Turn a dataset of gridded signals into the (coords, values) tensors the core consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metainr.errors import DataError
from metainr.signals.grid import GridConverter


@dataclass
class SignalSet:
    converter: GridConverter
    values: torch.Tensor          # (n, N, C)
    names: list[str]

    @property
    def coords(self) -> torch.Tensor:
        return self.converter.coords(self.values.device)

    def __len__(self) -> int:
        return self.values.shape[0]

    def to(self, device: torch.device) -> SignalSet:
        return SignalSet(self.converter, self.values.to(device), self.names)

    def subset(self, count: int | None) -> SignalSet:
        if count is None or count >= len(self):
            return self
        return SignalSet(self.converter, self.values[:count], self.names[:count])


def materialize(dataset, name: str = "dataset") -> SignalSet:
    """Decode every item once into memory as (n, N, C) values."""
    if len(dataset) == 0:
        raise DataError(f"{name} is empty")
    items = [dataset[i] for i in range(len(dataset))]
    signals = torch.stack(items)
    converter = GridConverter(signals.shape[2:], signals.shape[1])
    names = list(getattr(dataset, "names", [str(i) for i in range(len(items))]))
    return SignalSet(converter, converter.to_values(signals).contiguous(), names)

"""Writing reconstructions in their natural formats, atomically (no half-written outputs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from metainr.runs.checkpoint import atomic_write_bytes


def image_bytes(image: torch.Tensor, fmt: str = "PNG") -> bytes:
    """(C, H, W) in [0, 1] -> encoded image bytes (8-bit, rounded)."""
    from PIL import Image

    arr = (image.detach().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def save_image(image: torch.Tensor, path: Path | str) -> None:
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower(),
                                                                             path.suffix[1:].upper() or "PNG")
    atomic_write_bytes(path, image_bytes(image, fmt))


def image_grid(rows: list[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """Tile rows of images (each (n, C, H, W), same n) into one (C, H', W') image on white."""
    n, c, h, w = rows[0].shape
    grid = torch.ones(c, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for r, row in enumerate(rows):
        for i in range(n):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            grid[:, y:y + h, x:x + w] = row[i].clamp(0, 1)
    return grid

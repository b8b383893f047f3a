"""Image files -> tensors (C, H, W) in [0, 1], with the papers' crop/resize preprocessing and patching.

Decoding rules (so every file ends up as 8-bit L/RGB or a [0, 1] float plane):

* 8-bit images are divided by 255, 16-bit ones ('I;16*', 'I') by 65535.
* Transparent images (RGBA, LA, PA, and P/L/RGB with a transparency key) are composited on a
  white background: the colour a viewer shows, and it keeps fully transparent pixels out of [0, 1]
  noise that an INR would otherwise have to fit.
* Palette, CMYK, YCbCr, ... are converted to RGB; bilevel ('1') to L.
* ``channels=3`` replicates grey images; ``channels=1`` converts colour with PIL's ITU-R 601 luma.
* Multi-frame files (GIF, TIFF) use their first frame; EXIF orientation is not applied (the papers'
  torchvision pipelines do not either).

All resizing uses PIL's BICUBIC filter, which antialiases when downsampling (its support grows
with the scale factor), on the 8-bit data for 8-bit images (as torchvision does) and in float for
16-bit ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metainr.errors import DataError
from metainr.signals.paths import list_files

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".pnm")
RESAMPLE = Image.Resampling.BICUBIC
CROP_MODES = ("center", "none")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def list_image_files(path: str | Path) -> list[Path]:
    """Image files from a folder (recursive, sorted), a single image, or a ``.txt`` list of paths."""
    return list_files(path, IMAGE_EXTENSIONS, kind="images")


def load_image(path: str | Path, resolution: int | tuple[int, int] | None = None, crop: str = "center",
               channels: int = 3, center_crop: int | None = None, resize_shorter: int | None = None
               ) -> torch.Tensor:
    """Load an image as a float32 tensor (channels, H, W) in [0, 1].

    Steps, in order: ``resize_shorter`` (shorter side to this many pixels, aspect kept), then
    ``center_crop`` (a centred square of this side; CelebA: 178), then ``resolution`` (int: square;
    tuple: (H, W); None: keep). With ``crop="center"`` an aspect-ratio mismatch before the final
    resize is removed by taking the largest centred region of the target aspect; ``crop="none"``
    stretches instead.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    path = Path(path)
    img = _decode(path, channels)
    if resize_shorter is not None:
        w, h = img.size
        scale = resize_shorter / min(w, h)
        size = (resize_shorter, max(1, round(h * scale))) if w <= h else (max(1, round(w * scale)),
                                                                          resize_shorter)
        img = img.resize(size, RESAMPLE)
    if center_crop is not None:
        w, h = img.size
        if center_crop > w or center_crop > h:
            raise DataError(f"image {path} is {w}x{h}, smaller than the centre crop {center_crop}")
        img = _crop_centre(img, center_crop, center_crop)
    if resolution is not None:
        th, tw = (resolution, resolution) if isinstance(resolution, int) else resolution
        if crop == "center":
            w, h = img.size
            if w * th > h * tw:  # too wide for the target aspect
                img = _crop_centre(img, max(1, round(h * tw / th)), h)
            elif w * th < h * tw:
                img = _crop_centre(img, w, max(1, round(w * th / tw)))
        if img.size != (tw, th):
            img = img.resize((tw, th), RESAMPLE)
    return _to_tensor(img, channels)


def _decode(path: Path, channels: int) -> Image.Image:
    """Open and fully decode (so truncation is detected here), then normalise the mode."""
    try:
        with Image.open(path) as opened:
            opened.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES is left False)
            img = _normalise_mode(opened, channels)
            img.load()
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    return img


def _normalise_mode(img: Image.Image, channels: int) -> Image.Image:
    """-> 'L' or 'RGB' (8-bit), or 'F' with values already in [0, 1] (from 16-bit)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img).astype(np.float32) / 65535.0
        return Image.fromarray(np.clip(arr, 0.0, 1.0))  # float32 2-D -> mode "F"
    if mode == "F":
        raise ValueError("32-bit float images are not supported (their value range is unknown)")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    elif mode == "1":
        img = img.convert("L")
    elif mode not in ("L", "RGB"):
        img = img.convert("RGB")  # P, CMYK, YCbCr, ...; raises ValueError if PIL cannot
    if channels == 1 and img.mode == "RGB":
        img = img.convert("L")
    return img


def _crop_centre(img: Image.Image, width: int, height: int) -> Image.Image:
    w, h = img.size
    # round() like torchvision's CenterCrop, so crops match the papers' pixels exactly
    left, top = int(round((w - width) / 2.0)), int(round((h - height) / 2.0))
    return img.crop((left, top, left + width, top + height))


def _to_tensor(img: Image.Image, channels: int) -> torch.Tensor:
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.clip(arr, 0.0, 1.0).astype(np.float32)  # bicubic can overshoot
    else:
        arr = arr.astype(np.float32) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    if channels == 3 and t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t.contiguous()


def random_patches(image: torch.Tensor, size: int, count: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` uniformly placed ``size`` x ``size`` crops of ``image`` (C, H, W) -> (count, C, size, size).

    Positions come from ``generator`` (pass a seeded one for reproducible patches).
    """
    c, h, w = image.shape
    if size > h or size > w:
        raise ValueError(f"patch size {size} exceeds image size {h}x{w}")
    ys = torch.randint(0, h - size + 1, (count,), generator=generator).tolist()
    xs = torch.randint(0, w - size + 1, (count,), generator=generator).tolist()
    if count == 0:
        return image.new_empty((0, c, size, size))
    return torch.stack([image[:, y:y + size, x:x + size] for y, x in zip(ys, xs, strict=True)])


def grid_patches(image: torch.Tensor, size: int, stride: int | None = None) -> torch.Tensor:
    """Tiles of ``image`` (C, H, W) in row-major order -> (n, C, size, size).

    ``stride`` defaults to ``size`` (non-overlapping); tiles that would cross the right or bottom
    edge are dropped, so an image smaller than ``size`` gives n = 0.
    """
    stride = size if stride is None else stride
    c, h, w = image.shape
    if size > h or size > w:
        return image.new_empty((0, c, size, size))
    tiles = image.unfold(1, size, stride).unfold(2, size, stride)  # (C, nh, nw, size, size)
    return tiles.permute(1, 2, 0, 3, 4).reshape(-1, c, size, size).contiguous()

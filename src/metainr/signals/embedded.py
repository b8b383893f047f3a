"""The embedded default data: real photos shipped inside the scikit-image wheel, cut into patches.

Used when no data folder exists (a fresh machine), so the demo and quick start run offline. Only
images stored in the wheel are used (never ones ``skimage.data`` would download). Each photo is
downscaled so its shorter side is ``8 * resolution`` pixels (never upscaled; 256 px for 32x32
patches, so a patch covers about 1/8 of the photo: object parts and textures, like natural crops),
then tiled into non-overlapping ``resolution``-sized patches. Near-constant patches (the black
backgrounds of the retina and Hubble photos) are dropped. Whole photos are held out for testing
(chelsea, coffee), so evaluation is on images never seen in training.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metainr.signals.datasets import InMemoryDataset, split_items
from metainr.signals.image import RESAMPLE, grid_patches

TRAIN_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                "motorcycle")
TEST_PHOTOS = ("chelsea", "coffee")
MIN_PATCH_STD = 0.02  # in [0, 1] units; below this a patch is essentially flat
LFW_FACES = 100  # lfw_subset(): the first 100 of its 200 images are faces, the rest are not
LFW_TEST = 20


# File names inside the skimage.data package; read with PIL directly because the skimage.data
# loaders import skimage.io (and imageio), which costs seconds on first use.
_FILES = {"astronaut": "astronaut.png", "rocket": "rocket.jpg", "hubble_deep_field": "hubble_deep_field.jpg",
          "immunohistochemistry": "ihc.png", "retina": "retina.jpg", "motorcycle": "motorcycle_left.png",
          "chelsea": "chelsea.png", "coffee": "coffee.png"}


@lru_cache(maxsize=16)
def _photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 from the files shipped in the scikit-image wheel (no network)."""
    path = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data" / _FILES[name]
    if path.is_file():
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    from skimage import data  # another layout: the public loaders (still local files)

    if name == "motorcycle":
        return data.stereo_motorcycle()[0]  # left view; the right one is a near duplicate
    return getattr(data, name)()


@lru_cache(maxsize=32)
def _downscaled(name: str, shorter: int, channels: int) -> torch.Tensor:
    img = Image.fromarray(_photo(name))
    w, h = img.size
    scale = min(1.0, shorter / min(w, h))
    if scale < 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), RESAMPLE)
    if channels == 1:
        img = img.convert("L")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _photo_patches(names: tuple[str, ...], resolution: int, seed: int, channels: int
                   ) -> tuple[torch.Tensor, list[str]]:
    rng = np.random.default_rng(seed)
    patches, ids = [], []
    for name in names:
        img = _downscaled(name, 8 * resolution, channels)
        # seed 0 tiles from the corner; other seeds shift the tiling grid (different patches)
        oy, ox = (0, 0) if seed == 0 else (int(v) for v in rng.integers(0, resolution, size=2))
        tiles = grid_patches(img[:, oy:, ox:], resolution)
        keep = tiles.flatten(1).std(dim=1) >= MIN_PATCH_STD
        for k in torch.nonzero(keep).flatten().tolist():
            patches.append(tiles[k])
            ids.append(f"{name}#{k}")
    if not patches:
        return torch.empty(0, channels, resolution, resolution), []
    return torch.stack(patches), ids


def embedded_dataset(resolution: int = 32, seed: int = 0, channels: int = 3, faces: bool = False
                     ) -> tuple[InMemoryDataset, InMemoryDataset]:
    """(train, test) image datasets of ``resolution`` x ``resolution`` signals, needing no download.

    Photos (default): at 32 px about 400 train patches from six photos and about 190 test patches
    from two others (fewer at larger resolutions, as photos are never upscaled).
    ``faces=True``: the 100 LFW faces of ``skimage.data.lfw_subset()``, 25x25 grey, resized
    (bicubic) to ``resolution`` — upsampled at 32 px, so they lack fine detail; 20 are held out by
    :func:`split_items` with ``seed``. Names are "<photo>#<tile>" / "lfw_<index>".
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if faces:
        return _faces(resolution, seed, channels)
    train, train_ids = _photo_patches(TRAIN_PHOTOS, resolution, seed, channels)
    test, test_ids = _photo_patches(TEST_PHOTOS, resolution, seed, channels)
    return InMemoryDataset(train, train_ids, "image"), InMemoryDataset(test, test_ids, "image")


def _faces(resolution: int, seed: int, channels: int) -> tuple[InMemoryDataset, InMemoryDataset]:
    from skimage import data

    faces = np.asarray(data.lfw_subset()[:LFW_FACES], dtype=np.float32)  # (100, 25, 25) in [0, 1]
    resized = [np.asarray(Image.fromarray(f).resize((resolution, resolution), RESAMPLE))
               for f in faces]
    signals = torch.from_numpy(np.clip(np.stack(resized), 0.0, 1.0)).unsqueeze(1)
    if channels == 3:
        signals = signals.expand(-1, 3, -1, -1).contiguous()
    names = [f"lfw_{i:03d}" for i in range(len(faces))]
    full = InMemoryDataset(signals, names, "image")
    train_names, test_names = split_items(names, LFW_TEST, seed)
    return full.subset(train_names), full.subset(test_names)

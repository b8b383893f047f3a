"""Datasets of gridded signals (C, *shape) in [0, 1], seed-stable train/test splits, and DataSpec.

Every dataset item is one signal tensor; batches of them are what the meta-learner fits. Splits are
made per *file* (never per patch or audio window), so no test image or clip leaks into training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from metainr.errors import DataError
from metainr.signals.audio import audio_windows, list_audio_files, load_audio
from metainr.signals.image import list_image_files, load_image, random_patches
from metainr.signals.paths import item_names, resolve_data_path

MODALITIES = ("image", "audio")
EMBEDDED_NAMES = ("embedded", "embedded-faces")


def _hash_rank(seed: int, name: str) -> int:
    # sha256, not hash(): Python's str hash is salted per process.
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")


def _test_count(test_size: int | float, n: int) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, int | float):
        raise ValueError(f"test_size must be an int count or a float fraction, got {test_size!r}")
    if isinstance(test_size, float) and test_size >= 1 and test_size.is_integer():
        test_size = int(test_size)  # 100.0 from a float CLI option or JSON means a count
    if isinstance(test_size, int):
        if not 0 <= test_size <= n:
            raise ValueError(f"test_size {test_size} is not between 0 and the {n} items")
        return test_size
    if not 0.0 <= test_size < 1.0:
        raise ValueError(f"a fractional test_size must be in [0, 1), got {test_size}")
    k = int(test_size * n + 0.5)
    return max(k, 1) if test_size > 0 and n > 1 else k  # a nonzero fraction holds out something


def split_items(items: Sequence[str], test_size: int | float, seed: int) -> tuple[list[str], list[str]]:
    """Split item ids into (train, test), both sorted.

    Each id is ranked by sha256(f"{seed}:{id}"); the ``test_size`` lowest (a count if int or a
    whole float >= 1, else a fraction of len(items), rounded) form the test set. The result does not
    depend on the order of ``items`` or on the machine, and an item's side depends only on its rank
    relative to the test count: with a count, adding an item never moves a train item into test and
    moves at most one test item to train (only if the new item itself ranks inside the count). With
    a fraction the count itself can grow by one as items are added.
    """
    names = list(items)
    if len(set(names)) != len(names):
        raise ValueError("split_items needs unique item ids")
    k = _test_count(test_size, len(names))
    ranked = sorted(names, key=lambda s: (_hash_rank(seed, s), s))
    test = set(ranked[:k])
    return sorted(s for s in names if s not in test), sorted(test)


def _hash_order(names: Sequence[str], seed: int) -> list[str]:
    return sorted(names, key=lambda s: (_hash_rank(seed, f"limit:{s}"), s))


class SignalDataset(Dataset[torch.Tensor]):
    """Base: items are tensors (channels, *shape); ``names[i]`` identifies item i."""

    modality: str
    shape: tuple[int, ...]
    channels: int
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, modality={self.modality!r}, "
                f"channels={self.channels}, shape={self.shape})")


class InMemoryDataset(SignalDataset):
    """Signals already in a tensor (n, C, *shape)."""

    def __init__(self, signals: torch.Tensor, names: Sequence[str] | None = None, modality: str = "image"):
        if signals.ndim < 3:
            raise ValueError(f"expected signals (n, C, *shape), got shape {tuple(signals.shape)}")
        self.signals = signals
        self.names = list(names) if names is not None else [str(i) for i in range(signals.shape[0])]
        if len(self.names) != signals.shape[0]:
            raise ValueError(f"{len(self.names)} names for {signals.shape[0]} signals")
        self.modality = modality
        self.channels = int(signals.shape[1])
        self.shape = tuple(int(s) for s in signals.shape[2:])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.signals[index]

    def subset(self, names: Sequence[str]) -> InMemoryDataset:
        where = {n: i for i, n in enumerate(self.names)}
        idx = torch.tensor([where[n] for n in names], dtype=torch.long)
        return InMemoryDataset(self.signals[idx], list(names), self.modality)


class ImageFolderDataset(SignalDataset):
    """Images from files, decoded lazily and (``cache=True``) kept in memory after first use.

    Without ``patch`` each item is a whole image preprocessed by :func:`load_image` (crops, then
    resize to ``resolution``). With ``patch`` each file gives ``patches_per_image`` items, random
    ``patch`` x ``patch`` crops of the preprocessed image; pass ``resolution=None`` to crop at the
    native resolution (after the optional ``resize_shorter``/``center_crop``). A patch's position
    depends only on ``seed`` and the item name, so item i is the same crop on every access and in
    every run (a fixed test set; no per-epoch augmentation).
    """

    modality = "image"

    def __init__(self, files: Sequence[str | Path], resolution: int | tuple[int, int] | None,
                 channels: int = 3, center_crop: int | None = None, resize_shorter: int | None = None,
                 patch: int | None = None, patches_per_image: int = 1, seed: int = 0, cache: bool = True,
                 names: Sequence[str] | None = None, crop: str = "center"):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise DataError("no images given to ImageFolderDataset")
        file_names = list(names) if names is not None else [f.name for f in self.files]
        if len(file_names) != len(self.files):
            raise ValueError(f"{len(file_names)} names for {len(self.files)} files")
        self.file_names = file_names
        self.resolution = resolution
        self.channels = channels
        self.center_crop = center_crop
        self.resize_shorter = resize_shorter
        self.crop = crop
        self.patch = patch
        self.patches_per_image = patches_per_image if patch is not None else 1
        self.seed = seed
        self.cache = cache
        self._cache: dict[int, torch.Tensor] = {}
        if patch is not None:
            self.names = [f"{n}#{j}" for n in file_names for j in range(self.patches_per_image)]
            self.shape = (patch, patch)
        else:
            self.names = list(file_names)
            if resolution is None:  # native size: all images must share the first one's
                self.shape = tuple(self._image(0).shape[1:])
            elif isinstance(resolution, int):
                self.shape = (resolution, resolution)
            else:
                self.shape = (int(resolution[0]), int(resolution[1]))

    def _image(self, file_index: int) -> torch.Tensor:
        cached = self._cache.get(file_index)
        if cached is not None:
            return cached.float() / 255.0 if cached.dtype == torch.uint8 else cached
        img = load_image(self.files[file_index], self.resolution, crop=self.crop, channels=self.channels,
                         center_crop=self.center_crop, resize_shorter=self.resize_shorter)
        if self.cache:
            as_bytes = (img * 255.0).round()
            # 8-bit sources are exact multiples of 1/255: store them as uint8 (4x less memory).
            exact = torch.equal(as_bytes / 255.0, img)
            self._cache[file_index] = as_bytes.to(torch.uint8) if exact else img
        return img

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self.names):
            raise IndexError(index)
        file_index = index // self.patches_per_image
        img = self._image(file_index)
        path = self.files[file_index]
        if self.patch is None:
            if tuple(img.shape[1:]) != self.shape:
                raise DataError(f"image {path} is {img.shape[2]}x{img.shape[1]} after preprocessing but "
                                f"others are {self.shape[1]}x{self.shape[0]}; set a resolution")
            return img
        if self.patch > img.shape[1] or self.patch > img.shape[2]:
            raise DataError(f"image {path} is {img.shape[2]}x{img.shape[1]} after preprocessing, smaller "
                            f"than the patch size {self.patch}")
        gen = torch.Generator().manual_seed(_hash_rank(self.seed, self.names[index]) % (2**63))
        return random_patches(img, self.patch, 1, gen)[0]


class AudioFolderDataset(SignalDataset):
    """Fixed-length windows (1, length) from every clip; clips are read once at construction.

    Windows start every ``hop`` samples (default: ``length``, no overlap); the tail of a clip shorter
    than a window is dropped. ``sample_rate`` is the clips' common rate, or None if they differ.
    """

    modality = "audio"

    def __init__(self, files: Sequence[str | Path], length: int, hop: int | None = None,
                 names: Sequence[str] | None = None):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise DataError("no audio files given to AudioFolderDataset")
        file_names = list(names) if names is not None else [f.name for f in self.files]
        self.length, self.hop = length, hop
        self.channels = 1
        self.shape = (length,)
        windows, self.names, rates = [], [], set()
        step = length if hop is None else hop
        for f, name in zip(self.files, file_names, strict=True):
            clip, rate = load_audio(f)
            rates.add(rate)
            w = audio_windows(clip, length, hop)
            windows.append(w)
            self.names.extend(f"{name}@{i * step}" for i in range(w.shape[0]))
        if not self.names:
            raise DataError(f"every audio clip in {self.files[0].parent} is shorter than the window of "
                            f"{length} samples")
        self.windows = torch.cat(windows)
        self.sample_rate = rates.pop() if len(rates) == 1 else None

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.windows[index]


@dataclass
class DataSpec:
    """What to load. ``path`` None or "embedded" selects the built-in photo patches ("embedded-faces":
    LFW faces); other paths are resolved by :func:`resolve_data_path`.

    Images are cropped (``resize_shorter``, ``center_crop``) and resized to ``resolution``; with
    ``patch`` set, ``resolution`` is ignored and ``patches_per_image`` random ``patch``-sized crops
    are taken from each image at its native (cropped) resolution. ``test_size`` files (a count if
    int, a fraction if float) are held out by :func:`split_items`; ``limit`` then caps the number
    of training files (a seed-stable subset, so the test set is unaffected). Audio is cut into
    windows of ``audio_length`` samples.
    """

    path: str | None = None
    modality: str = "image"
    resolution: int = 32
    channels: int = 3
    center_crop: int | None = None
    resize_shorter: int | None = None
    patch: int | None = None
    patches_per_image: int = 1
    test_size: int | float = 0.1
    seed: int = 0
    limit: int | None = None
    audio_length: int = 4096


def preset_for(name: str | None) -> dict[str, Any]:
    """DataSpec keyword overrides for a known dataset, recognised from any path component.

    "celeba": centre-crop 178x178 and hold out 100 images (the Meta-SparseINR/GradNCP protocol);
    "imagenette-like" (also "imagenette", "imagenet_samples"): shorter side to 200, then centre-crop
    178; "cifar10": 32 px. Anything else: no overrides.
    """
    if not name:
        return {}
    parts = {p.lower() for p in Path(str(name)).parts}
    if "celeba" in parts:
        return {"center_crop": 178, "test_size": 100}
    if parts & {"imagenette-like", "imagenette", "imagenet_samples"}:
        return {"resize_shorter": 200, "center_crop": 178}
    if parts & {"cifar10", "cifar-10"}:
        return {"resolution": 32}
    return {}


def load_dataset(spec: DataSpec) -> tuple[SignalDataset, SignalDataset]:
    """Build (train, test) datasets for ``spec``."""
    if spec.modality not in MODALITIES:
        raise DataError(f"unknown modality {spec.modality!r}; expected one of {', '.join(MODALITIES)}")
    if spec.path is None or spec.path in EMBEDDED_NAMES:
        if spec.modality != "image":
            raise DataError("the embedded default data is images; give a data path for audio")
        from metainr.signals.embedded import embedded_dataset

        train, test = embedded_dataset(spec.resolution, seed=spec.seed, channels=spec.channels,
                                       faces=spec.path == "embedded-faces")
        if spec.limit is not None and spec.limit < len(train):
            train = train.subset(sorted(_hash_order(train.names, spec.seed)[:spec.limit]))
        return train, test

    root = resolve_data_path(spec.path)
    files = list_image_files(root) if spec.modality == "image" else list_audio_files(root)
    names = item_names(files, root)
    kind = "images" if spec.modality == "image" else "audio files"
    try:
        train_names, test_names = split_items(names, spec.test_size, spec.seed)
    except ValueError as e:
        raise DataError(f"cannot split {len(names)} {kind} in {root}: {e}") from e
    if not train_names:
        raise DataError(f"test_size {spec.test_size} leaves no training {kind} in {root} "
                        f"({len(names)} found)")
    if spec.test_size and not test_names:
        raise DataError(f"only {len(names)} {kind} in {root}: too few to hold out a test set")
    if spec.limit is not None:
        if spec.limit < 1:
            raise DataError(f"limit must be at least 1, got {spec.limit}")
        train_names = sorted(_hash_order(train_names, spec.seed)[:spec.limit])
    by_name = dict(zip(names, files, strict=True))

    def build(selected: list[str]) -> SignalDataset:
        chosen = [by_name[n] for n in selected]
        if spec.modality == "audio":
            return AudioFolderDataset(chosen, spec.audio_length, names=selected)
        return ImageFolderDataset(chosen, None if spec.patch else spec.resolution, channels=spec.channels,
                                  center_crop=spec.center_crop, resize_shorter=spec.resize_shorter,
                                  patch=spec.patch, patches_per_image=spec.patches_per_image,
                                  seed=spec.seed, names=selected)

    return build(train_names), build(test_names) if test_names else _empty_like(spec)


def _empty_like(spec: DataSpec) -> InMemoryDataset:
    # test_size=0: an empty test set with the right signal shape.
    if spec.modality == "audio":
        return InMemoryDataset(torch.empty(0, 1, spec.audio_length), [], "audio")
    side = spec.patch or spec.resolution
    return InMemoryDataset(torch.empty(0, spec.channels, side, side), [], "image")

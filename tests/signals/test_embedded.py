"""The embedded default data (photos from the scikit-image wheel)."""

from __future__ import annotations

import time

import torch

from metainr.signals import embedded
from metainr.signals.embedded import TEST_PHOTOS, TRAIN_PHOTOS, embedded_dataset


def _sources(names):
    return {n.split("#")[0] for n in names}


def test_photo_patches_shapes_range_and_split():
    embedded._photo.cache_clear()
    embedded._downscaled.cache_clear()
    start = time.perf_counter()
    train, test = embedded_dataset(32)
    assert time.perf_counter() - start < 4.0  # budget 2 s; slack for slow CI disks
    assert 200 <= len(train) <= 1000 and len(test) >= 32
    for ds in (train, test):
        assert ds.shape == (32, 32) and ds.channels == 3 and ds.modality == "image"
        assert ds.signals.dtype == torch.float32
        assert ds.signals.min() >= 0.0 and ds.signals.max() <= 1.0
        assert len(set(ds.names)) == len(ds)
    # whole photos are held out: no source photo contributes to both sides
    assert _sources(train.names) == set(TRAIN_PHOTOS) and _sources(test.names) == set(TEST_PHOTOS)
    # near-constant patches are dropped
    assert (train.signals.flatten(1).std(dim=1) >= embedded.MIN_PATCH_STD).all()


def test_deterministic_and_seeded():
    a, _ = embedded_dataset(32)
    b, _ = embedded_dataset(32)
    assert a.names == b.names and torch.equal(a.signals, b.signals)
    c, _ = embedded_dataset(32, seed=1)  # a shifted tiling grid
    assert c.signals.shape[1:] == a.signals.shape[1:] and not torch.equal(c.signals[0], a.signals[0])


def test_other_resolutions_and_grey():
    train, test = embedded_dataset(64, channels=1)
    assert train[0].shape == (1, 64, 64) and len(test) >= 32


def test_faces_variant():
    train, test = embedded_dataset(32, faces=True)
    assert len(train) == 80 and len(test) == 20 and not set(train.names) & set(test.names)
    assert train[0].shape == (3, 32, 32)
    assert torch.equal(train[0][0], train[0][1])  # grey faces replicated to RGB
    assert train.signals.min() >= 0.0 and train.signals.max() <= 1.0

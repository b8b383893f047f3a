"""Splits, folder datasets, DataSpec loading and path resolution."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metainr.errors import DataError
from metainr.signals.datasets import (
    AudioFolderDataset,
    DataSpec,
    ImageFolderDataset,
    InMemoryDataset,
    load_dataset,
    preset_for,
    split_items,
)
from metainr.signals.paths import data_root, resolve_data_path

NAMES = [f"img_{i:04d}.jpg" for i in range(200)]


def test_split_is_deterministic_disjoint_and_sized():
    train, test = split_items(NAMES, 20, seed=0)
    assert len(test) == 20 and len(train) == 180
    assert not set(train) & set(test) and set(train) | set(test) == set(NAMES)
    assert split_items(list(reversed(NAMES)), 20, seed=0) == (train, test)  # order-independent
    assert split_items(NAMES, 20, seed=1)[1] != test
    assert len(split_items(NAMES, 0.1, seed=0)[1]) == 20
    assert len(split_items(NAMES[:5], 0.1, seed=0)[1]) == 1  # a nonzero fraction holds out one
    assert split_items(NAMES, 0, seed=0) == (sorted(NAMES), [])


def test_split_is_pinned_across_machines():
    # sha256-based: these exact sets must never change (e.g. with PYTHONHASHSEED or platform)
    names = [f"{i:03d}.jpg" for i in range(10)]
    assert split_items(names, 3, 0)[1] == ["000.jpg", "002.jpg", "004.jpg"]
    assert split_items(names, 0.25, 7)[1] == ["003.jpg", "007.jpg", "009.jpg"]


def test_split_is_stable_when_files_are_added():
    train, test = split_items(NAMES, 20, seed=0)
    # A new file ranked after the test cut: nothing moves.
    extra = next(n for n in (f"new_{i}.jpg" for i in range(1000))
                 if n in split_items([*NAMES, n], 20, seed=0)[0])
    train2, test2 = split_items([*NAMES, extra], 20, seed=0)
    assert test2 == test and set(train2) == set(train) | {extra}
    # Any new file: no training item ever moves into test.
    for i in range(50):
        new_train, new_test = split_items([*NAMES, f"other_{i}.png"], 20, seed=0)
        assert not set(train) & set(new_test)
        assert len(set(test) - set(new_test)) <= 1


def test_split_rejects_bad_sizes():
    assert split_items(NAMES, 20.0, seed=0) == split_items(NAMES, 20, seed=0)  # whole float = count
    for bad in (201, -1, 1.5, 201.0, True, "10"):
        with pytest.raises(ValueError):
            split_items(NAMES, bad, seed=0)
    with pytest.raises(ValueError, match="unique"):
        split_items(["a", "a"], 1, seed=0)


def _image_folder(root: Path, n: int, size=(40, 30), mode="RGB") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(root / f"im{i:02d}.png")
    return root


def test_image_folder_dataset_whole_images(tmp_path):
    files = sorted(_image_folder(tmp_path / "imgs", 5).glob("*.png"))
    ds = ImageFolderDataset(files, 16)
    assert len(ds) == 5 and ds.shape == (16, 16) and ds.channels == 3 and ds.modality == "image"
    assert ds.names == [f.name for f in files]
    first = ds[0]
    assert first.shape == (3, 16, 16) and first.dtype == torch.float32
    assert ds._cache[0].dtype == torch.uint8  # 8-bit cached compactly ...
    assert torch.equal(ds[0], first)  # ... and losslessly
    assert not ImageFolderDataset(files, 16, cache=False)._cache
    assert ImageFolderDataset(files, 16, channels=1)[2].shape == (1, 16, 16)


def test_image_folder_dataset_patches(tmp_path):
    files = sorted(_image_folder(tmp_path / "imgs", 3).glob("*.png"))
    ds = ImageFolderDataset(files, None, patch=8, patches_per_image=4, seed=3)
    assert len(ds) == 12 and ds.shape == (8, 8) and ds.names[5] == "im01.png#1"
    again = ImageFolderDataset(files, None, patch=8, patches_per_image=4, seed=3)
    assert all(torch.equal(ds[i], again[i]) for i in range(len(ds)))  # fixed crops
    assert not all(torch.equal(ds[4], ds[i]) for i in range(5, 8))
    with pytest.raises(DataError, match="smaller than the patch size"):
        ImageFolderDataset(files, None, patch=64)[0]


def test_native_size_mismatch_raises(tmp_path):
    a = _image_folder(tmp_path / "a", 1, size=(20, 20))
    b = _image_folder(tmp_path / "b", 1, size=(24, 20))
    ds = ImageFolderDataset([a / "im00.png", b / "im00.png"], None, names=["a", "b"])
    assert ds.shape == (20, 20) and ds[0].shape == (3, 20, 20)
    with pytest.raises(DataError, match="set a resolution"):
        ds[1]


def test_sixteen_bit_cache_keeps_precision(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16)).save(path)
    ds = ImageFolderDataset([path], None)
    assert ds[0][0, 0, 0].item() == pytest.approx(1000 / 65535) and ds._cache[0].dtype == torch.float32
    assert ds[0][0, 0, 0].item() == pytest.approx(1000 / 65535)


def test_load_dataset_folder_split_and_limit(tmp_path):
    root = _image_folder(tmp_path / "set", 30)
    train, test = load_dataset(DataSpec(path=str(root), resolution=8, test_size=5))
    assert len(train) == 25 and len(test) == 5 and not set(train.names) & set(test.names)
    assert train[0].shape == (3, 8, 8)
    small, test2 = load_dataset(DataSpec(path=str(root), resolution=8, test_size=5, limit=7))
    assert len(small) == 7 and set(small.names) <= set(train.names) and test2.names == test.names
    patches, _ = load_dataset(DataSpec(path=str(root), test_size=5, patch=8, patches_per_image=2))
    assert len(patches) == 50 and patches[0].shape == (3, 8, 8)
    _, empty = load_dataset(DataSpec(path=str(root), resolution=8, test_size=0))
    assert len(empty) == 0 and empty.shape == (8, 8)


def test_load_dataset_errors(tmp_path):
    root = _image_folder(tmp_path / "set", 3)
    with pytest.raises(DataError, match="no training images"):
        load_dataset(DataSpec(path=str(root), test_size=3))
    with pytest.raises(DataError, match="cannot split"):
        load_dataset(DataSpec(path=str(root), test_size=10))
    with pytest.raises(DataError, match="data path not found"):
        load_dataset(DataSpec(path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(DataSpec(path=str(tmp_path / "empty")))
    with pytest.raises(DataError, match="modality"):
        load_dataset(DataSpec(path=str(root), modality="video"))


def test_load_dataset_embedded_default():
    train, test = load_dataset(DataSpec(path=None, resolution=16, limit=50))
    assert isinstance(train, InMemoryDataset) and len(train) == 50 and train[0].shape == (3, 16, 16)
    assert len(test) >= 32
    faces, _ = load_dataset(DataSpec(path="embedded-faces", channels=1))
    assert faces[0].shape == (1, 32, 32)


def _wav(path: Path, n: int, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.arange(n) % 200 - 100).astype("<i2").tobytes())


def test_audio_datasets(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    for i in range(4):
        _wav(root / f"c{i}.wav", 1000 + 100 * i)
    ds = AudioFolderDataset(sorted(root.glob("*.wav")), length=256, hop=128)
    assert ds.shape == (256,) and ds.channels == 1 and ds.modality == "audio" and ds.sample_rate == 8000
    assert len(ds) == 6 + 7 + 8 + 9  # floor((T - 256) / 128) + 1 per clip
    assert ds[0].shape == (1, 256) and ds.names[1] == "c0.wav@128"
    train, test = load_dataset(DataSpec(path=str(root), modality="audio", test_size=1, audio_length=256))
    held_out = int(test.names[0][1])  # clip i has 1000 + 100 i samples
    assert len(test) == (1000 + 100 * held_out) // 256 and len(train) + len(test) == 3 + 4 + 4 + 5
    assert {n.split("@")[0] for n in train.names}.isdisjoint({n.split("@")[0] for n in test.names})
    with pytest.raises(DataError, match="shorter than the window"):
        AudioFolderDataset([root / "c0.wav"], length=5000)


def test_preset_for():
    assert preset_for("celeba") == {"center_crop": 178, "test_size": 100}
    assert preset_for("../shared/data/celeba/images")["center_crop"] == 178
    assert preset_for("celeba_hq_1024") == {}
    assert preset_for("imagenette-like") == {"resize_shorter": 200, "center_crop": 178}
    assert preset_for("cifar10") == {"resolution": 32}
    assert preset_for(None) == {} and preset_for("mydata") == {}
    DataSpec(**preset_for("celeba"))  # presets are valid DataSpec keywords


def test_data_root_and_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("METAINR_DATA", raising=False)
    assert data_root() == (Path.cwd() / "../shared/data").resolve()
    monkeypatch.setenv("METAINR_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    (tmp_path / "faces").mkdir()
    assert resolve_data_path("faces") == (tmp_path / "faces").resolve()  # via the data root
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    assert resolve_data_path("local") == (tmp_path / "local").resolve()  # via the cwd
    with pytest.raises(DataError, match="data path not found: nowhere"):
        resolve_data_path("nowhere")


@pytest.mark.skipif(not (data_root() / "celeba" / "images").is_dir(), reason="shared data not present")
def test_real_celeba_preset():
    spec = DataSpec(path="celeba", limit=8, **preset_for("celeba"))
    train, test = load_dataset(spec)
    assert len(train) == 8 and len(test) == 100
    assert train[0].shape == (3, 32, 32) and 0.0 <= test[0].min() and test[0].max() <= 1.0
    assert not set(train.names) & set(test.names)

"""Image decoding, preprocessing and patching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metainr.errors import DataError
from metainr.signals.image import grid_patches, list_image_files, load_image, random_patches
from metainr.signals.paths import data_root


def _save(tmp_path, name, img: Image.Image):
    path = tmp_path / name
    img.save(path)
    return path


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    arr = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    path = _save(tmp_path, "g.png", Image.fromarray(arr, mode="L"))
    t = load_image(path, None)
    assert t.shape == (3, 6, 8) and t.dtype == torch.float32
    expected = torch.from_numpy(arr.astype(np.float32) / 255)
    for c in range(3):
        assert torch.equal(t[c], expected)
    assert load_image(path, None, channels=1).shape == (1, 6, 8)


def test_rgba_is_composited_on_white(tmp_path):
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., :3] = (10, 20, 30)
    arr[:2, :, 3] = 0  # transparent top half
    arr[2:, :, 3] = 255  # opaque bottom half
    t = load_image(_save(tmp_path, "a.png", Image.fromarray(arr, mode="RGBA")), None)
    assert t.shape == (3, 4, 4)
    assert torch.all(t[:, :2] == 1.0)
    assert torch.allclose(t[:, 2, 0], torch.tensor([10, 20, 30]) / 255)


def test_la_half_alpha_blends_with_white(tmp_path):
    arr = np.zeros((2, 2, 2), dtype=np.uint8)
    arr[..., 1] = 128  # black at ~50% alpha
    t = load_image(_save(tmp_path, "la.png", Image.fromarray(arr, mode="LA")), None, channels=1)
    assert t.shape == (1, 2, 2)
    assert torch.allclose(t, torch.full_like(t, 127 / 255), atol=1.5 / 255)


def test_16bit_is_scaled_by_65535(tmp_path):
    arr = np.array([[0, 1, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    t = load_image(_save(tmp_path, "d.png", img), None)
    assert t.shape == (3, 1, 4)
    assert t[0, 0, 3].item() == 1.0 and t[0, 0, 0].item() == 0.0
    assert t[0, 0, 2].item() == pytest.approx(32768 / 65535, abs=1e-7)
    assert t[0, 0, 1].item() == pytest.approx(1 / 65535, abs=1e-9)  # keeps 16-bit precision


def test_16bit_resize_stays_in_range(tmp_path):
    arr = np.zeros((20, 20), dtype=np.uint16)
    arr[:, 10:] = 65535  # a hard edge: bicubic overshoots unless clamped
    t = load_image(_save(tmp_path, "e.png", Image.fromarray(arr)), 8)
    assert t.shape == (3, 8, 8) and t.min() >= 0.0 and t.max() <= 1.0


def test_palette_with_and_without_transparency(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.putpixel((2, 0), 1)
    t = load_image(_save(tmp_path, "p.png", img), None)
    assert t[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and t[:, 0, 1].tolist() == [0.0, 0.0, 1.0]
    img.info["transparency"] = 1  # palette entry 1 (blue) transparent -> white
    path = tmp_path / "pt.png"
    img.save(path, transparency=1)
    t = load_image(path, None)
    assert t[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and t[:, 0, 1].tolist() == [1.0, 1.0, 1.0]


def test_cmyk_is_converted_to_rgb(tmp_path):
    img = Image.new("CMYK", (2, 2), (0, 0, 0, 0))  # no ink = white
    t = load_image(_save(tmp_path, "c.tif", img), None)
    assert t.shape == (3, 2, 2) and torch.all(t == 1.0)


def test_rgb_to_single_channel_uses_luma(tmp_path):
    t = load_image(_save(tmp_path, "r.png", Image.new("RGB", (2, 2), (255, 0, 0))), None, channels=1)
    assert t.shape == (1, 2, 2)
    assert t[0, 0, 0].item() == pytest.approx(0.299, abs=1 / 255)


def test_center_crop_178_keeps_middle_rows(tmp_path):
    # 178 wide x 218 high, each row's value is its index: the crop must be rows 20..197
    arr = np.repeat(np.arange(218, dtype=np.uint8)[:, None], 178, axis=1)
    path = _save(tmp_path, "face.png", Image.fromarray(arr, mode="L").convert("RGB"))
    t = load_image(path, None, center_crop=178)
    assert t.shape == (3, 178, 178)
    assert t[0, 0, 0].item() == pytest.approx(20 / 255)
    assert t[0, -1, 0].item() == pytest.approx(197 / 255)
    assert load_image(path, 32, center_crop=178).shape == (3, 32, 32)


def test_center_crop_larger_than_image_names_file(tmp_path):
    path = _save(tmp_path, "small.png", Image.new("RGB", (10, 12)))
    with pytest.raises(DataError, match="small.png"):
        load_image(path, None, center_crop=20)


def test_resize_shorter_then_center_crop(tmp_path):
    path = _save(tmp_path, "wide.png", Image.new("RGB", (300, 200), (0, 128, 255)))
    t = load_image(path, None, resize_shorter=100, center_crop=90)
    assert t.shape == (3, 90, 90)
    assert torch.allclose(t[:, 45, 45], torch.tensor([0, 128, 255]) / 255, atol=1 / 255)


def test_aspect_crop_modes(tmp_path):
    arr = np.full((32, 64, 3), 255, dtype=np.uint8)
    arr[:, :8] = (255, 0, 0)  # a red stripe at the left edge, outside a centred square
    path = _save(tmp_path, "stripe.png", Image.fromarray(arr))
    centred = load_image(path, 16, crop="center")
    stretched = load_image(path, 16, crop="none")
    assert centred.shape == stretched.shape == (3, 16, 16)
    assert centred[1].min() > 0.95  # no red: green stays high everywhere
    assert stretched[1, :, 0].max() < 0.1  # the stripe survives as the leftmost column
    assert load_image(path, (8, 24)).shape == (3, 8, 24)


def test_truncated_jpeg_raises_with_path(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    full = tmp_path / "full.jpg"
    img.save(full, quality=90)
    data = full.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read image .*cut\.jpg"):
        load_image(cut, 32)


def test_random_bytes_raise_with_path(tmp_path):
    bad = tmp_path / "noise.png"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"cannot read image .*noise\.png"):
        load_image(bad, 32)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg"):
        load_image(empty, 32)


def test_list_image_files(tmp_path):
    (tmp_path / "b").mkdir()
    for p in ["z.png", "a.JPG", "b/c.jpeg"]:
        Image.new("RGB", (2, 2)).save(tmp_path / p, format="PNG")
    (tmp_path / "SOURCE.md").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"")
    files = list_image_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.JPG", "b/c.jpeg", "z.png"]
    assert list_image_files(tmp_path / "z.png") == [tmp_path / "z.png"]
    (tmp_path / "list.txt").write_text("# two files\nz.png\n\nb/c.jpeg\n")
    assert [f.name for f in list_image_files(tmp_path / "list.txt")] == ["z.png", "c.jpeg"]
    (tmp_path / "bad.txt").write_text("missing.png\n")
    with pytest.raises(DataError, match="missing.png"):
        list_image_files(tmp_path / "bad.txt")


def test_empty_or_missing_folder_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no images")
    with pytest.raises(DataError, match="no images found in .*empty"):
        list_image_files(tmp_path / "empty")
    with pytest.raises(DataError, match="data path not found"):
        list_image_files(tmp_path / "nope")


def test_random_patches_are_crops_and_reproducible():
    img = torch.rand(3, 20, 30)
    a = random_patches(img, 8, 5, torch.Generator().manual_seed(0))
    b = random_patches(img, 8, 5, torch.Generator().manual_seed(0))
    assert a.shape == (5, 3, 8, 8) and torch.equal(a, b)
    for p in a:  # every patch is an exact sub-array of the image
        windows = img.unfold(1, 8, 1).unfold(2, 8, 1).permute(1, 2, 0, 3, 4)
        assert (windows == p).flatten(2).all(dim=2).any()
    with pytest.raises(ValueError):
        random_patches(img, 21, 1)


def test_grid_patches_tile_row_major_and_drop_edges():
    img = torch.arange(3 * 10 * 9, dtype=torch.float32).reshape(3, 10, 9)
    tiles = grid_patches(img, 4)
    assert tiles.shape == (4, 3, 4, 4)  # 2 rows x 2 columns; the 2- and 1-pixel edges are dropped
    assert torch.equal(tiles[1], img[:, 0:4, 4:8]) and torch.equal(tiles[2], img[:, 4:8, 0:4])
    assert grid_patches(img, 4, stride=2).shape == (4 * 3, 3, 4, 4)
    assert grid_patches(img, 11).shape == (0, 3, 11, 11)


@pytest.mark.skipif(not (data_root() / "celeba" / "images").is_dir(), reason="shared data not present")
def test_real_celeba_and_imagenet_files():
    files = list_image_files(data_root() / "celeba" / "images")
    t = load_image(files[0], 64, center_crop=178)
    assert t.shape == (3, 64, 64) and 0.0 <= t.min() and t.max() <= 1.0
    imagenet = data_root() / "imagenet_samples"
    if imagenet.is_dir():
        files = list_image_files(imagenet)  # '.JPEG' (upper case) must be listed
        assert files and all(f.suffix.lower() in (".jpeg", ".jpg") for f in files)
        assert load_image(files[0], 32, resize_shorter=200, center_crop=178).shape == (3, 32, 32)

"""Audio decoding (soundfile and the stdlib WAV fallback) and windowing."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from metainr.errors import DataError
from metainr.signals import audio
from metainr.signals.audio import audio_windows, load_audio
from metainr.signals.paths import data_root

BACKENDS = ["soundfile", "wave"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "soundfile":
        if not audio.has_soundfile():
            pytest.skip("soundfile not installed")
    else:
        monkeypatch.setattr(audio, "_sf", None)
    return request.param


def _write_wav(path, frames: np.ndarray, rate: int = 8000, width: int = 2) -> None:
    """frames: (T, channels) integer samples of the given byte width."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 3:
            raw = frames.astype("<i4").reshape(-1, 1).view(np.uint8)[:, :3].tobytes()
        elif width == 1:
            raw = frames.astype(np.uint8).tobytes()
        else:
            raw = frames.astype(f"<i{width}").tobytes()
        w.writeframes(raw)


def test_wav_round_trip(tmp_path, backend):
    samples = np.array([0, 32767, -32768, 16384, -16384], dtype=np.int16)
    path = tmp_path / "clip.wav"
    _write_wav(path, samples[:, None], rate=8000)
    x, rate = load_audio(path)
    assert rate == 8000 and x.shape == (1, 5) and x.dtype == torch.float32
    expected = (samples.astype(np.float64) / 32768 + 1) / 2
    assert np.allclose(x[0].numpy(), expected, atol=1e-6)
    assert x[0, 2].item() == 0.0 and x[0, 0].item() == 0.5


def test_stereo_is_averaged(tmp_path, backend):
    frames = np.array([[16384, -16384], [16384, 16384]], dtype=np.int16)
    path = tmp_path / "stereo.wav"
    _write_wav(path, frames)
    x, _ = load_audio(path)
    assert x.shape == (1, 2)
    assert x[0, 0].item() == pytest.approx(0.5) and x[0, 1].item() == pytest.approx(0.75)


@pytest.mark.parametrize("width, samples, expected", [
    (1, [0, 128, 255], [-1.0, 0.0, 127 / 128]),
    (3, [-(2**23), 0, 2**22], [-1.0, 0.0, 0.5]),
    (4, [-(2**31), 0, 2**30], [-1.0, 0.0, 0.5]),
])
def test_pcm_widths(tmp_path, backend, width, samples, expected):
    path = tmp_path / f"w{width}.wav"
    _write_wav(path, np.array(samples, dtype=np.int64)[:, None], width=width)
    x, _ = load_audio(path)
    assert np.allclose(x[0].numpy(), (np.array(expected) + 1) / 2, atol=1e-6)


def test_corrupt_file_raises_with_path(tmp_path, backend):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00junk" + bytes(range(50)))
    with pytest.raises(DataError, match=r"cannot read audio .*broken\.wav"):
        load_audio(bad)


def test_empty_wav_raises(tmp_path, backend):
    path = tmp_path / "silent.wav"
    _write_wav(path, np.zeros((0, 1), dtype=np.int16))
    with pytest.raises(DataError, match="silent.wav"):
        load_audio(path)


def test_flac(tmp_path, monkeypatch):
    if not audio.has_soundfile():
        pytest.skip("soundfile not installed")
    import soundfile

    samples = np.array([0.0, 0.5, -0.5, -1.0], dtype=np.float64)
    path = tmp_path / "clip.flac"
    soundfile.write(path, samples, 16000, subtype="PCM_16")
    x, rate = load_audio(path)
    assert rate == 16000 and np.allclose(x[0].numpy(), (samples + 1) / 2, atol=1e-4)
    monkeypatch.setattr(audio, "_sf", None)
    with pytest.raises(DataError, match="soundfile"):
        load_audio(path)


def test_audio_windows():
    x = torch.arange(10, dtype=torch.float32)[None]
    w = audio_windows(x, 4)
    assert w.shape == (2, 1, 4) and torch.equal(w[1, 0], torch.tensor([4.0, 5, 6, 7]))
    assert audio_windows(x, 4, hop=2).shape == (4, 1, 4)
    assert audio_windows(x, 11).shape == (0, 1, 11)


@pytest.mark.skipif(not (data_root() / "librispeech").is_dir(), reason="shared data not present")
def test_real_librispeech_and_siren_audio():
    if not audio.has_soundfile():
        pytest.skip("FLAC needs soundfile")
    files = audio.list_audio_files(data_root() / "librispeech")
    x, rate = load_audio(files[0])
    assert rate == 16000 and x.shape[0] == 1 and x.shape[1] > 16000
    assert 0.0 <= x.min() and x.max() <= 1.0
    siren = data_root() / "siren_audio"
    if siren.is_dir():
        x, rate = load_audio(audio.list_audio_files(siren)[0])  # float WAV
        assert rate == 44100 and 0.0 <= x.min() and x.max() <= 1.0

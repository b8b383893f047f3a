"""Audio files -> tensors (1, T) in [0, 1] (samples in [-1, 1] mapped by (x + 1) / 2), and windows.

Reads WAV and FLAC with ``soundfile`` (libsndfile) when it is installed; without it only PCM WAV
(8/16/24/32-bit integer) is read, through the standard library's ``wave``. Multi-channel audio is
averaged to mono. Float files can hold samples outside [-1, 1]; they are clipped to it.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch

from metainr.errors import DataError
from metainr.signals.paths import list_files

try:  # optional: needed for FLAC and float WAV
    import soundfile as _sf
except (ImportError, OSError):  # OSError: the wheel is present but libsndfile failed to load
    _sf = None

AUDIO_EXTENSIONS = (".wav", ".flac")


def has_soundfile() -> bool:
    return _sf is not None


def list_audio_files(path: str | Path) -> list[Path]:
    """WAV/FLAC files from a folder (recursive, sorted), a single file, or a ``.txt`` list of paths."""
    return list_files(path, AUDIO_EXTENSIONS, kind="audio files")


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Load a clip as (float32 tensor (1, T) in [0, 1], sample rate in Hz)."""
    path = Path(path)
    if _sf is not None:
        try:
            data, rate = _sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
        except (RuntimeError, OSError, ValueError, TypeError) as e:  # LibsndfileError is a RuntimeError
            raise DataError(f"cannot read audio {path}: {e}") from e
    elif path.suffix.lower() == ".wav":
        data, rate = _read_pcm_wav(path)
    else:
        raise DataError(f"cannot read audio {path}: {path.suffix} needs the 'soundfile' package "
                        "(pip install soundfile)")
    if data.shape[0] == 0:
        raise DataError(f"cannot read audio {path}: no samples")
    mono = data.mean(axis=1, dtype=np.float64)
    if not np.isfinite(mono).all():
        raise DataError(f"cannot read audio {path}: non-finite samples")
    values = (np.clip(mono, -1.0, 1.0) + 1.0) / 2.0
    return torch.from_numpy(values.astype(np.float32)).unsqueeze(0), int(rate)


def _read_pcm_wav(path: Path) -> tuple[np.ndarray, int]:
    """Integer PCM WAV via the stdlib -> (frames, channels) float in [-1, 1), sample rate."""
    try:
        with wave.open(str(path), "rb") as w:
            n_channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as e:
        hint = " (float WAV needs the 'soundfile' package)" if "format: 3" in str(e) else ""
        raise DataError(f"cannot read audio {path}: {e}{hint}") from e
    frame = n_channels * width
    raw = raw[: len(raw) // frame * frame]  # a truncated file can end mid-frame
    if width == 1:  # 8-bit WAV is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float64) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits
        x = ints.astype(np.float64) / 8388608.0
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0
    else:
        raise DataError(f"cannot read audio {path}: unsupported sample width {width} bytes")
    return x.reshape(-1, n_channels), rate


def audio_windows(audio: torch.Tensor, length: int, hop: int | None = None) -> torch.Tensor:
    """Windows of ``length`` samples every ``hop`` (default: ``length``) from ``audio`` (C, T).

    Returns (n, C, length); a tail shorter than ``length`` is dropped, so a short clip gives n = 0.
    """
    hop = length if hop is None else hop
    if length <= 0 or hop <= 0:
        raise ValueError(f"length and hop must be positive, got {length}, {hop}")
    c, t = audio.shape
    if t < length:
        return audio.new_empty((0, c, length))
    return audio.unfold(1, length, hop).permute(1, 0, 2).contiguous()

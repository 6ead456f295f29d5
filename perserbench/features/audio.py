"""Audio input for every upstream: soundfile read → mono float32 → torchaudio resample to 16 kHz.

SSL upstreams (WavLM, HuBERT, wav2vec 2.0) were all trained on 16 kHz mono audio, and the
filterbank baseline uses the same rate so the two see identical signals. Unreadable,
truncated or empty files raise one :class:`PerserbenchError` naming the file, because a
silently shortened clip would yield plausible but wrong features.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from perserbench.errors import PerserbenchError

TARGET_SR = 16_000


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    samplerate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.samplerate if self.samplerate else 0.0


def _wav_truncation(path: Path) -> str | None:
    """For a RIFF/WAVE file, compare the ``data`` chunk's declared size with the bytes on disk.

    libsndfile reads a truncated WAV without complaint (it returns the frames that are
    there), so a clip cut short by an interrupted copy would pass unnoticed; this check
    catches it from the header alone.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # not plain RIFF/WAVE (RF64, other formats): libsndfile's own checks apply
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if length in (0, 0xFFFFFFFF):  # streamed/unknown length
                    return None
                available = size - (offset + 8)
                if available < length:
                    return f"its data chunk declares {length} bytes but only {available} are present"
                return None
            offset += 8 + length + (length & 1)
    return None


def audio_info(path: str | Path) -> AudioInfo:
    """Header information, after checking that the file is readable and not truncated."""
    path = Path(path)
    if not path.is_file():
        raise PerserbenchError(f"audio file {path} not found")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise PerserbenchError(f"audio file {path} is unreadable or corrupt ({exc}); replace it with the "
                               "original from the corpus release") from None
    problem = _wav_truncation(path)
    if problem:
        raise PerserbenchError(f"audio file {path} is truncated: {problem}; replace it with the original "
                               "from the corpus release")
    if info.frames <= 0:
        raise PerserbenchError(f"audio file {path} is empty (0 samples)")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def load_audio(path: str | Path, target_sr: int = TARGET_SR) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``target_sr`` Hz (channels averaged)."""
    info = audio_info(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise PerserbenchError(f"audio file {path} could not be decoded ({exc}); replace it with the "
                               "original from the corpus release") from None
    if data.shape[0] < info.frames:
        raise PerserbenchError(f"audio file {path} is truncated: read {data.shape[0]} of {info.frames} samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise PerserbenchError(f"audio file {path} contains NaN or infinite samples")
    if sr != target_sr:
        mono = AF.resample(torch.from_numpy(np.ascontiguousarray(mono)), sr, target_sr).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)

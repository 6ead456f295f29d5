"""Upstreams: audio → utterance-level features ``[layers, dim]``.

* ``fbank``: log-Mel filterbank statistics through torchaudio's Kaldi-compatible ``fbank``
  (80 bins, 25 ms windows, 10 ms hop, no dither): per-bin mean and standard deviation over
  frames, so ``L = 1, D = 160``. A cheap, download-free baseline.
* any ``transformers`` speech SSL checkpoint (WavLM, HuBERT, wav2vec 2.0, ...) named by hub id
  or local directory, loaded with ``AutoFeatureExtractor`` + ``AutoModel``: every hidden
  state (the CNN/projection output plus each transformer layer, ``L = num_hidden_layers + 1``)
  mean-pooled over the *valid* frames of each utterance, so padding in a batch never leaks
  into a feature. Methods may learn a weighted sum over those layers.

:func:`forward_count` counts model forward passes in this process; the feature cache's
promise that an unchanged second extraction runs no forward at all is asserted with it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from perserbench.errors import PerserbenchError
from perserbench.features.audio import TARGET_SR

_FORWARDS = 0
FBANK_BINS = 80
_MIN_SAMPLES = 400  # one 25 ms window at 16 kHz


def forward_count() -> int:
    """Number of upstream forward passes (batches) run in this process so far."""
    return _FORWARDS


class Upstream(ABC):
    """An audio encoder. ``embed`` maps a batch of 16 kHz mono waveforms to ``[B, L, D]``."""

    name: str
    revision: str
    num_layers: int
    dim: int

    def embed(self, waves: list[np.ndarray]) -> np.ndarray:
        global _FORWARDS
        _FORWARDS += 1
        out = self._forward(waves)
        if out.shape != (len(waves), self.num_layers, self.dim):
            raise RuntimeError(f"upstream {self.name} returned {out.shape}, expected "
                               f"{(len(waves), self.num_layers, self.dim)}")
        return out.astype(np.float32, copy=False)

    @abstractmethod
    def _forward(self, waves: list[np.ndarray]) -> np.ndarray: ...


class FbankUpstream(Upstream):
    """Mean and std of 80 log-Mel filterbank energies (Kaldi conventions, int16 scale)."""

    def __init__(self) -> None:
        import torchaudio

        self.name = "fbank"
        self.revision = f"kaldi-fbank{FBANK_BINS}-25ms-10ms-meanstd/torchaudio-{torchaudio.__version__.split('+')[0]}"
        self.num_layers, self.dim = 1, 2 * FBANK_BINS

    def _forward(self, waves: list[np.ndarray]) -> np.ndarray:
        from torchaudio.compliance import kaldi

        out = np.empty((len(waves), 1, self.dim), dtype=np.float32)
        for i, wave in enumerate(waves):
            x = torch.from_numpy(np.asarray(wave, dtype=np.float32))
            if x.numel() < _MIN_SAMPLES:
                x = torch.nn.functional.pad(x, (0, _MIN_SAMPLES - x.numel()))
            feats = kaldi.fbank(x[None] * 32768.0, num_mel_bins=FBANK_BINS, sample_frequency=TARGET_SR,
                                frame_length=25.0, frame_shift=10.0, dither=0.0)
            out[i, 0, :FBANK_BINS] = feats.mean(0).numpy()
            out[i, 0, FBANK_BINS:] = feats.std(0, unbiased=False).numpy()
        return out


def is_local(name: str) -> bool:
    """A name is a local checkpoint when it exists as a directory or is written like a path."""
    return Path(name).expanduser().is_dir() or name.startswith(("/", "./", "../", "~")) or os.sep + os.sep in name


def local_revision(directory: Path) -> str:
    """Content hash of a local checkpoint's configs plus its weight files' sizes and mtimes
    (cheap: weights are not read), so replacing the weights invalidates cached features."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.suffix == ".json":
            digest.update(path.name.encode() + path.read_bytes())
        elif path.suffix in (".safetensors", ".bin", ".pt", ".ckpt", ".h5", ".msgpack"):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return "local-" + digest.hexdigest()[:16]


def canonical_name(name: str) -> str:
    """How the cache records an upstream: ``fbank``, a hub id as given, a local directory as
    its absolute path (so ``./m`` and ``/abs/m`` are the same upstream)."""
    if name == "fbank":
        return name
    if is_local(name):
        return str(Path(name).expanduser().resolve())
    return name


def cheap_revision(name: str) -> str | None:
    """The upstream's revision without loading a model: fbank's parameters, a local
    directory's content hash; ``None`` for a hub id (only known after loading)."""
    if name == "fbank":
        return FbankUpstream().revision
    if is_local(name):
        directory = Path(name).expanduser().resolve()
        return local_revision(directory) if directory.is_dir() else None
    return None


class HFUpstream(Upstream):
    """A transformers speech SSL model: all hidden layers, mean-pooled over valid frames."""

    def __init__(self, name: str, device: str = "cpu", fp16: bool = False, revision: str | None = None) -> None:
        from transformers import AutoFeatureExtractor, AutoModel

        local = is_local(name)
        source = str(Path(name).expanduser().resolve()) if local else name
        if local and not Path(source).is_dir():
            raise PerserbenchError(f"upstream directory {source} does not exist")
        if local and revision is not None:
            raise PerserbenchError("--revision applies to hub ids, not to a local upstream directory")
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(source, revision=revision)
            model = AutoModel.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as exc:
            if local:
                raise PerserbenchError(f"cannot load upstream from {source}: {str(exc).splitlines()[0]}; the folder "
                                       "needs config.json, preprocessor_config.json and the weights "
                                       "(save_pretrained output)") from None
            offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
            why = "offline mode (HF_HUB_OFFLINE) is set" if offline else "it could not be downloaded"
            raise PerserbenchError(
                f"cannot load upstream {name!r} from the Hugging Face hub: {why} and it is not in the local "
                f"cache; download it on a machine with network access (e.g. `huggingface-cli download {name} "
                f"--local-dir DIR`) and pass that local directory: --upstream DIR"
            ) from None
        if not hasattr(model, "_get_feat_extract_output_lengths"):
            raise PerserbenchError(f"upstream {name!r} ({type(model).__name__}) is not a speech SSL model "
                                   "(WavLM, HuBERT, wav2vec 2.0, ...)")
        if fp16 and not str(device).startswith("cuda"):
            raise PerserbenchError("--fp16 needs a CUDA device (half precision on CPU is slow and inexact)")
        self.name = source
        self.device = torch.device(device)
        self.dtype = torch.float16 if fp16 else torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        config = model.config
        self.num_layers, self.dim = int(config.num_hidden_layers) + 1, int(config.hidden_size)
        self.revision = local_revision(Path(source)) if local else str(getattr(config, "_commit_hash", None) or "unknown")
        self.model_type = str(getattr(config, "model_type", type(model).__name__))

    @torch.inference_mode()
    def _forward(self, waves: list[np.ndarray]) -> np.ndarray:
        inputs = self.extractor([np.asarray(w, dtype=np.float32) for w in waves], sampling_rate=TARGET_SR,
                                padding=True, return_attention_mask=True, return_tensors="pt")
        values = inputs["input_values"].to(self.device, self.dtype)
        sample_mask = inputs["attention_mask"].to(self.device)
        kwargs = {"input_values": values, "output_hidden_states": True}
        # Checkpoints trained without an attention mask (wav2vec 2.0 base) expect zero padding
        # and no mask; the pooling below still ignores their padded frames.
        if getattr(self.extractor, "return_attention_mask", True):
            kwargs["attention_mask"] = sample_mask
        with warnings.catch_warnings():
            # WavLM's own attention mixes mask types inside transformers; torch deprecates that,
            # and nothing a user passes can change it.
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            hidden = torch.stack(self.model(**kwargs).hidden_states, dim=1).float()  # [B, L, T, D]
        frames = self.model._get_feat_extract_output_lengths(sample_mask.sum(-1)).clamp(min=1, max=hidden.shape[2])
        valid = (torch.arange(hidden.shape[2], device=hidden.device)[None, :] < frames[:, None]).float()
        pooled = (hidden * valid[:, None, :, None]).sum(2) / frames[:, None, None].float()
        return pooled.cpu().numpy()


def resolve_upstream(name: str, device: str | None = None, fp16: bool = False,
                     revision: str | None = None) -> Upstream:
    """Build the upstream called ``name`` (``fbank``, a hub id or a local directory)."""
    if name == "fbank":
        if fp16:
            raise PerserbenchError("--fp16 applies to SSL upstreams on CUDA, not to fbank")
        if revision is not None:
            raise PerserbenchError("--revision applies to hub ids, not to fbank")
        return FbankUpstream()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PerserbenchError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return HFUpstream(name, device, fp16, revision)


def describe(upstream: Upstream) -> dict[str, object]:
    """What the cache manifest records about an upstream."""
    return {"name": upstream.name, "revision": upstream.revision, "layers": upstream.num_layers,
            "dim": upstream.dim, "type": getattr(upstream, "model_type", type(upstream).__name__)}


__all__ = ["FbankUpstream", "HFUpstream", "Upstream", "canonical_name", "cheap_revision", "describe",
           "forward_count", "is_local", "local_revision", "resolve_upstream"]

"""The video's own audio for the codec: its packets, copied unchanged, and log-mel features.

The stream carries the audio *packets* exactly as the source had them (no re-encoding: the sound
the receiver hears is the sender's, byte for byte), together with the codec parameters needed to
decode and remux them. The same packets, decoded with `AudioDecoder`, give the log-mel features
that condition the model, so sender and receiver compute identical features from identical bytes.

Features: each video frame ``i`` covers the audio samples of ``[i / fps, (i + 1) / fps)``; its
feature is the mean mel power of 512-sample Hann windows inside that span, log10, scaled to about
[-1, 1]. A frame's feature depends on its own samples only, so encoding chunk by chunk (a live
input) gives the same features as encoding the whole file.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import av
import numpy as np

from veil.media.audio import AudioPacket, AudioParams, open_decoder, packet_to_av

__all__ = ["AudioDecoder", "mel_filterbank", "frame_features"]

WINDOW = 512
LOG_FLOOR = 1e-10


class AudioDecoder:
    """Decodes packets to mono float PCM, keeping the samples' place on the timeline.

    The PCM buffer starts at time ``start`` (seconds, the first decoded frame's pts); samples are
    appended as packets arrive, so features of early frames are ready before the input ends.
    """

    def __init__(self, params: AudioParams) -> None:
        self.params = params
        self.ctx = open_decoder(params)
        self.start: Fraction | None = None
        self._chunks: list[np.ndarray] = []
        self._pcm = np.zeros(0, np.float32)

    def push(self, packet: AudioPacket) -> None:
        for frame in self.ctx.decode(packet_to_av(packet, self.params.time_base)):
            self._append(frame)

    def flush(self) -> None:
        for frame in self.ctx.decode(None):
            self._append(frame)

    def _append(self, frame: av.AudioFrame) -> None:
        if self.start is None:
            self.start = Fraction(frame.pts or 0) * self.params.time_base if frame.pts is not None else Fraction(0)
        raw = frame.to_ndarray()
        scale = float(np.iinfo(raw.dtype).max + 1) if raw.dtype.kind in "iu" else 1.0
        pcm = raw.astype(np.float32) / scale
        if pcm.ndim == 2 and pcm.shape[0] != 1 and not frame.format.is_planar:
            pcm = pcm.reshape(-1, len(frame.layout.channels)).T  # packed: (1, n*ch) -> (ch, n)
        self._chunks.append(pcm.reshape(pcm.shape[0], -1).mean(axis=0))

    @property
    def pcm(self) -> np.ndarray:
        """Shape: (N,) float32 mono, from time ``start`` on."""
        if self._chunks:
            self._pcm = np.concatenate([self._pcm, *self._chunks])
            self._chunks = []
        return self._pcm

    def end_time(self) -> Fraction:
        """Seconds up to which samples are known."""
        return (self.start or Fraction(0)) + Fraction(len(self.pcm), self.params.sample_rate)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_mels: int, n_fft: int = WINDOW) -> np.ndarray:
    """Triangular mel filters (HTK mel scale).

    Shape: -> (n_mels, n_fft // 2 + 1) float32
    """
    def to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(0, to_mel(np.array(sample_rate / 2)), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None]) / np.maximum(hi - mid, 1e-9)
    return np.clip(np.minimum(up, down), 0, None).astype(np.float32)


def _segment_feature(segment: np.ndarray, filters: np.ndarray) -> np.ndarray:
    n = max(1, len(segment) // WINDOW)
    padded = np.zeros(n * WINDOW, np.float32)
    padded[: min(len(segment), n * WINDOW)] = segment[: n * WINDOW]
    frames = padded.reshape(n, WINDOW) * np.hanning(WINDOW).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = (power @ filters.T).mean(axis=0)
    return ((np.log10(mel + LOG_FLOOR) + 5.0) / 5.0).astype(np.float32)


def frame_features(pcm: np.ndarray, sample_rate: int, pcm_start: Fraction, fps: Fraction,
                   first_frame: int, n_frames: int, n_mels: int) -> np.ndarray:
    """Log-mel feature of each video frame from the samples of its time span.

    Frames whose span has no samples (no audio, or before the audio starts) get the silence
    feature, the same on both ends of the stream.

    Shape:
        pcm: (N,) float32 mono starting at ``pcm_start`` seconds -> (n_frames, n_mels) float32
    """
    filters = mel_filterbank(sample_rate, n_mels)
    out = np.empty((n_frames, n_mels), np.float32)
    for k in range(n_frames):
        i = first_frame + k
        a = round((Fraction(i) / fps - pcm_start) * sample_rate)
        b = round((Fraction(i + 1) / fps - pcm_start) * sample_rate)
        out[k] = _segment_feature(pcm[max(a, 0):max(b, 0)], filters)
    return out

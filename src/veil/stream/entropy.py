"""Lossless coding of a chunk's code indices.

Choice (the paper leaves it open): a *transform* that exposes the temporal redundancy of the
codes, followed by LZMA (xz, in the standard library). The codes arrive scrambled
(`veil.stream.keying`): the cells of the grid are in a keyed random order, so neighbouring cells
tell nothing about each other and the coder models what is left, time and stages:

* the first latent frame of the chunk, stage by stage;
* for each later frame and each cell, one byte whose bit ``q`` says that stage ``q`` changed
  against the previous frame (the stages of a cell change together: coding the pattern jointly
  beats one bit mask per stage);
* the new indices of the changed cells, stage by stage.

LZMA runs with no literal context (``lc=0``, ``lp=0``, ``pb=0``): after the scrambling the bytes
are close to independent, and the default context (the previous byte's top bits) only splits the
statistics; with it off LZMA's adaptive range coder comes within a few percent of the zeroth-order
entropy of these three streams. An arithmetic coder driven by a learned prior would squeeze more,
but this runs at C speed on two CPU cores and needs no model of its own on either end; its cost
is measured against the zeroth-order entropy of the indices (`empirical_bits`) in
bench/codec.py. Chunks are coded independently, so a receiver can start at any chunk and a
damaged chunk does not spoil the next one.

Layout: ``method u8 | L u16 | h u16 | w u16 | Q u8 | K u32 | lzma stream`` (method 3, the one
above; methods 1 and 2 were the per-stage transforms of stream format version 1).
"""

from __future__ import annotations

import lzma
import struct

import numpy as np

__all__ = ["encode_indices", "decode_indices", "empirical_bits", "EntropyError"]

_HEAD = struct.Struct("<BHHHBI")
CELLS = 3
MAX_STAGES = 16  # the change pattern of a cell fits in a u16
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "lc": 0, "lp": 0, "pb": 0}]


class EntropyError(ValueError):
    """A coded chunk does not decode to indices of the declared shape."""


def _symbol_dtype(alphabet: int) -> np.dtype:
    return np.dtype(np.uint8) if alphabet <= 256 else np.dtype("<u2")


def _planes(values: np.ndarray, dtype: np.dtype) -> bytes:
    # Byte planes (all low bytes, then all high bytes) keep LZMA's matches byte-aligned.
    v = values.astype(dtype)
    return v.tobytes() if dtype.itemsize == 1 else v.view(np.uint8).reshape(-1, 2).T.tobytes()


def _unplanes(data: bytes, n: int, dtype: np.dtype) -> np.ndarray:
    if dtype.itemsize == 1:
        return np.frombuffer(data, np.uint8, n).astype(np.int64)
    b = np.frombuffer(data, np.uint8, 2 * n).reshape(2, n)
    return (b[0].astype(np.int64) | (b[1].astype(np.int64) << 8))


def encode_indices(indices: np.ndarray, codebook_size: int) -> bytes:
    """Code indices losslessly.

    Shape:
        indices: (L, h, w, Q) integers in [0, codebook_size), Q <= 16 -> bytes
    """
    L, h, w, q = indices.shape
    if indices.size and (indices.min() < 0 or indices.max() >= codebook_size):
        raise ValueError(f"indices must lie in [0, {codebook_size})")
    if not 0 < q <= MAX_STAGES or L == 0:
        raise ValueError(f"need at least one latent frame and 1 to {MAX_STAGES} stages, got shape {indices.shape}")
    seq = indices.reshape(L, h * w, q).astype(np.int64)
    changed = seq[1:] != seq[:-1]  # (L-1, n, Q)
    pattern = (changed << np.arange(q)).sum(-1)  # (L-1, n)
    values = np.concatenate([seq[1:, :, s][changed[..., s]] for s in range(q)])
    raw = (_planes(seq[0].T.ravel(), _symbol_dtype(codebook_size)) + _planes(pattern.ravel(), _symbol_dtype(1 << q))
           + _planes(values, _symbol_dtype(codebook_size)))
    return _HEAD.pack(CELLS, L, h, w, q, codebook_size) + lzma.compress(raw, lzma.FORMAT_RAW, filters=_FILTERS)


def decode_indices(data: bytes, expect: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Inverse of `encode_indices`. Shape: -> (L, h, w, Q) int64.

    `expect`: the shape the caller needs; a chunk that declares another is refused before it is
    decompressed, and decompression stops at the most bytes that shape can take (a crafted chunk
    cannot expand into more memory than its frames need).
    """
    try:
        method, L, h, w, q, k = _HEAD.unpack_from(data)
    except struct.error as exc:
        raise EntropyError(f"coded indices are damaged: {exc}") from exc
    if method != CELLS or not 0 < q <= MAX_STAGES or L == 0 or k == 0:
        raise EntropyError(f"coded indices are damaged: method {method}, {L} frames, {q} stages, {k} codes")
    if expect is not None and (L, h, w, q) != tuple(expect):
        raise EntropyError(f"codes of shape {(L, h, w, q)}, expected {tuple(expect)}")
    n = h * w
    dv, dp = _symbol_dtype(k), _symbol_dtype(1 << q)
    most = q * n * dv.itemsize + (L - 1) * n * (dp.itemsize + q * dv.itemsize)
    try:
        decompressor = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_FILTERS)
        raw = decompressor.decompress(data[_HEAD.size:], max_length=most + 1)
    except lzma.LZMAError as exc:
        raise EntropyError(f"coded indices are damaged: {exc}") from exc
    if len(raw) > most:
        raise EntropyError("coded indices are damaged: they decompress to more than their shape holds")
    first_len, pattern_len = q * n * dv.itemsize, (L - 1) * n * dp.itemsize
    if len(raw) < first_len + pattern_len:
        raise EntropyError("coded indices are damaged: too short")
    seq = np.empty((L, n, q), np.int64)
    seq[0] = _unplanes(raw[:first_len], q * n, dv).reshape(q, n).T
    pattern = _unplanes(raw[first_len:first_len + pattern_len], (L - 1) * n, dp).reshape(L - 1, n)
    if pattern.size and pattern.max() >= 1 << q:
        raise EntropyError("coded indices are damaged: a change pattern names a stage that does not exist")
    changed = ((pattern[..., None] >> np.arange(q)) & 1).astype(bool)  # (L-1, n, Q)
    rest = raw[first_len + pattern_len:]
    total = int(changed.sum())
    if len(rest) != total * dv.itemsize:
        raise EntropyError("coded indices are damaged: wrong length")
    values = _unplanes(rest, total, dv)
    counts = np.cumsum([0] + [int(changed[..., s].sum()) for s in range(q)])
    for s in range(q):
        body = np.zeros((L - 1, n), np.int64)
        body[changed[..., s]] = values[counts[s]:counts[s + 1]]
        for t in range(1, L):
            seq[t, :, s] = np.where(changed[t - 1, :, s], body[t - 1], seq[t - 1, :, s])
    if seq.size and seq.max() >= k:
        raise EntropyError("coded indices are damaged: an index exceeds the codebook")
    return seq.reshape(L, h, w, q)


def empirical_bits(indices: np.ndarray, codebook_size: int) -> float:
    """Zeroth-order entropy of the indices in bits (per stage histogram), a reference for the coder."""
    total = 0.0
    for stage in np.moveaxis(indices, -1, 0):
        counts = np.bincount(stage.ravel(), minlength=codebook_size).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        total += float(-(counts[counts > 0] * np.log2(p)).sum())
    return total

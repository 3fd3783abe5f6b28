"""Lossless coding of a chunk's code indices.

Choice (the paper leaves it open): a *transform* that exposes the temporal redundancy of the
codes, followed by LZMA (xz, in the standard library). Per quantiser stage, each latent frame
after the first of a chunk is coded against the previous one in one of two ways, whichever is
smaller for this chunk:

* ``same``: 0 where the index equals the previous frame's, else index + 1 (an alphabet of K + 1);
* ``mask``: a packed bit mask of the positions that changed, then only the changed indices.

LZMA's adaptive range coder with its context model then codes the bytes. An arithmetic coder
driven by a learned prior would squeeze a little more, but this runs at C speed on two CPU cores,
needs no model of its own on either end, and its cost is measured against the zeroth-order
entropy of the indices (`empirical_bits`) in bench/codec.py. Chunks are coded independently, so
a receiver can start at any chunk and a damaged chunk does not spoil the next one.

Layout: ``method u8 | L u16 | h u16 | w u16 | Q u8 | K u32 | lzma stream``.
"""

from __future__ import annotations

import lzma
import struct

import numpy as np

__all__ = ["encode_indices", "decode_indices", "empirical_bits", "EntropyError"]

_HEAD = struct.Struct("<BHHHBI")
SAME, MASK = 1, 2
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]


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


def _transform_same(seq: np.ndarray, k: int) -> bytes:
    """Shape: seq (Q, L, h*w) -> bytes."""
    sym = seq.copy()
    changed = seq[:, 1:] != seq[:, :-1]
    sym[:, 1:] = np.where(changed, seq[:, 1:] + 1, 0)
    first = _planes(seq[:, :1].ravel(), _symbol_dtype(k))
    return first + _planes(sym[:, 1:].ravel(), _symbol_dtype(k + 1))


def _transform_mask(seq: np.ndarray, k: int) -> bytes:
    changed = seq[:, 1:] != seq[:, :-1]
    return (_planes(seq[:, :1].ravel(), _symbol_dtype(k)) + np.packbits(changed.ravel()).tobytes()
            + _planes(seq[:, 1:][changed], _symbol_dtype(k)))


def encode_indices(indices: np.ndarray, codebook_size: int) -> bytes:
    """Code indices losslessly.

    Shape:
        indices: (L, h, w, Q) integers in [0, codebook_size) -> bytes
    """
    L, h, w, q = indices.shape
    if indices.size and (indices.min() < 0 or indices.max() >= codebook_size):
        raise ValueError(f"indices must lie in [0, {codebook_size})")
    seq = np.ascontiguousarray(indices.reshape(L, h * w, q).transpose(2, 0, 1)).astype(np.int64)
    best = b""
    for method, transform in ((SAME, _transform_same), (MASK, _transform_mask)):
        coded = _HEAD.pack(method, L, h, w, q, codebook_size) + lzma.compress(
            transform(seq, codebook_size), lzma.FORMAT_RAW, filters=_FILTERS)
        if not best or len(coded) < len(best):
            best = coded
    return best


def decode_indices(data: bytes) -> np.ndarray:
    """Inverse of `encode_indices`. Shape: -> (L, h, w, Q) int64."""
    try:
        method, L, h, w, q, k = _HEAD.unpack_from(data)
        raw = lzma.decompress(data[_HEAD.size:], lzma.FORMAT_RAW, filters=_FILTERS)
    except (struct.error, lzma.LZMAError) as exc:
        raise EntropyError(f"coded indices are damaged: {exc}") from exc
    n = h * w
    d0, d1 = _symbol_dtype(k), _symbol_dtype(k + 1)
    first_len = q * n * d0.itemsize
    if method not in (SAME, MASK) or len(raw) < first_len:
        raise EntropyError("coded indices are damaged: wrong method or too short")
    seq = np.empty((q, L, n), np.int64)
    seq[:, 0] = _unplanes(raw[:first_len], q * n, d0).reshape(q, n)
    rest = raw[first_len:]
    m = q * (L - 1) * n
    if method == SAME:
        if len(rest) != m * d1.itemsize:
            raise EntropyError("coded indices are damaged: wrong length")
        sym = _unplanes(rest, m, d1).reshape(q, L - 1, n)
        for t in range(1, L):
            s = sym[:, t - 1]
            seq[:, t] = np.where(s == 0, seq[:, t - 1], s - 1)
    else:
        mask_len = (m + 7) // 8
        changed = np.unpackbits(np.frombuffer(rest[:mask_len], np.uint8))[:m].astype(bool).reshape(q, L - 1, n)
        values = rest[mask_len:]
        if len(values) != int(changed.sum()) * d0.itemsize:
            raise EntropyError("coded indices are damaged: wrong length")
        new = _unplanes(values, int(changed.sum()), d0)
        body = np.zeros((q, L - 1, n), np.int64)
        body[changed] = new
        for t in range(1, L):
            seq[:, t] = np.where(changed[:, t - 1], body[:, t - 1], seq[:, t - 1])
    if seq.size and seq.max() >= k:
        raise EntropyError("coded indices are damaged: an index exceeds the codebook")
    return seq.transpose(1, 2, 0).reshape(L, h, w, q)


def empirical_bits(indices: np.ndarray, codebook_size: int) -> float:
    """Zeroth-order entropy of the indices in bits (per stage histogram), a reference for the coder."""
    total = 0.0
    for stage in np.moveaxis(indices, -1, 0):
        counts = np.bincount(stage.ravel(), minlength=codebook_size).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        total += float(-(counts[counts > 0] * np.log2(p)).sum())
    return total

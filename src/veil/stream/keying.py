"""The audio-keyed scrambling of the codes: the paper's non-patterned noise on what travels.

For each chunk, the bytes of the audio packets sent with it, the model's ``scramble_seed`` and the
chunk's number seed three things:

* a permutation of each quantiser stage's code alphabet (``values``): the sender sends
  ``perm[q][index]``;
* a permutation of the positions of the code grid (``positions``): the code sent at grid cell
  ``i`` (row-major) is the one the model put at cell ``positions[i]``, the same for every stage
  and every latent frame of the chunk;
* an offset per stage and sent cell (``offsets``), drawn uniformly from the alphabet and added
  modulo its size: the index sent at cell ``i`` of stage ``q`` is
  ``(perm[q][index] + offsets[q, i]) % K``.

The receiver, holding the same model and the same audio, inverts all three. Without the audio
(or with other audio) it looks up the wrong codebook entries at the wrong places and decodes
noise; the benchmark measures this (wrong-audio PSNR).

Why positions too: permuting the alphabet alone keeps *where* codes are equal or differ, and a
code-index map is a posterised picture of the scene at 1/4 resolution: with only the alphabet
permuted, the rendered transmitted codes showed the room and the outline of the head, and MTCNN
found faces in them (bench/results/codec.md, before format version 2). With the grid permuted too,
each transmitted frame is the chunk's codes in a keyed random order: no shape survives, only the
histogram of the codes. The price is the spatial redundancy the entropy coder can no longer see
(measured in bench/codec.py); the temporal redundancy stays, because both permutations are
constant within a chunk: a cell that keeps its code from one latent frame to the next still does
after scrambling. What the chunk-constant order still shows is *how many* cells change between
frames (a measure of motion, as in any compressed stream).

Why offsets too (format version 3): permutations keep the *histogram* of a frame's codes, and
the codes are far from uniform (a few entries of the first stage draw most of a scene). Rendered
as pictures, such frames are noise of a few dominant colours, in which MTCNN finds a face about
once in 100 pictures, and none in codes drawn uniformly at random (the two reference rows of
bench/codec.py; format version 2 sent the former). An offset drawn uniformly for each cell is a
one-time pad on that cell's index: whatever the codes, every transmitted frame is distributed
exactly like uniformly random codes. Being constant within the chunk, the offsets keep a cell that keeps its code
unchanged, so the temporal redundancy the entropy coder uses survives; what they cost is the
gap between the codes' entropy and ``log2 K`` on the first frame of a chunk and on the codes
that change (measured in bench/codec.py).

Why bytes and not the log-mel features: the key must be identical on both ends, bit for bit;
compressed packets are copied exactly, float features need not be on another machine. The
features still condition the networks (FiLM, `veil.stream.model`).

This is obfuscation, not encryption: whoever has the model file and the stream (which carries the
audio) can decode. Confidentiality comes from ``--key`` (AES-GCM, `veil.stream.format`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["Scramble", "chunk_key", "chunk_scramble", "scramble", "unscramble"]


@dataclass(frozen=True)
class Scramble:
    """One chunk's keyed permutations.

    Shape: values (Q, K), each row a permutation of range(K); positions (h * w,), a permutation
    of the grid cells in row-major order; offsets (Q, h * w), each in range(K), by sent cell.
    """

    values: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray


def chunk_key(scramble_seed: int, chunk_index: int, audio_payloads: Iterable[bytes]) -> bytes:
    """A 32-byte seed from the model secret, the chunk's number and the chunk's audio bytes."""
    h = hashlib.sha256(b"veil-scramble/3\x00" + struct.pack("<QQ", scramble_seed & (2**64 - 1), chunk_index))
    for payload in audio_payloads:
        h.update(struct.pack("<I", len(payload)))
        h.update(payload)
    return h.digest()


def chunk_scramble(key: bytes, num_quantizers: int, codebook_size: int, grid: tuple[int, int]) -> Scramble:
    """The permutations of one chunk whose code grid is ``grid`` = (h, w) cells."""
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(key, "little")))
    values = np.stack([rng.permutation(codebook_size) for _ in range(num_quantizers)])
    positions = rng.permutation(grid[0] * grid[1])
    return Scramble(values, positions, rng.integers(0, codebook_size, (num_quantizers, positions.size)))


def _check(indices: np.ndarray, s: Scramble) -> tuple[int, int, int, int]:
    L, h, w, q = indices.shape
    if q != s.values.shape[0] or h * w != s.positions.size:
        raise ValueError(f"codes of shape {indices.shape} do not fit a scramble for {s.values.shape[0]} stages "
                         f"and {s.positions.size} grid cells")
    return L, h, w, q


def scramble(indices: np.ndarray, s: Scramble) -> np.ndarray:
    """Shape: indices (L, h, w, Q) -> (L, h, w, Q)."""
    L, h, w, q = _check(indices, s)
    values = np.stack([s.values[i][indices[..., i]] for i in range(q)], axis=-1)
    placed = values.reshape(L, h * w, q)[:, s.positions]
    return ((placed + s.offsets.T) % s.values.shape[1]).reshape(L, h, w, q)


def unscramble(indices: np.ndarray, s: Scramble) -> np.ndarray:
    """Inverse of `scramble` with the same ``s``."""
    L, h, w, q = _check(indices, s)
    placed = np.empty((L, h * w, q), indices.dtype)
    placed[:, s.positions] = (indices.reshape(L, h * w, q) - s.offsets.T) % s.values.shape[1]
    inverse = np.argsort(s.values, axis=1)
    return np.stack([inverse[i][placed[..., i]] for i in range(q)], axis=-1).reshape(L, h, w, q)

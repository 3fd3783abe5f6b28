"""The audio-keyed scrambling of the code alphabet: the paper's non-patterned noise on the codes.

For each chunk, the bytes of the audio packets sent with it, the model's ``scramble_seed`` and the
chunk's number seed a permutation of each quantiser stage's code alphabet. The sender sends
``perm[q][index]``; the receiver, holding the same model and the same audio, inverts it. Without
the audio (or with other audio) the receiver looks up the wrong codebook entries everywhere and
decodes noise; the benchmark measures this (wrong-audio PSNR).

Why bytes and not the log-mel features: the key must be identical on both ends, bit for bit;
compressed packets are copied exactly, float features need not be on another machine. The
features still condition the networks (FiLM, `veil.stream.model`).

This is obfuscation, not encryption: whoever has the model file and the stream (which carries the
audio) can decode. Confidentiality comes from ``--key`` (AES-GCM, `veil.stream.format`).
A permutation that is constant within a chunk keeps which indices repeat, so the entropy coder's
temporal transform loses nothing.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

import numpy as np

__all__ = ["chunk_key", "chunk_permutations", "scramble", "unscramble"]


def chunk_key(scramble_seed: int, chunk_index: int, audio_payloads: Iterable[bytes]) -> bytes:
    """A 32-byte seed from the model secret, the chunk's number and the chunk's audio bytes."""
    h = hashlib.sha256(b"veil-scramble/1\x00" + struct.pack("<QQ", scramble_seed & (2**64 - 1), chunk_index))
    for payload in audio_payloads:
        h.update(struct.pack("<I", len(payload)))
        h.update(payload)
    return h.digest()


def chunk_permutations(key: bytes, num_quantizers: int, codebook_size: int) -> np.ndarray:
    """Shape: -> (Q, K) int64, each row a permutation of range(K)."""
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(key, "little")))
    return np.stack([rng.permutation(codebook_size) for _ in range(num_quantizers)])


def scramble(indices: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Shape: indices (..., Q), perms (Q, K) -> (..., Q)."""
    return np.stack([perms[q][indices[..., q]] for q in range(perms.shape[0])], axis=-1)


def unscramble(indices: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Inverse of `scramble` with the same ``perms``."""
    return scramble(indices, np.argsort(perms, axis=1))

"""The audio-keyed hiding of each chunk's coded codes: the paper's non-patterned noise on what travels.

Compress, then hide. The entropy coder (`veil.stream.entropy`) codes the indices in plain order,
where it can see what neighbouring cells and frames share; the coded bytes are then encrypted with
a key stream drawn from the chunk's audio, so every byte sent is uniformly random whatever the
scene (bench/codec.py renders the sent bytes as pictures and runs the face detectors on them).

Per chunk, HKDF-SHA256 (`cryptography`) derives a ChaCha20 key and nonce and an HMAC-SHA256 key
from:

* the bytes of the audio packets sent with the chunk (length-prefixed, in order), and ``--key``
  when the stream has one (input key material);
* the stream header's digest (salt): it holds the model's sha256 and a random ``stream_id`` drawn
  for every stream, so two streams never share a key stream even over identical audio;
* the model's ``scramble_seed`` and the chunk's number (info): chunks of one stream differ too.

A sealed chunk is ``ChaCha20(length u32 | coded | zero padding) | HMAC tag (16 bytes)``. The
padding makes every chunk of a ``--constant-rate`` stream the same size, and being inside the
cipher and the MAC it is as random to an observer, and as checked for the receiver, as the codes.
The receiver, holding the same model and the same audio, derives the same keys, checks the tag
and decrypts. Without the audio (or with other audio) the key stream is wrong: a strict receiver
refuses the chunk, and one that decodes anyway (`open_chunk` with ``strict`` False, what
bench/codec.py does to measure it) gets words that the ANS decoder turns into codes drawn at
random from its own model, which the network draws as noise.

Why bytes and not the log-mel features: the keys must be identical on both ends, bit for bit;
compressed packets are copied exactly, float features need not be on another machine. The
features still condition the networks (FiLM, `veil.stream.model`).

Without ``--key`` this is obfuscation, not encryption: whoever has the model file and the stream
(which carries the audio) can derive the keys. With ``--key`` the key stream depends on the key
too, and every record is also sealed with AES-GCM (`veil.stream.format`).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["ChunkKeys", "SealError", "chunk_keys", "seal_chunk", "open_chunk", "sealed_size", "OVERHEAD"]

TAG = 16
LENGTH = struct.Struct("<I")
OVERHEAD = LENGTH.size + TAG  # bytes a sealed chunk adds to the coded ones


class SealError(ValueError):
    """A sealed chunk fails its tag or its padding: damaged, tampered with, or the wrong audio or key."""


@dataclass(frozen=True)
class ChunkKeys:
    cipher: bytes  # ChaCha20 key, 32 bytes
    nonce: bytes  # ChaCha20's 16-byte counter and nonce
    mac: bytes  # HMAC-SHA256 key, 32 bytes


def chunk_keys(header_digest: bytes, scramble_seed: int, chunk_index: int, audio_payloads: Iterable[bytes],
               key: bytes | None = None) -> ChunkKeys:
    """The keys of one chunk (see the module docstring for what goes in)."""
    material = hashlib.sha256(b"veil-chunk-audio/5\x00")
    for payload in audio_payloads:
        material.update(LENGTH.pack(len(payload)))
        material.update(payload)
    ikm = material.digest() + (b"\x01" + key if key is not None else b"\x00")
    info = b"veil-chunk/5\x00" + struct.pack("<QQ", scramble_seed & (2**64 - 1), chunk_index)
    out = HKDF(algorithm=hashes.SHA256(), length=80, salt=header_digest, info=info).derive(ikm)
    return ChunkKeys(out[:32], out[32:48], out[48:])


def _xor_stream(keys: ChunkKeys, data: bytes) -> bytes:
    return Cipher(algorithms.ChaCha20(keys.cipher, keys.nonce), mode=None).encryptor().update(data)


def _tag(keys: ChunkKeys, ciphertext: bytes) -> bytes:
    return hmac.new(keys.mac, ciphertext, hashlib.sha256).digest()[:TAG]


def sealed_size(coded_bytes: int) -> int:
    return coded_bytes + OVERHEAD


def seal_chunk(coded: bytes, keys: ChunkKeys, size: int | None = None) -> bytes:
    """Encrypt and tag ``coded``, padded (inside the cipher) to ``size`` sealed bytes when given."""
    need = sealed_size(len(coded))
    if size is not None and size < need:
        raise ValueError(f"{len(coded)} coded bytes do not fit a sealed chunk of {size}")
    body = LENGTH.pack(len(coded)) + coded + bytes((size or need) - need)
    ciphertext = _xor_stream(keys, body)
    return ciphertext + _tag(keys, ciphertext)


def open_chunk(sealed: bytes, keys: ChunkKeys, strict: bool = True) -> bytes:
    """The coded bytes of a sealed chunk, after checking its tag and padding.

    ``strict`` False skips the checks and returns whatever the key stream makes of the bytes (the
    privacy experiment of decoding with other audio); it never raises for a wrong key.
    """
    if len(sealed) < OVERHEAD:
        raise SealError(f"a sealed chunk of {len(sealed)} bytes is shorter than its {OVERHEAD}-byte frame")
    ciphertext, tag = sealed[:-TAG], sealed[-TAG:]
    if strict and not hmac.compare_digest(tag, _tag(keys, ciphertext)):
        raise SealError("the chunk fails its audio-keyed tag: it was tampered with, damaged, or does not belong "
                        "to this audio")
    body = _xor_stream(keys, ciphertext)
    (n,) = LENGTH.unpack_from(body)
    room = len(body) - LENGTH.size
    if not strict:
        n = min(n, room) // 4 * 4
    elif n > room or body[LENGTH.size + n:].strip(b"\0"):
        raise SealError("the chunk's length or padding is wrong")
    return body[LENGTH.size:LENGTH.size + n]

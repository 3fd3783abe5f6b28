"""The .veil stream format: a versioned header, then records, each with a CRC-32.

Layout (all integers little-endian)::

    header   MAGIC (8 bytes) | version u16 | frame_count u32 | json_len u32 | json | crc32 u32
    record   type u8 | seq u32 | length u32 | payload (length bytes) | crc32 u32
    ...      (CHUNK and AUDIO records, interleaved in time order)
    record   END: frame_count u32 | chunks u32 | audio_packets u32

The JSON part of the header holds the model id and its sha256, the picture size, fps as a
fraction, the chunking, the code shape and the audio codec parameters (`StreamHeader`).
``frame_count`` sits outside the JSON, fixed-width, so that an encoder writing to a seekable
file can fill it in at the end without moving anything; a live encoder writing to a pipe leaves
it 0 ("unknown") and the END record carries the count either way.

A CHUNK payload is ``first_frame u32 | n_frames u16 | n_frames x pts i64 | sealed codes``: each
frame's timestamp, in the header's ``time_base`` (the source's, so a variable-frame-rate video
comes back with its own timing), then the entropy-coded indices (`veil.stream.entropy`) encrypted
and tagged with the chunk's audio-keyed key stream (`veil.stream.keying`). A header with
``chunk_bytes`` > 0 (``--constant-rate``) promises that every CHUNK payload has exactly that
many bytes, and the reader holds the stream to it. Versions: 1 scrambled the code alphabet only;
2 also permuted the cells of the code grid per chunk; 3 also added a keyed offset to each cell's
indices; 4 carried the frames' timestamps; 5 (this one) codes the /8 model's indices with a
context model across frames and chunks and hides the coded bytes, not the indices. A stream of
another version would decode wrongly here and is refused by its version number instead.

The CRC of each record catches accidental damage only: anyone can recompute it. With a key
(AES-256-GCM, `cryptography`) every payload is ``nonce (12 bytes, fresh and random per record) |
ciphertext | tag``, authenticated together with the header's digest, the record's type and its
sequence number, so a changed, reordered, dropped or duplicated record fails authentication;
a stream cut short lacks the authenticated END record. A keyed stream's header carries a random
``stream_id``, so the digest differs between two streams of one key even where everything else
in their headers is equal: a record transplanted from another stream fails too. (Every stream
draws a ``stream_id``: it also salts the audio-keyed key stream, `veil.stream.keying`.) The header
stays readable (size, fps, frame count, audio codec are not secret) but is authenticated through
that digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil.errors import InputError
from veil.media.audio import AudioPacket, AudioParams

__all__ = ["MAGIC", "VERSION", "StreamHeader", "ChunkRecord", "EndRecord", "StreamError",
           "TruncatedStreamError", "CorruptStreamError", "AuthenticationError", "KeyError_",
           "StreamWriter", "StreamReader", "read_key", "key_check", "CHUNK_HEAD"]

MAGIC = b"\x89VEIL\r\n\x1a"  # high bit and CR/LF catch 7-bit and text-mode transfers
VERSION = 5  # bump whenever a stream of the old version would decode differently
CHUNK, AUDIO, END = 1, 2, 3
_HEAD = struct.Struct("<8sHII")
_REC = struct.Struct("<BII")
_CRC = struct.Struct("<I")
_CHUNK = struct.Struct("<IH")
CHUNK_HEAD = _CHUNK.size  # a chunk payload's bytes before its timestamps
_AUDIO = struct.Struct("<qqqB")
_END = struct.Struct("<III")
NONCE = 12
MAX_RECORD = 1 << 28  # a length beyond this is damage, not data
MAX_SIDE = 16384  # the largest frame side a header may declare


class StreamError(InputError, ValueError):
    """A .veil stream cannot be trusted: the CLI reports it and exits with status 2."""


class TruncatedStreamError(StreamError):
    pass


class CorruptStreamError(StreamError):
    pass


class AuthenticationError(StreamError):
    pass


class KeyError_(StreamError):  # noqa: N801 - not the builtin KeyError
    """A key is missing, malformed, or given for a stream that is not encrypted."""


@dataclass(frozen=True)
class StreamHeader:
    model_id: str
    model_sha256: str
    kind: str
    width: int
    height: int
    fps: Fraction
    chunk_frames: int
    codebook_size: int
    num_quantizers: int
    audio: AudioParams | None = None
    encrypted: bool = False
    key_check: str = ""
    frame_count: int = 0  # 0: unknown when the header was written
    version: int = VERSION
    extra: dict = field(default_factory=dict)
    time_base: Fraction | None = None  # of the chunks' frame timestamps; None: 1 / fps
    stream_id: str = ""  # 16 random bytes (hex) that tie every record and key stream to this stream
    chunk_bytes: int = 0  # > 0: every CHUNK payload has this many bytes (--constant-rate)

    @property
    def timestamps_base(self) -> Fraction:
        return self.time_base or 1 / self.fps

    def json_bytes(self) -> bytes:
        d = {"model_id": self.model_id, "model_sha256": self.model_sha256, "kind": self.kind,
             "width": self.width, "height": self.height, "fps": [self.fps.numerator, self.fps.denominator],
             "chunk_frames": self.chunk_frames, "codebook_size": self.codebook_size,
             "num_quantizers": self.num_quantizers, "audio": self.audio.to_dict() if self.audio else None,
             "encrypted": self.encrypted, "key_check": self.key_check, "extra": self.extra,
             "time_base": [self.time_base.numerator, self.time_base.denominator] if self.time_base else None}
        if self.stream_id:
            d["stream_id"] = self.stream_id
        if self.chunk_bytes:
            d["chunk_bytes"] = self.chunk_bytes
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        body = self.json_bytes()
        head = _HEAD.pack(MAGIC, self.version, self.frame_count, len(body)) + body
        return head + _CRC.pack(zlib.crc32(head))

    @property
    def digest(self) -> bytes:
        """What every encrypted record authenticates: version and JSON, not the patchable count."""
        return hashlib.sha256(struct.pack("<H", self.version) + self.json_bytes()).digest()

    def check(self) -> StreamHeader:
        """Refuse a header whose numbers no encoder writes (a crafted one would make the receiver
        allocate without bound): sizes up to 8K-and-more, sane rates and chunking."""
        if not (0 < self.width <= MAX_SIDE and 0 < self.height <= MAX_SIDE):
            raise CorruptStreamError(f"the header declares {self.width}x{self.height} frames (at most {MAX_SIDE} a side)")
        if self.time_base is not None and not 0 < self.time_base <= 1:
            raise CorruptStreamError(f"the header's time base {self.time_base} is implausible: the header is damaged")
        if not (0 < self.fps <= 1000 and 0 < self.chunk_frames <= 4096 and 1 < self.codebook_size <= 65536
                and 0 < self.num_quantizers <= 16 and self.kind in ("f2f", "v2v")
                and 0 <= self.chunk_bytes <= MAX_RECORD):
            raise CorruptStreamError("the header's rate, chunking or codebook is implausible: the header is damaged")
        return self

    @classmethod
    def from_json(cls, version: int, frame_count: int, body: bytes) -> "StreamHeader":
        d = json.loads(body)
        return cls(d["model_id"], d["model_sha256"], d["kind"], int(d["width"]), int(d["height"]),
                   Fraction(*d["fps"]), int(d["chunk_frames"]), int(d["codebook_size"]),
                   int(d["num_quantizers"]), AudioParams.from_dict(d["audio"]) if d["audio"] else None,
                   bool(d["encrypted"]), d.get("key_check", ""), frame_count, version, d.get("extra", {}),
                   Fraction(*d["time_base"]) if d.get("time_base") else None, str(d.get("stream_id", "")),
                   int(d.get("chunk_bytes", 0)))


@dataclass(frozen=True)
class ChunkRecord:
    """Entropy-coded codes of ``n_frames`` frames starting at ``first_frame``, and the frames'
    timestamps (in the header's time base, increasing; empty: evenly spaced, ``first_frame + i``)."""

    first_frame: int
    n_frames: int
    data: bytes
    pts: tuple[int, ...] = ()

    def timestamps(self) -> tuple[int, ...]:
        return self.pts or tuple(range(self.first_frame, self.first_frame + self.n_frames))


@dataclass(frozen=True)
class EndRecord:
    frame_count: int
    chunks: int
    audio_packets: int


def key_check(key: bytes) -> str:
    """A short public fingerprint that lets a receiver say "wrong key" before decrypting."""
    return hashlib.sha256(b"veil-key-check\x00" + key).hexdigest()[:16]


def read_key(path: str | Path) -> bytes:
    """A key file holds 32 raw bytes or 64 hex digits (`head -c 32 /dev/urandom > KEYFILE`)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read key file {str(path)!r}: {exc.strerror}") from exc
    if len(raw) == 32:
        return raw
    text = raw.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise KeyError_(f"key file {str(path)!r} must hold 32 raw bytes or 64 hex digits "
                    f"(it has {len(raw)} bytes); make one with `head -c 32 /dev/urandom > KEYFILE`")


class StreamWriter:
    """Writes a header, then records; `close` writes END and fills in the header's frame count."""

    def __init__(self, f: BinaryIO, header: StreamHeader, key: bytes | None = None) -> None:
        if header.encrypted != (key is not None):
            raise ValueError("header.encrypted must match whether a key is given")
        if not header.stream_id:
            header = replace(header, stream_id=os.urandom(16).hex())
        self.f, self.header, self._seq = f, header, 0
        self._aead = AESGCM(key) if key is not None else None
        self._start = f.tell() if f.seekable() else None
        self.chunks = self.audio_packets = 0
        f.write(header.to_bytes())

    def _record(self, kind: int, payload: bytes) -> None:
        if self._aead is not None:
            nonce = os.urandom(NONCE)
            aad = self.header.digest + _REC.pack(kind, self._seq, 0)[:5]
            payload = nonce + self._aead.encrypt(nonce, payload, aad)
        rec = _REC.pack(kind, self._seq, len(payload)) + payload
        self.f.write(rec + _CRC.pack(zlib.crc32(rec)))
        self._seq += 1

    def write_chunk(self, chunk: ChunkRecord) -> None:
        pts = chunk.timestamps()
        if len(pts) != chunk.n_frames:
            raise ValueError(f"a chunk of {chunk.n_frames} frames with {len(pts)} timestamps")
        self._record(CHUNK, _CHUNK.pack(chunk.first_frame, chunk.n_frames)
                     + np.asarray(pts, "<i8").tobytes() + chunk.data)
        self.chunks += 1

    def write_audio(self, p: AudioPacket) -> None:
        self._record(AUDIO, _AUDIO.pack(p.pts, p.dts, p.duration, int(p.keyframe)) + p.data)
        self.audio_packets += 1

    def close(self, frame_count: int) -> None:
        self._record(END, _END.pack(frame_count, self.chunks, self.audio_packets))
        if self._start is not None:  # seekable: fill in the frame count (same length, new CRC)
            end = self.f.tell()
            self.f.seek(self._start)
            self.f.write(StreamHeader(**{**self.header.__dict__, "frame_count": frame_count}).to_bytes())
            self.f.seek(end)
        self.f.flush()


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = b""
    while len(data) < n:
        more = f.read(n - len(data))
        if not more:
            raise TruncatedStreamError(f"stream ends inside {what} ({len(data)} of {n} bytes): "
                                       "the file is truncated or still being written")
        data += more
    return data


class StreamReader:
    """Reads and checks a stream record by record; iterating yields chunks, audio packets, END."""

    def __init__(self, f: BinaryIO, key: bytes | None = None) -> None:
        self.f = f
        head = _read_exact(f, _HEAD.size, "the header")
        magic, version, frame_count, json_len = _HEAD.unpack(head)
        if magic != MAGIC:
            raise CorruptStreamError("not a .veil stream (bad magic bytes)")
        if version != VERSION:
            raise CorruptStreamError(f"stream format version {version} is not supported (this veil reads {VERSION})")
        if json_len > MAX_RECORD:
            raise CorruptStreamError("header length is implausible: the header is damaged")
        body = _read_exact(f, json_len, "the header")
        (crc,) = _CRC.unpack(_read_exact(f, 4, "the header checksum"))
        if crc != zlib.crc32(head + body):
            raise CorruptStreamError("header checksum mismatch: the header is damaged")
        try:
            self.header = StreamHeader.from_json(version, frame_count, body).check()
        except StreamError:
            raise
        except (ValueError, KeyError, TypeError, ZeroDivisionError, AttributeError) as exc:
            raise CorruptStreamError(f"header fields unreadable: {exc}") from exc
        if self.header.encrypted and key is None:
            raise KeyError_("this stream is encrypted: pass --key KEYFILE")
        if not self.header.encrypted and key is not None:
            raise KeyError_("this stream is not encrypted, but a key was given")
        if key is not None and key_check(key) != self.header.key_check:
            raise AuthenticationError("wrong key: it does not match the key this stream was encrypted with")
        self._aead = AESGCM(key) if key is not None else None
        self._seq = 0
        self.end: EndRecord | None = None

    def _payload(self) -> tuple[int, bytes]:
        rec = _read_exact(self.f, _REC.size, f"record {self._seq}")
        kind, seq, length = _REC.unpack(rec)
        if kind not in (CHUNK, AUDIO, END) or length > MAX_RECORD:
            raise CorruptStreamError(f"record {self._seq} is damaged (type {kind}, length {length})")
        payload = _read_exact(self.f, length, f"record {self._seq}")
        (crc,) = _CRC.unpack(_read_exact(self.f, 4, f"record {self._seq}'s checksum"))
        if crc != zlib.crc32(rec + payload):
            raise CorruptStreamError(f"record {self._seq} fails its checksum: the stream is damaged")
        if seq != self._seq:
            raise CorruptStreamError(f"record {self._seq} is numbered {seq}: records are missing or reordered")
        if self._aead is not None:
            if len(payload) < NONCE + 16:
                raise AuthenticationError(f"record {seq} is too short to be authentic")
            aad = self.header.digest + rec[:5]
            try:
                payload = self._aead.decrypt(payload[:NONCE], payload[NONCE:], aad)
            except InvalidTag as exc:
                raise AuthenticationError(f"record {seq} fails authentication: the stream was "
                                          "tampered with or encrypted with another key") from exc
        self._seq += 1
        return kind, payload

    def __iter__(self) -> Iterator[ChunkRecord | AudioPacket | EndRecord]:
        chunks = audio = frames = 0
        last_pts: int | None = None
        while self.end is None:
            kind, p = self._payload()
            try:
                if kind == CHUNK:
                    first, n = _CHUNK.unpack_from(p)
                    if self.header.chunk_bytes and len(p) != self.header.chunk_bytes:
                        raise CorruptStreamError(f"chunk {chunks} has {len(p)} bytes; this constant-rate stream's "
                                                 f"chunks have {self.header.chunk_bytes}")
                    if first != frames:
                        raise CorruptStreamError(f"chunk {chunks} starts at frame {first}, expected {frames}")
                    if len(p) < _CHUNK.size + 8 * n:
                        raise CorruptStreamError(f"chunk {chunks} is too short for its {n} timestamps")
                    pts = np.frombuffer(p, "<i8", n, _CHUNK.size)
                    if n and ((np.diff(pts) <= 0).any() or (last_pts is not None and pts[0] <= last_pts)):
                        raise CorruptStreamError(f"chunk {chunks}'s timestamps do not increase")
                    last_pts = int(pts[-1]) if n else last_pts
                    chunks, frames = chunks + 1, frames + n
                    yield ChunkRecord(first, n, p[_CHUNK.size + 8 * n:], tuple(int(t) for t in pts))
                elif kind == AUDIO:
                    pts, dts, dur, keyframe = _AUDIO.unpack_from(p)
                    audio += 1
                    yield AudioPacket(pts, dts, dur, bool(keyframe), p[_AUDIO.size:])
                else:
                    end = EndRecord(*_END.unpack(p))
                    if (end.frame_count, end.chunks, end.audio_packets) != (frames, chunks, audio):
                        raise CorruptStreamError(f"END record says {end} but the stream held {frames} frames, "
                                                 f"{chunks} chunks, {audio} audio packets")
                    if self.header.frame_count not in (0, frames):
                        raise CorruptStreamError(f"header says {self.header.frame_count} frames, stream has {frames}")
                    self.end = end
                    yield end
            except struct.error as exc:
                raise CorruptStreamError(f"record {self._seq - 1} is malformed: {exc}") from exc
        if self.f.read(1):
            raise CorruptStreamError("bytes after the END record: the stream is damaged")

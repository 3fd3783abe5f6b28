"""The .veil container: header and records round trip; damage, truncation and wrong keys are caught."""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction

import pytest
from stream_bytes import assemble, header_size, split_records

from veil.media.audio import AudioPacket, AudioParams
from veil.stream.format import (
    AuthenticationError,
    ChunkRecord,
    CorruptStreamError,
    EndRecord,
    KeyError_,
    StreamHeader,
    StreamReader,
    StreamWriter,
    TruncatedStreamError,
    key_check,
    read_key,
)

KEY = bytes(range(32))
PARAMS = AudioParams("aac", 48000, "stereo", Fraction(1, 48000), b"\x11\x90")


def header(encrypted: bool = False) -> StreamHeader:
    return StreamHeader("f2f-test", "ab" * 32, "f2f", 640, 360, Fraction(24000, 1001), 8, 256, 4, PARAMS,
                        encrypted, key_check(KEY) if encrypted else "")


def sample_stream(key: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    w = StreamWriter(buf, header(key is not None), key)
    w.write_audio(AudioPacket(0, 0, 1024, True, b"\x01\x02audio-0"))
    w.write_chunk(ChunkRecord(0, 8, b"codes-0" * 10))
    w.write_audio(AudioPacket(1024, 1024, 1024, True, b"audio-1"))
    w.write_chunk(ChunkRecord(8, 3, b"codes-1"))
    w.close(11)
    return buf.getvalue()


def read_all(data: bytes, key: bytes | None = None) -> tuple[StreamHeader, list]:
    r = StreamReader(io.BytesIO(data), key)
    return r.header, list(r)


@pytest.mark.parametrize("key", [None, KEY])
def test_round_trip_keeps_header_andsplit_records(key: bytes | None) -> None:
    h, records = read_all(sample_stream(key), key)
    assert (h.model_id, h.width, h.height, h.fps, h.frame_count, h.audio) == \
        ("f2f-test", 640, 360, Fraction(24000, 1001), 11, PARAMS)
    # chunks written without timestamps come back evenly spaced, in frames
    assert records == [AudioPacket(0, 0, 1024, True, b"\x01\x02audio-0"),
                       ChunkRecord(0, 8, b"codes-0" * 10, tuple(range(8))),
                       AudioPacket(1024, 1024, 1024, True, b"audio-1"), ChunkRecord(8, 3, b"codes-1", (8, 9, 10)),
                       EndRecord(11, 2, 2)]


def test_encrypted_payload_hides_the_plaintext() -> None:
    assert b"codes-0" in sample_stream(None)
    assert b"codes-0" not in sample_stream(KEY) and b"audio-1" not in sample_stream(KEY)


def test_every_flipped_byte_is_detected() -> None:
    data = sample_stream()
    for pos in range(0, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises((CorruptStreamError, TruncatedStreamError)):
            read_all(bytes(bad))


@pytest.mark.parametrize("key", [None, KEY])
def test_every_truncation_is_detected(key: bytes | None) -> None:
    data = sample_stream(key)
    for cut in range(0, len(data) - 1, 7):
        with pytest.raises(TruncatedStreamError):
            read_all(data[:cut], key)


def test_wrong_and_missing_keys_are_refused() -> None:
    data = sample_stream(KEY)
    with pytest.raises(AuthenticationError, match="wrong key"):
        read_all(data, bytes(32))
    with pytest.raises(KeyError_, match="encrypted"):
        read_all(data, None)
    with pytest.raises(KeyError_, match="not encrypted"):
        read_all(sample_stream(None), KEY)


def test_tampering_with_a_valid_crc_fails_authentication() -> None:
    data = bytearray(sample_stream(KEY))
    first_record = header_size(data)
    kind, seq, length = struct.unpack_from("<BII", data, first_record)
    data[first_record + 9 + 20] ^= 1  # a ciphertext byte
    body = bytes(data[first_record:first_record + 9 + length])
    struct.pack_into("<I", data, first_record + 9 + length, zlib.crc32(body))  # attacker fixes the CRC
    with pytest.raises(AuthenticationError, match="record 0"):
        read_all(bytes(data), KEY)


def test_unencrypted_records_cannot_be_dropped_silently() -> None:
    data = sample_stream()
    h_len = header_size(data)
    _, _, length = struct.unpack_from("<BII", data, h_len)
    dropped = data[:h_len] + data[h_len + 9 + length + 4:]  # remove the first audio record
    with pytest.raises(CorruptStreamError, match="missing or reordered"):
        read_all(dropped)


def test_key_file_formats(tmp_path) -> None:
    (tmp_path / "raw").write_bytes(KEY)
    (tmp_path / "hex").write_text(KEY.hex() + "\n")
    (tmp_path / "short").write_bytes(b"abc")
    assert read_key(tmp_path / "raw") == KEY == read_key(tmp_path / "hex")
    with pytest.raises(KeyError_, match="32 raw bytes"):
        read_key(tmp_path / "short")
    (tmp_path / "hex-short").write_text(KEY.hex()[:-2])
    with pytest.raises(KeyError_):
        read_key(tmp_path / "hex-short")


def test_a_stream_of_another_version_is_refused() -> None:
    data = bytearray(sample_stream())
    struct.pack_into("<H", data, 8, 2)  # version 2 added no offsets to the codes: it would decode to noise
    struct.pack_into("<I", data, header_size(data) - 4, zlib.crc32(bytes(data[:header_size(data) - 4])))
    with pytest.raises(CorruptStreamError, match="version 2 is not supported"):
        read_all(bytes(data))


# --- an attacker who holds the stream but not the key, and rewrites the clear parts -------------

def _refused(data: bytes) -> None:
    with pytest.raises((AuthenticationError, TruncatedStreamError)):
        read_all(data, KEY)


def test_the_attackers_reassembly_is_itself_valid() -> None:
    head, records = split_records(sample_stream(KEY))
    assert read_all(assemble(head, records), KEY)[1][-1] == EndRecord(11, 2, 2)  # the harness changes nothing


def test_a_rewritten_header_fails_authentication() -> None:
    head, records = split_records(sample_stream(KEY))
    json_len = struct.unpack_from("<I", head, 14)[0]
    body = head[18:18 + json_len].replace(b'"width":640', b'"width":320')
    assert body != head[18:18 + json_len]
    new = head[:14] + struct.pack("<I", len(body)) + body
    with pytest.raises(AuthenticationError, match="record 0"):
        read_all(assemble(new + struct.pack("<I", zlib.crc32(new)), records), KEY)


@pytest.mark.parametrize("change", ["swap", "drop", "duplicate", "drop-end"])
def test_records_reordered_dropped_or_duplicated_fail(change: str) -> None:
    head, records = split_records(sample_stream(KEY))
    r = list(records)
    if change == "swap":
        r[1], r[2] = r[2], r[1]
    elif change == "drop":
        del r[1]
    elif change == "duplicate":
        r.insert(2, r[1])
    else:
        del r[-1]
    _refused(assemble(head, r))


def test_a_stream_cut_at_any_record_boundary_is_refused() -> None:
    data = sample_stream(KEY)
    head, records = split_records(data)
    for n in range(len(records)):  # every prefix of whole records: the END record is missing
        with pytest.raises(TruncatedStreamError):
            read_all(assemble(head, records[:n]), KEY)


def test_a_record_transplanted_from_another_stream_of_the_same_key_fails() -> None:
    """Two streams of one key with equal headers otherwise (same model, size, audio): a record
    of one, at the same place in the other, must not pass."""
    head_a, records_a = split_records(sample_stream(KEY))
    _, records_b = split_records(sample_stream(KEY))
    assert records_a[1] != records_b[1]
    for i in range(len(records_a)):
        mixed = list(records_a)
        mixed[i] = records_b[i]
        with pytest.raises(AuthenticationError, match=f"record {i}"):
            read_all(assemble(head_a, mixed), KEY)


def test_nonces_never_repeat_across_records_and_runs() -> None:
    nonces = [payload[:12] for _ in range(20) for _, payload in split_records(sample_stream(KEY))[1]]
    assert len(nonces) == 20 * 5 and len(set(nonces)) == len(nonces)

"""A .veil stream's bytes taken apart and put back, for tests that play the attacker."""

from __future__ import annotations

import struct
import zlib


def header_size(data: bytes) -> int:
    (json_len,) = struct.unpack_from("<I", data, 14)  # after magic (8), version (2), frame count (4)
    return 18 + json_len + 4


def split_records(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The header's bytes and each record's (type, payload)."""
    pos, out = header_size(data), []
    while pos < len(data):
        kind, _, length = struct.unpack_from("<BII", data, pos)
        out.append((kind, data[pos + 9:pos + 9 + length]))
        pos += 9 + length + 4
    return data[:header_size(data)], out


def assemble(head: bytes, records: list[tuple[int, bytes]]) -> bytes:
    """Records numbered 0, 1, 2, ... again with valid CRCs: only the key's authentication can tell."""
    out = bytearray(head)
    for seq, (kind, payload) in enumerate(records):
        rec = struct.pack("<BII", kind, seq, len(payload)) + payload
        out += rec + struct.pack("<I", zlib.crc32(rec))
    return bytes(out)

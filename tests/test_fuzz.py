"""Hostile input to the parsers: random and mutated .veil streams, manifests and method options give
a clean result or a one-line input error (exit 2), never a traceback, a hang or unbounded memory.

CI runs a short, fixed set of examples; ``VEIL_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py`` runs a
long one by hand.
"""

from __future__ import annotations

import io
import os
import sqlite3
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.errors import InputError
from veil.stream.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from veil.stream.codec import decode_stream, encode_stream
from veil.stream.model import CodecConfig, CodecModel

EXAMPLES = int(os.environ.get("VEIL_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MEMORY_MB = 64  # what one hostile input may make the parser allocate, at most


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """A real two-chunk stream (with audio) of a generated clip, its tiny model, and the key."""
    from clips import synthetic_frames, write_clip

    folder = tmp_path_factory.mktemp("fuzz")
    clip = write_clip(folder / "clip.mkv", synthetic_frames(10, width=32, height=24), tone_hz=440.0)
    torch.manual_seed(0)
    model = CodecModel(CodecConfig(kind="f2f", scramble_seed=7, widths=(8, 8), code_dim=4,
                                   codebook_size=16, num_quantizers=2, n_mels=8, audio_dim=4))
    ckpt_path = save_checkpoint(Checkpoint(model.eval()), folder / "tiny.pt")
    ckpt = load_checkpoint(ckpt_path)
    out = {}
    for name, key in (("plain", None), ("keyed", bytes(range(32)))):
        buf = io.BytesIO()
        encode_stream(clip, buf, ckpt, key, chunk_frames=8)
        out[name] = (buf.getvalue(), key)
    return out, ckpt_path


def _bounded(run):
    """Run `run()`; it may only return or raise an input error, within the memory bound."""
    tracemalloc.start()
    try:
        run()
    except InputError as exc:
        assert "\n" not in str(exc), str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MEMORY_MB * 2**20, f"{peak / 2**20:.0f} MB for one input"


@FUZZ
@given(data=st.data())
def test_mutated_streams_decode_or_are_refused(stream, data):
    streams, ckpt = stream
    original, key = streams[data.draw(st.sampled_from(sorted(streams)), label="stream")]
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]))
        at = data.draw(st.integers(0, max(len(mutated) - 1, 0)))
        if kind == "flip" and mutated:
            mutated[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del mutated[at:at + data.draw(st.integers(1, 64))]
        elif kind == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=64))
        else:
            chunk = data.draw(st.binary(min_size=1, max_size=16))
            mutated[at:at + len(chunk)] = chunk
    _bounded(lambda: decode_stream(io.BytesIO(bytes(mutated)), None, key, ckpt, on_frames=lambda f: None))


@FUZZ
@given(junk=st.binary(max_size=4096))
def test_random_bytes_are_refused(stream, junk):
    _, ckpt = stream
    _bounded(lambda: decode_stream(io.BytesIO(b"VEIL" + junk), None, None, ckpt))
    _bounded(lambda: decode_stream(io.BytesIO(junk), None, None, ckpt))


def test_a_header_that_claims_huge_frames_is_refused_without_allocating(stream):
    import json
    import struct
    import zlib

    from veil.stream.format import _HEAD

    streams, ckpt = stream
    data = streams["plain"][0]
    magic, version, count, n = _HEAD.unpack_from(data)
    header = json.loads(data[_HEAD.size:_HEAD.size + n])
    header.update(width=1_000_000, height=1_000_000)
    body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head = _HEAD.pack(magic, version, count, len(body)) + body
    forged = head + struct.pack("<I", zlib.crc32(head)) + data[_HEAD.size + n + 4:]
    with pytest.raises(InputError, match="1000000x1000000"):
        decode_stream(io.BytesIO(forged), None, None, ckpt)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A real manifest of a finished batch."""
    from veil.batch.manifest import Manifest

    folder = tmp_path_factory.mktemp("manifest")
    with Manifest(folder) as book:
        for i in range(3):
            src = folder / f"in{i}.mp4"
            src.write_bytes(b"x" * (i + 1))
            book.start(src, folder / f"out{i}.mp4", "opts")
            book.finish(src, sha256="0" * 64, size=i + 1, mtime_ns=1, output_size=1, output_sha256="1" * 64,
                        summary={"frames": i})
    return folder / ".veil-manifest.sqlite"


@FUZZ
@given(data=st.data())
def test_damaged_manifests_are_read_or_refused(manifest, tmp_path_factory, data):
    from veil.batch.manifest import Manifest

    folder = tmp_path_factory.mktemp("m")
    raw = bytearray(manifest.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    (folder / manifest.name).write_bytes(bytes(raw))

    def read() -> None:
        with Manifest(folder, lock=False, create=False) as book:
            book.totals()
            list(book.entries())

    _bounded(read)


def test_a_manifest_with_a_foreign_table_is_refused(tmp_path):
    from veil.batch.manifest import Manifest

    with sqlite3.connect(tmp_path / ".veil-manifest.sqlite") as db:
        db.execute("CREATE TABLE files (name TEXT)")
    with pytest.raises(InputError, match="manifest .* is damaged"):
        Manifest(tmp_path, lock=False, create=False)


METHODS = ["blur", "mosaic", "solid", "blindfold", "noise", "cartoon", "sticker"]


@FUZZ
@given(method=st.sampled_from(METHODS),
       texts=st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=24),
                      max_size=4))
def test_any_method_option_text_builds_a_protection_or_is_refused(method, texts):
    from veil.cli.protect import parse_option
    from veil.faces import Faces
    from veil.protect import ProtectState, get_protector, protector_options

    def build() -> None:
        defaults = protector_options(method)
        options = dict(parse_option(t, defaults) for t in texts)
        protector = get_protector(method, **options)
        frame = np.full((40, 40, 3), 128, np.uint8)
        faces = Faces(np.array([[8.0, 8, 32, 32]], np.float32), np.full((1, 5, 2), 20, np.float32),
                      np.ones(1, np.float32))
        out = protector(frame, faces, ProtectState())
        assert out.shape == frame.shape and out.dtype == np.uint8

    try:
        build()
    except InputError as exc:
        assert "\n" not in str(exc)


def test_the_fuzzing_is_not_vacuous(stream):
    """The unmutated stream decodes, so what the mutations meet is the real parser."""
    streams, ckpt = stream
    frames: list = []
    decode_stream(io.BytesIO(streams["keyed"][0]), None, streams["keyed"][1], ckpt, on_frames=frames.append)
    assert sum(len(f) for f in frames) == 10

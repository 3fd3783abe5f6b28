"""Encode/decode files through the codec with a tiny model: audio exact, streaming, live input."""

from __future__ import annotations

import io
import shutil
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from veil.media.audio import AudioPacket
from veil.stream.checkpoint import load_checkpoint
from veil.stream.codec import decode_stream, encode_stream
from veil.stream.format import StreamReader, TruncatedStreamError


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def encode(clip: Path, ckpt_path: Path, **kw) -> bytes:
    buf = io.BytesIO()
    encode_stream(clip, buf, load_checkpoint(ckpt_path), **kw)
    return buf.getvalue()


def test_audio_packets_survive_encode_and_decode_byte_for_byte(clip_path, tiny_checkpoint, tmp_path) -> None:
    data = encode(clip_path, tiny_checkpoint)
    source = audio_packets(clip_path)
    assert len(source) > 10
    in_stream = [r.data for r in StreamReader(io.BytesIO(data)) if isinstance(r, AudioPacket)]
    assert in_stream == source
    out = tmp_path / "rec.mp4"
    frames: list[np.ndarray] = []
    decode_stream(io.BytesIO(data), out, checkpoint=tiny_checkpoint, on_frames=frames.append)
    assert audio_packets(out) == source
    with av.open(str(out)) as c:
        assert c.streams.video[0].frames == 20 and c.streams.audio[0].codec_context.name == "aac"
    assert np.concatenate(frames).shape == (20, 48, 64, 3)


def codes_of(clip: Path, ckpt_path: Path, **kw) -> tuple[bytes, np.ndarray]:
    """A stream and the code indices it carries, as the sender chose them."""
    buf, codes = io.BytesIO(), []
    encode_stream(clip, buf, load_checkpoint(ckpt_path), on_codes=codes.append, **kw)
    return buf.getvalue(), np.concatenate(codes)


def chunk_sizes(data: bytes) -> list[int]:
    return [len(r.data) for r in StreamReader(io.BytesIO(data)) if hasattr(r, "first_frame")]


def test_encoding_is_deterministic_but_salted_and_header_counts_frames(clip_path, tiny_checkpoint) -> None:
    (a, codes_a), (b, codes_b) = codes_of(clip_path, tiny_checkpoint), codes_of(clip_path, tiny_checkpoint)
    np.testing.assert_array_equal(codes_a, codes_b)
    assert chunk_sizes(a) == chunk_sizes(b)
    # Each stream draws its own salt: the same video twice never shares a key stream.
    sealed_a = [r.data for r in StreamReader(io.BytesIO(a)) if hasattr(r, "first_frame")]
    sealed_b = [r.data for r in StreamReader(io.BytesIO(b)) if hasattr(r, "first_frame")]
    assert all(x != y for x, y in zip(sealed_a, sealed_b))
    r = StreamReader(io.BytesIO(a))
    assert r.header.frame_count == 20 and r.header.chunk_frames == 8
    chunks = [rec for rec in r if hasattr(rec, "first_frame")]
    assert [(c.first_frame, c.n_frames) for c in chunks] == [(0, 8), (8, 8), (16, 4)]
    short = encode(clip_path, tiny_checkpoint, max_frames=10)
    assert StreamReader(io.BytesIO(short)).header.frame_count == 10


def test_decoding_starts_before_the_stream_ends(clip_path, tiny_checkpoint, tmp_path) -> None:
    data = encode(clip_path, tiny_checkpoint)
    got: list[np.ndarray] = []
    out = tmp_path / "cut.mp4"
    with pytest.raises(TruncatedStreamError):
        decode_stream(io.BytesIO(data[: len(data) - 200]), out, checkpoint=tiny_checkpoint, on_frames=got.append)
    assert sum(len(g) for g in got) == 16  # the two complete chunks were decoded as they arrived
    assert not out.exists() and not list(tmp_path.glob("*.part*"))  # no half-written output left behind


def test_a_growing_file_encodes_like_the_finished_file(clip_path, tiny_checkpoint, tmp_path) -> None:
    growing = tmp_path / "live.mkv"
    payload = clip_path.read_bytes()
    growing.write_bytes(payload[:4096])

    def record() -> None:  # a recorder appending to the file while the encoder reads it
        with open(growing, "ab") as f:
            for start in range(4096, len(payload), 2048):
                time.sleep(0.02)
                f.write(payload[start:start + 2048])
                f.flush()

    writer = threading.Thread(target=record)
    writer.start()
    live, live_codes = codes_of(growing, tiny_checkpoint, follow=True)
    writer.join()
    whole, whole_codes = codes_of(clip_path, tiny_checkpoint)
    np.testing.assert_array_equal(live_codes, whole_codes)
    assert chunk_sizes(live) == chunk_sizes(whole)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_chunk_of_the_wrong_code_shape_is_refused(clip_path, tiny_checkpoint) -> None:
    """A well-formed, correctly sealed chunk whose codes do not fit the header is damage, not a picture."""
    from veil.media.audio import AudioPacket
    from veil.stream.entropy import ContextCoder
    from veil.stream.format import ChunkRecord, CorruptStreamError, EndRecord, StreamWriter
    from veil.stream.keying import chunk_keys, seal_chunk

    reader = StreamReader(io.BytesIO(encode(clip_path, tiny_checkpoint)))
    records = list(reader)
    buf = io.BytesIO()
    writer = StreamWriter(buf, reader.header)
    audio: list[bytes] = []
    for rec in records:
        if isinstance(rec, ChunkRecord) and rec.first_frame == 0:
            coded = ContextCoder(32, 2).encode(np.zeros((rec.n_frames, 12, 15, 2), int), True)
            keys = chunk_keys(writer.header.digest, 1234, 0, audio)
            writer.write_chunk(ChunkRecord(0, rec.n_frames, seal_chunk(coded, keys), rec.pts))
        elif isinstance(rec, ChunkRecord):
            writer.write_chunk(rec)
        elif isinstance(rec, AudioPacket):
            audio.append(rec.data)
            writer.write_audio(rec)
        else:
            assert isinstance(rec, EndRecord)
    writer.close(20)
    with pytest.raises(CorruptStreamError, match="chunk 0: codes of shape"):
        decode_stream(io.BytesIO(buf.getvalue()), None, checkpoint=tiny_checkpoint)


def test_the_receiver_tags_its_video_with_the_sources_colours(media, tiny_checkpoint, tmp_path) -> None:
    """A BT.601 full-range phone clip (the store's WolfgangLanger clip) comes back tagged the same."""
    from veil.media.read import VideoReader, probe

    src = media("WolfgangLanger_Pexels.mp4")
    colour = probe(src).colour
    assert (colour.matrix, colour.range) == (6, 1)
    data = encode(src, tiny_checkpoint, max_frames=4)
    assert StreamReader(io.BytesIO(data)).header.extra["colour"] == [6, 6, 6, 1]
    out = tmp_path / "rec.mp4"
    decode_stream(io.BytesIO(data), out, checkpoint=tiny_checkpoint)
    with VideoReader(out) as reader:
        assert reader.info.colour == colour and reader.info.frame_count == 4

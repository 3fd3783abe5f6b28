"""The typer commands: round trip, and exit 2 with a message for damaged streams and wrong keys."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from veil.cli import app
from veil.stream.checkpoint import load_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, clip_path, tiny_checkpoint) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("cli")
    key = d / "k.key"
    key.write_bytes(bytes(range(1, 33)))
    plain, secret = d / "plain.veil", d / "secret.veil"
    for out, extra in ((plain, []), (secret, ["--key", str(key)])):
        r = runner.invoke(app, ["encode", str(clip_path), "-o", str(out), "--checkpoint", str(tiny_checkpoint), *extra])
        assert r.exit_code == 0, r.output
        assert "20 frames" in r.output
    return plain, secret, key


def decode(stream: Path, out: Path, ckpt: Path, *extra: str):
    return runner.invoke(app, ["decode", str(stream), "-o", str(out), "--checkpoint", str(ckpt), *extra])


def test_round_trip_with_and_without_key(encoded, tiny_checkpoint, tmp_path) -> None:
    plain, secret, key = encoded
    r = decode(plain, tmp_path / "a.mp4", tiny_checkpoint)
    assert r.exit_code == 0 and "with sound" in r.output, r.output
    r = decode(secret, tmp_path / "b.mp4", tiny_checkpoint, "--key", str(key))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a.mp4").stat().st_size > 1000 and (tmp_path / "b.mp4").stat().st_size > 1000


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_stream_exits_2_with_a_message(encoded, tiny_checkpoint, tmp_path, damage: str) -> None:
    data = bytearray(encoded[0].read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) * 2 // 3]
    bad = tmp_path / "bad.veil"
    bad.write_bytes(bytes(data))
    r = decode(bad, tmp_path / "x.mp4", tiny_checkpoint)
    assert r.exit_code == 2
    assert ("checksum" in r.output) if damage == "flip" else ("truncated" in r.output)
    assert not (tmp_path / "x.mp4").exists()


def test_wrong_or_missing_key_exits_2(encoded, tiny_checkpoint, tmp_path) -> None:
    _, secret, _ = encoded
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(bytes(32))
    r = decode(secret, tmp_path / "x.mp4", tiny_checkpoint, "--key", str(wrong))
    assert r.exit_code == 2 and "wrong key" in r.output
    r = decode(secret, tmp_path / "x.mp4", tiny_checkpoint)
    assert r.exit_code == 2 and "--key" in r.output
    r = decode(secret, tmp_path / "x.mp4", tiny_checkpoint, "--key", str(tmp_path / "nope.key"))
    assert r.exit_code == 2 and "cannot read key file" in r.output


def test_wrong_checkpoint_exits_2(encoded, tmp_path, clip_path, tiny) -> None:
    other = tmp_path / "other.pt"
    from veil.stream.checkpoint import Checkpoint, save_checkpoint
    from veil.stream.model import CodecConfig, CodecModel

    save_checkpoint(Checkpoint(CodecModel(CodecConfig(**tiny))), other)
    r = decode(encoded[0], tmp_path / "x.mp4", other)
    assert r.exit_code == 2 and "encoded with model" in r.output


def test_not_a_video_exits_2(tmp_path, tiny_checkpoint) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    r = runner.invoke(app, ["encode", str(junk), "-o", str(tmp_path / "j.veil"), "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 2 and "not a readable video" in r.output
    assert not (tmp_path / "j.veil").exists()


def test_train_codec_writes_a_resumable_checkpoint(tmp_path, clip_path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mkv").write_bytes(clip_path.read_bytes())
    out = tmp_path / "m.pt"
    args = ["train", "codec", "--videos", str(videos), "-o", str(out), "--batch-size", "2", "--crop", "32"]
    r = runner.invoke(app, [*args, "--steps", "5"])
    assert r.exit_code == 0, r.output
    assert "step 5/5" in r.output and load_checkpoint(out).step == 5
    r = runner.invoke(app, [*args, "--steps", "10", "--resume"])
    assert r.exit_code == 0, r.output
    assert "step 10/10" in r.output
    ckpt = load_checkpoint(out)
    assert ckpt.step == 10 and ckpt.train_config["steps"] == 10 and ckpt.model.config.kind == "f2f"
    assert [h["step"] for h in ckpt.history] == [5, 10]  # resumed at 5, not restarted
    q, k = ckpt.model.config.num_quantizers, ckpt.model.config.codebook_size
    assert ckpt.coder_prior["values"].shape == (q, k)  # the entropy coder's prior, learned and kept
    stream = tmp_path / "m.veil"
    assert runner.invoke(app, ["encode", str(clip_path), "-o", str(stream), "--checkpoint", str(out)]).exit_code == 0
    assert decode(stream, tmp_path / "m.mp4", out).exit_code == 0
    r = runner.invoke(app, ["train", "codec", "--videos", str(tmp_path / "none"), "-o", str(out)])
    assert r.exit_code == 2


def test_rate_weight_and_keyframe_interval_options(tmp_path, clip_path, tiny_checkpoint) -> None:
    sizes = {}
    for name, extra in {"nearest": ["--rate-weight", "0"], "every": ["--keyframe-interval", "1"],
                        "default": []}.items():
        out = tmp_path / f"{name}.veil"
        r = runner.invoke(app, ["encode", str(clip_path), "-o", str(out), "--checkpoint", str(tiny_checkpoint),
                                "--chunk-frames", "4", *extra])
        assert r.exit_code == 0, r.output
        assert decode(out, tmp_path / f"{name}.mp4", tiny_checkpoint).exit_code == 0
        sizes[name] = out.stat().st_size
    assert sizes["default"] < sizes["every"] and sizes["default"] < sizes["nearest"]
    for bad in (["--rate-weight", "-1"], ["--keyframe-interval", "0"], ["--constant-rate", "0"]):
        r = runner.invoke(app, ["encode", str(clip_path), "-o", str(tmp_path / "bad.veil"), "--checkpoint",
                                str(tiny_checkpoint), *bad])
        assert r.exit_code == 2 and not (tmp_path / "bad.veil").exists(), r.output


def test_constant_rate_pads_every_chunk_to_one_size(tmp_path, clip_path, tiny_checkpoint) -> None:
    from veil.stream.format import ChunkRecord, StreamReader

    out = tmp_path / "cbr.veil"
    r = runner.invoke(app, ["encode", str(clip_path), "-o", str(out), "--checkpoint", str(tiny_checkpoint),
                            "--chunk-frames", "4", "--constant-rate", "6000"])
    assert r.exit_code == 0, r.output
    assert "constant rate" in r.output
    with open(out, "rb") as f:
        reader = StreamReader(f)
        chunks = [rec for rec in reader if isinstance(rec, ChunkRecord)]
    assert reader.header.chunk_bytes == 6000 * 4 // 12
    assert len(chunks) == 5 and len({len(c.data) + 8 * c.n_frames for c in chunks}) == 1
    assert decode(out, tmp_path / "cbr.mp4", tiny_checkpoint).exit_code == 0
    r = runner.invoke(app, ["encode", str(clip_path), "-o", str(tmp_path / "low.veil"), "--checkpoint",
                            str(tiny_checkpoint), "--chunk-frames", "4", "--constant-rate", "100"])
    assert r.exit_code == 2 and "--constant-rate" in r.output and not (tmp_path / "low.veil").exists()


def _retamper(data: bytes, chunk: int, offset_from_end: int) -> bytes:
    """Flip one bit of a chunk record's payload, ``offset_from_end`` bytes before its end, with
    the CRCs recomputed: damage made to look like none."""
    from stream_bytes import assemble, split_records

    from veil.stream.format import CHUNK

    head, records = split_records(data)
    at = [i for i, (kind, _) in enumerate(records) if kind == CHUNK][chunk]
    payload = bytearray(records[at][1])
    payload[-offset_from_end] ^= 0x10
    records[at] = (CHUNK, bytes(payload))
    return assemble(head, records)


@pytest.mark.parametrize(("where", "offset"), [("codes", 0), ("padding", 40), ("tag", 3)])
def test_tampered_codes_or_padding_exit_2_even_with_a_fixed_crc(tmp_path, clip_path, tiny_checkpoint,
                                                                where: str, offset: int) -> None:
    from veil.stream.format import ChunkRecord, StreamReader

    def second_chunk(*extra: str) -> tuple[Path, int]:
        stream = tmp_path / f"s{len(extra)}.veil"
        r = runner.invoke(app, ["encode", str(clip_path), "-o", str(stream), "--checkpoint", str(tiny_checkpoint),
                                "--chunk-frames", "4", *extra])
        assert r.exit_code == 0, r.output
        with open(stream, "rb") as f:
            chunks = [rec for rec in StreamReader(f) if isinstance(rec, ChunkRecord)]
        return stream, len(chunks[1].data)

    _, unpadded = second_chunk()
    stream, sealed = second_chunk("--constant-rate", "9000")
    assert sealed > unpadded + 40  # the last 40 bytes before the tag are padding, inside the cipher
    offset = offset if where != "codes" else sealed - 30  # 30 bytes in: the coded codes
    bad = tmp_path / f"{where}.veil"
    bad.write_bytes(_retamper(stream.read_bytes(), 1, offset))
    r = decode(bad, tmp_path / "x.mp4", tiny_checkpoint)
    assert r.exit_code == 2, r.output
    assert "chunk 1" in r.output and ("tag" in r.output or "padding" in r.output)
    assert not (tmp_path / "x.mp4").exists()


def test_a_rotated_phone_clip_is_encoded_upright_as_veil_protect_reads_it(tmp_path, tiny_checkpoint) -> None:
    """The codec reads through veil's media layer: a clip tagged 90 degrees is encoded and decoded
    upright (the frames veil protect sees), with its sound."""
    from clips import synthetic_frames
    from clips import write_clip as write_tagged

    from veil.media.read import VideoReader

    src = write_tagged(tmp_path / "phone.mkv", synthetic_frames(12, width=64, height=48), fps=Fraction(12),
                       tone_hz=440.0, rotation=90)
    with VideoReader(src) as reader:
        upright = np.stack([f.image for f in reader])
    assert upright.shape == (12, 64, 48, 3)  # stored 64 wide, 48 high; shown turned
    stream, video = tmp_path / "phone.veil", tmp_path / "phone.mp4"
    r = runner.invoke(app, ["encode", str(src), "-o", str(stream), "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["decode", str(stream), "-o", str(video), "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 0, r.output
    with VideoReader(video) as reader:
        decoded = np.stack([f.image for f in reader])
        assert (reader.info.width, reader.info.height, reader.info.audio_streams) == (48, 64, 1)
    assert decoded.shape == upright.shape
    # the picture is the upright one: closer to it than to the same frames turned the other way
    turned = np.ascontiguousarray(np.rot90(upright, k=2, axes=(1, 2)))
    err = lambda a, b: float(np.mean((a.astype(float) - b.astype(float)) ** 2))  # noqa: E731
    assert err(decoded, upright) < err(decoded, turned)


def test_a_variable_frame_rate_clip_comes_back_with_its_own_timing(tmp_path, tiny_checkpoint) -> None:
    from clips import synthetic_frames
    from clips import write_clip as write_timed

    from veil.media.read import VideoReader

    pts = [0, 40, 120, 130, 300, 310, 320, 600, 640, 700, 1000, 1040]  # ms: a phone's uneven frame times
    src = write_timed(tmp_path / "vfr.mkv", synthetic_frames(len(pts), width=64, height=48), pts=pts,
                      time_base=Fraction(1, 1000), tone_hz=440.0)
    stream, video = tmp_path / "vfr.veil", tmp_path / "vfr_decoded.mkv"
    assert runner.invoke(app, ["encode", str(src), "-o", str(stream), "--checkpoint", str(tiny_checkpoint)]).exit_code == 0
    r = runner.invoke(app, ["decode", str(stream), "-o", str(video), "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 0, r.output
    with VideoReader(video) as reader:
        times = [round(f.time_s * 1000) for f in reader]
    assert times == pts


def test_chunk_timestamps_that_go_back_are_refused(tmp_path) -> None:
    import io

    from veil.stream.format import ChunkRecord, CorruptStreamError, StreamHeader, StreamReader, StreamWriter

    header = StreamHeader("m", "0" * 64, "f2f", 64, 48, Fraction(12), 4, 32, 2, time_base=Fraction(1, 1000))
    buf = io.BytesIO()
    writer = StreamWriter(buf, header, None)
    writer.write_chunk(ChunkRecord(0, 2, b"codes", (0, 40)))
    writer.write_chunk(ChunkRecord(2, 2, b"codes", (40, 80)))  # 40 again: not after the last one
    writer.close(4)
    with pytest.raises(CorruptStreamError, match="timestamps do not increase"):
        list(StreamReader(io.BytesIO(buf.getvalue())))

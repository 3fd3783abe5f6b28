"""Damaged recordings: decoded past the damage as FFmpeg does, the damaged stretches masked and counted."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from veil.cli import app
from veil.detect import get_detector
from veil.errors import VideoOpenError
from veil.media.read import VideoReader

runner = CliRunner()


@pytest.fixture(scope="module")
def damaged(media, tmp_path_factory):
    """The store's 472-frame WolfgangLanger clip with 20 kB of noise written over its middle, as a
    crash leaves a recording (strict decoding stops at frame 213)."""
    data = bytearray(media("WolfgangLanger_Pexels.mp4").read_bytes())
    start = int(len(data) * 0.45)
    data[start:start + 20_000] = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    path = tmp_path_factory.mktemp("damaged") / "crash.mp4"
    path.write_bytes(bytes(data))
    return path


def test_strict_decoding_stops_where_tolerant_decoding_goes_on(damaged):
    with VideoReader(damaged) as reader, pytest.raises(VideoOpenError, match="damaged: decoding stopped"):
        for _ in reader:
            pass
    with VideoReader(damaged, tolerate_damage=True) as reader:
        frames = list(reader)
        damage = reader.damage
    assert len(frames) >= 450 and damage.errors >= 1 and damage.lost == 472 - len(frames)
    flagged = [f for f in frames if f.damaged]
    assert len(flagged) == damage.frames > 0
    assert not any(f.damaged for f in frames[:200])  # the frames before the damage are clean
    first, last = damage.ranges[0]
    assert 8.0 < first < last < 13.0  # the damage sits 45% into the 19.7 s clip
    pts = [f.pts for f in frames]
    assert pts == sorted(pts)  # the decodable frames keep their timestamps, in order


def _run(damaged, out, *extra):
    summary = out.with_suffix(".json")
    result = runner.invoke(app, ["protect", str(damaged), "-o", str(out), "--json", str(summary), "-q", *extra])
    return result, (json.loads(summary.read_text())["files"] if summary.exists() else [])


def test_a_damaged_recording_is_protected_with_its_damaged_frames_masked(damaged, tmp_path):
    out = tmp_path / "safe.mp4"
    result, files = _run(damaged, out)
    assert result.exit_code == 0, result.output
    assert "damaged" in result.output and "fully masked" in result.output
    s = files[0]
    assert s["decode_errors"] >= 1 and s["frames_damaged"] > 0 and s["damaged_ranges"]
    assert s["frames"] + s["frames_lost"] == 472
    with VideoReader(out) as reader:
        written = list(reader)
    assert len(written) == s["frames"]
    ranges = s["damaged_ranges"]
    damaged = [any(a - 1e-3 <= f.time_s <= b + 1e-3 for a, b in ranges) for f in written]
    assert sum(damaged) == s["frames_damaged"]
    assert all(f.image.max() <= 16 for f, d in zip(written, damaged) if d)  # masked whole (black, after x264)
    # every other frame is protected: a thorough detector finds no face on it
    judge = get_detector("mtcnn", detect_size=None)
    clean = [f for f, d in zip(written, damaged) if not d]
    assert len(clean) > 300
    assert sum(len(judge.detect(f.image)) for f in clean[::15]) == 0


def test_on_damage_protect_and_stop(damaged, tmp_path):
    out = tmp_path / "protected.mp4"
    result, files = _run(damaged, out, "--on-damage", "protect")
    assert result.exit_code == 0, result.output and "protected" in result.output
    assert files[0]["frames_damaged"] > 0
    with VideoReader(out) as reader:
        bright = [f.image.max() for f in reader if f.time_s > files[0]["damaged_ranges"][0][0] + 0.1][:5]
    assert min(bright) > 100  # shown (protected), not masked
    out = tmp_path / "stopped.mp4"
    result, _ = _run(damaged, out, "--on-damage", "stop")
    assert result.exit_code == 2 and "damaged: decoding stopped" in result.output and not out.exists()


def test_a_recording_cut_short_is_protected_up_to_where_it_ends(media, tmp_path):
    src = tmp_path / "cut.mp4"
    src.write_bytes(media("WolfgangLanger_Pexels.mp4").read_bytes()[:200_000])
    out = tmp_path / "safe.mp4"
    result, files = _run(src, out)
    assert result.exit_code == 0, result.output
    s = files[0]
    assert 30 < s["frames"] < 100 and s["frames"] + s["frames_lost"] == 472
    assert s["frames_damaged"] == 1  # the last, possibly half-decoded frame is masked
    assert "never decoded" in result.output
    result, _ = _run(src, tmp_path / "strict.mp4", "--on-damage", "stop")
    assert result.exit_code == 2 and "truncated" in result.output

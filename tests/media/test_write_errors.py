"""An output that cannot be completed (a full disk, a file-size limit) is removed; the error is one
line with exit code 1; a batch marks that file failed, goes on, and resumes it later."""

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

VEIL = [sys.executable, "-c", "from veil.cli import main; main()"]


def _limited(limit_bytes: int):
    """What a child runs before veil: files larger than `limit_bytes` cannot be written (EFBIG),
    as on a nearly full disk; the signal that would kill it is ignored, so writes fail instead."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def _veil(*args, limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*VEIL, *map(str, args)], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(limit) if limit else None, env={**os.environ, "COLUMNS": "200"})


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.is_file() and "manifest" not in p.name)


def test_a_video_that_cannot_be_written_leaves_nothing_and_exits_1(media, tmp_path):
    src = tmp_path / "in.mp4"
    shutil.copy(media("WolfgangLanger_Pexels.mp4"), src)
    out = tmp_path / "out" / "safe.mp4"
    out.parent.mkdir()
    done = _veil("protect", src, "-o", out, "-q", limit=200_000)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write") and "File too large" in lines[0]
    assert not out.exists() and _leftovers(out.parent) == []
    assert src.stat().st_size == media("WolfgangLanger_Pexels.mp4").stat().st_size


def test_a_photo_that_cannot_be_written_leaves_nothing_and_exits_1(media, tmp_path):
    out = tmp_path / "safe.png"
    done = _veil("protect", media("multi_face.jpg"), "-o", out, "-q", limit=50_000)
    assert done.returncode == 1 and "File too large" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def _first_seconds(src: Path, dst: Path, seconds: float) -> None:
    """The first `seconds` of `src`, its packets copied (a shorter real clip)."""
    import av

    with av.open(str(src)) as source, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in (source.streams.video[0], *source.streams.audio)}
        for packet in source.demux(*[source.streams[i] for i in streams]):
            if packet.dts is None or packet.time_base * packet.dts > seconds:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def test_a_batch_marks_the_file_it_cannot_write_failed_and_resumes_it(media, tmp_path):
    archive, safe = tmp_path / "archive", tmp_path / "safe"
    archive.mkdir()
    shutil.copy(media("single_face.mp4"), archive / "small.mp4")
    _first_seconds(media("WolfgangLanger_Pexels.mp4"), archive / "large.mp4", 7)
    small = _veil("protect", archive / "small.mp4", "-o", tmp_path / "probe.mp4", "-q")
    assert small.returncode == 0, small.stderr
    limit = (tmp_path / "probe.mp4").stat().st_size + 100_000  # room for the small output, not the large
    done = _veil("protect", archive, "-o", safe, "-q", limit=limit)
    assert done.returncode == 1, done.stderr
    assert (safe / "small.mp4").exists() and not (safe / "large.mp4").exists() and _leftovers(safe) == []
    assert "large.mp4" in done.stderr and "File too large" in done.stderr
    with sqlite3.connect(safe / ".veil-manifest.sqlite") as db:
        rows = dict(db.execute("SELECT input, status FROM files"))
    assert {Path(k).name: v for k, v in rows.items()} == {"small.mp4": "done", "large.mp4": "failed"}
    again = _veil("protect", archive, "-o", safe, "-q")
    assert again.returncode == 0, again.stderr
    assert (safe / "large.mp4").exists() and "1 files already done" in again.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_the_limit_itself_works():
    """The test's own tool: a child past its file-size limit gets EFBIG, not killed."""
    code = "open('/dev/null'); import tempfile; f = tempfile.TemporaryFile(); f.write(b'x' * 10000); f.flush()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=_limited(1000))
    assert done.returncode == 1 and "File too large" in done.stderr


def test_two_runs_writing_one_file_leave_one_whole_video(media, tmp_path):
    """Each run writes its own temporary file and renames it whole: the output is one run's video,
    never a mix, and nothing else is left."""
    out = tmp_path / "safe.mp4"
    runs = [subprocess.Popen([*VEIL, "protect", str(media("single_face.mp4")), "-o", str(out), "-q",
                              "--method", method], stderr=subprocess.PIPE, text=True)
            for method in ("blur", "mosaic")]
    assert [run.wait(timeout=300) for run in runs] == [0, 0], [run.stderr.read() for run in runs]
    from veil.media.read import probe

    assert probe(out).frame_count == 72 and sorted(p.name for p in tmp_path.iterdir()) == ["safe.mp4"]


def test_a_temporary_still_being_written_by_another_run_is_not_cleaned_up(tmp_path):
    """A run that cleans up what a killed run left must not remove the file of a run still writing."""
    from veil.batch.run import remove_temporaries

    dst = tmp_path / "safe.mp4"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from veil.media.outputs import temporary_beside; "
        f"print(temporary_beside(Path({str(dst)!r})), flush=True); sys.stdin.read()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        held = Path(writer.stdout.readline().strip())
        assert held.exists() and remove_temporaries(dst) == 0 and held.exists()
    finally:
        writer.communicate("")  # the writer ends as a killed run would: its lock goes with it
    assert remove_temporaries(dst) == 1 and not held.exists()

"""Resumable batches: a run killed with SIGKILL mid-file resumes without redoing or leaving anything."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from clips import synthetic_frames, write_clip
from typer.testing import CliRunner

from veil.batch import output_folder, plan_jobs, run_jobs
from veil.batch.manifest import MANIFEST_NAME, Manifest, options_fingerprint
from veil.cli import app
from veil.media.read import read_frames
from veil.models.store import sha256_file
from veil.pipeline import ProtectOptions

OPTIONS = ProtectOptions(method="blur")


def _archive(root: Path, n: int = 3, frames: int = 40) -> Path:
    archive = root / "archive"
    (archive / "sub").mkdir(parents=True)
    for i in range(n):
        folder = archive / "sub" if i == n - 1 else archive
        write_clip(folder / f"clip{i}.mkv", synthetic_frames(frames, width=320, height=192, seed=i))
    (archive / "notes.txt").write_text("not a video")
    return archive


def _outputs(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*.mkv"))}


def _hidden(folder: Path) -> list[str]:
    """Files a run leaves besides its outputs and its manifest (temporary files, segment parts)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name.startswith(".") and not p.name.startswith(".veil-manifest"))


def _rows(folder: Path) -> dict[str, tuple]:
    with sqlite3.connect(folder / MANIFEST_NAME) as db:
        return {Path(r[0]).name: r[1:] for r in db.execute("SELECT input, status, attempts, updated FROM files")}


def _done(folder: Path) -> list[str]:
    """Names of the inputs the manifest records as done (read while another process writes it)."""
    if not (folder / MANIFEST_NAME).exists():
        return []
    try:
        with sqlite3.connect(f"file:{folder / MANIFEST_NAME}?mode=ro", uri=True, timeout=1) as db:
            return [Path(r[0]).name for r in db.execute("SELECT input FROM files WHERE status = 'done'")]
    except sqlite3.OperationalError:
        return []


SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from veil.batch import plan_jobs, run_jobs
    from veil.pipeline import ProtectOptions

    if __name__ == "__main__":
        archive, safe, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
        jobs, _ = plan_jobs([archive], safe)
        run_jobs(jobs, ProtectOptions(method="blur"), workers=workers, manifest=safe, show_progress=False)
""")


@pytest.mark.parametrize("workers", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_sigkill_mid_file_then_resume(tmp_path, workers):
    archive = _archive(tmp_path)
    jobs, skipped = plan_jobs([archive], tmp_path / "clean")
    assert [p.name for p in skipped] == ["notes.txt"]
    clean = run_jobs(jobs, OPTIONS, manifest=output_folder([archive], tmp_path / "clean"), show_progress=False)
    assert clean.exit_code == 0 and len(clean.summaries) == 3
    expected = _outputs(tmp_path / "clean")
    assert len(expected) == 3

    safe = tmp_path / "safe"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(archive), str(safe), str(workers)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    killed_with_temp = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = _done(safe)
            temps = _hidden(safe) if done else []
            if done and temps:  # one file finished, another half-written
                os.killpg(proc.pid, signal.SIGKILL)
                killed_with_temp = True
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_with_temp, f"the run ended before it could be killed mid-file: {proc.stderr.read()[-2000:]!r}"
    finished = {name: (p.stat().st_ino, p.stat().st_mtime_ns)
                for name in _done(safe) for p in safe.rglob(name)}
    rows_before = _rows(safe)
    assert 1 <= len(finished) < 3

    report = run_jobs(plan_jobs([archive], safe)[0], OPTIONS, manifest=safe, show_progress=False)
    assert report.exit_code == 0, report.errors
    assert sorted(j.src.name for j in report.resumed) == sorted(finished)
    assert len(report.summaries) == 3 - len(finished)
    assert _outputs(safe) == expected  # every output complete, byte for byte the clean run's
    assert _hidden(safe) == []  # no temporary file left
    for name, stat in finished.items():  # finished files not touched again
        path = next(safe.rglob(name))
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stat
        src_name = name
        assert _rows(safe)[src_name] == rows_before[src_name]
    with Manifest(safe, lock=False, create=False) as book:
        assert book.totals()["done"] == 3 and book.totals()["failed"] == 0
        for entry in book.entries():
            assert entry.output_sha256 == sha256_file(entry.output)
            assert entry.sha256 == sha256_file(entry.input)


def test_changed_input_is_redone_touched_input_is_not(tmp_path):
    archive = _archive(tmp_path, n=2, frames=8)
    safe = tmp_path / "safe"
    jobs, _ = plan_jobs([archive], safe)
    assert run_jobs(jobs, OPTIONS, manifest=safe, show_progress=False).exit_code == 0
    changed, touched = archive / "clip0.mkv", archive / "sub" / "clip1.mkv"
    write_clip(changed, synthetic_frames(8, width=320, height=192, seed=99))
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))
    report = run_jobs(jobs, OPTIONS, manifest=safe, show_progress=False)
    assert [j.src for j in report.resumed] == [touched]
    assert [s.input for s in report.summaries] == [str(changed)]
    first = next(read_frames(safe / "clip0.mkv"))
    new, old = (np.abs(first.astype(int) - synthetic_frames(1, width=320, height=192, seed=k)[0]).mean()
                for k in (99, 0))
    assert new < 10 < old  # the output is the new content's
    # Other options, other output: everything is redone.
    report = run_jobs(jobs, ProtectOptions(method="mosaic"), manifest=safe, show_progress=False)
    assert report.resumed == [] and len(report.summaries) == 2
    # resume=False redoes everything too.
    report = run_jobs(jobs, ProtectOptions(method="mosaic"), manifest=safe, resume=False, show_progress=False)
    assert len(report.summaries) == 2
    assert options_fingerprint(OPTIONS) != options_fingerprint(ProtectOptions(method="mosaic"))


def test_status_prints_totals_and_failures(tmp_path):
    archive = _archive(tmp_path, n=2, frames=6)
    (archive / "broken.mp4").write_bytes(b"not a video at all" * 100)
    safe = tmp_path / "safe"
    jobs, _ = plan_jobs([archive], safe)
    report = run_jobs(jobs, OPTIONS, workers=1, manifest=safe, show_progress=False)
    assert report.exit_code == 2 and len(report.errors) == 1 and len(report.summaries) == 2
    result = CliRunner().invoke(app, ["status", str(safe)])
    assert result.exit_code == 1
    assert "3 files: 2 done, 1 failed, 0 to do; 12 frames protected" in result.output
    assert "broken.mp4" in result.output and "not a readable video" in result.output
    missing = CliRunner().invoke(app, ["status", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no batch manifest" in missing.output


def test_one_run_per_output_folder(tmp_path):
    with Manifest(tmp_path / "safe"):
        with pytest.raises(Exception, match="another veil run"):
            Manifest(tmp_path / "safe")


def test_progress_shows_files_failures_and_rate(tmp_path):
    import io

    from rich.console import Console

    archive = _archive(tmp_path, n=2, frames=6)
    (archive / "broken.mp4").write_bytes(b"x" * 100)
    out = io.StringIO()
    jobs, _ = plan_jobs([archive], tmp_path / "safe")
    run_jobs(jobs, OPTIONS, manifest=tmp_path / "safe", console=Console(file=out, force_terminal=True, width=120))
    text = out.getvalue()
    assert "3/3 files, 1 failed" in text and "frames/s" in text


def test_largest_files_start_first_and_reports_keep_input_order(tmp_path, monkeypatch):
    import veil.batch.run as batch

    archive = tmp_path / "archive"
    archive.mkdir()
    for name, frames in (("a.mkv", 6), ("b.mkv", 30), ("c.mkv", 12)):
        write_clip(archive / name, synthetic_frames(frames, width=320, height=192, seed=frames))
    started = []
    real = batch._runner

    def recording(*args):
        runner = real(*args)
        submit = runner.submit
        runner.submit = lambda task: (started.append(task.src.name), submit(task))
        return runner

    monkeypatch.setattr(batch, "_runner", recording)
    jobs, _ = plan_jobs([archive], tmp_path / "safe")
    report = run_jobs(jobs, OPTIONS, manifest=tmp_path / "safe", show_progress=False)
    assert started == ["b.mkv", "c.mkv", "a.mkv"]
    assert [Path(s.input).name for s in report.summaries] == ["a.mkv", "b.mkv", "c.mkv"]


def test_ctrl_c_stops_at_once_and_leaves_no_temporary(tmp_path):
    archive = _archive(tmp_path)
    safe = tmp_path / "safe"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(archive), str(safe), "2"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        # Mid-file, with a file still to come (so the interrupt leaves work pending): not when the
        # last file is being written, which a loaded machine may see only as the run ends.
        while time.monotonic() < deadline and proc.poll() is None and not (
                safe.exists() and _hidden(safe) and len(_done(safe)) < 2):
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before a file was half-written"
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert b"KeyboardInterrupt" in proc.stderr.read()
    assert _hidden(safe) == []  # the half-written outputs are gone already
    statuses = {row[0] for row in _rows(safe).values()}
    assert "running" not in statuses and "pending" in statuses


def test_a_worker_killed_fails_only_its_file(tmp_path):
    import multiprocessing
    import threading

    archive = _archive(tmp_path)
    safe = tmp_path / "safe"
    jobs, _ = plan_jobs([archive], safe)
    reports = []
    thread = threading.Thread(target=lambda: reports.append(
        run_jobs(jobs, OPTIONS, workers=2, manifest=safe, show_progress=False)))
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (safe.exists() and _hidden(safe)):
        time.sleep(0.01)
    (victim, *_) = [p for p in multiprocessing.active_children() if p.name.startswith("veil-worker")]
    os.kill(victim.pid, signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
    thread.join(timeout=180)
    (report,) = reports
    assert report.exit_code == 1 and len(report.summaries) == 2
    ((job, message),) = report.errors
    assert "worker process died" in message and "-9" in message
    assert _hidden(safe) == []  # its half-written output removed at once
    again = run_jobs(jobs, OPTIONS, workers=2, manifest=safe, show_progress=False)
    assert again.exit_code == 0 and [s.input for s in again.summaries] == [str(job.src)]
    assert len(again.resumed) == 2 and _hidden(safe) == []

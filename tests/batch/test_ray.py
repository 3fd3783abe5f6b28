"""The batch on a local Ray (2 workers): the same outputs and manifest as one process."""

from __future__ import annotations

import shutil
import sys
import time

import pytest
from clips import synthetic_frames, write_clip

from veil.batch import plan_jobs, run_jobs
from veil.batch.manifest import Manifest
from veil.models.store import sha256_file
from veil.pipeline import ProtectOptions

OPTIONS = ProtectOptions(method="blur", detect_size=320)


def test_ray_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    from veil.errors import InputError

    jobs, _ = plan_jobs([write_clip(tmp_path / "a.mkv", synthetic_frames(2))], tmp_path / "out.mkv")
    with pytest.raises(InputError, match=r"pip install 'veil\[ray\]'"):
        run_jobs(jobs, OPTIONS, use_ray=True, show_progress=False)


def test_local_ray_two_workers_matches_one_process(media, tmp_path):
    ray = pytest.importorskip("ray")
    archive = tmp_path / "archive"
    (archive / "sub").mkdir(parents=True)
    shutil.copy(media("single_face.mp4"), archive / "face.mp4")
    write_clip(archive / "sub" / "texture.mkv", synthetic_frames(20, width=320, height=192))
    jobs_one, _ = plan_jobs([archive], tmp_path / "one")
    one = run_jobs(jobs_one, OPTIONS, manifest=tmp_path / "one", show_progress=False)
    assert one.exit_code == 0 and len(one.summaries) == 2

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        jobs, _ = plan_jobs([archive], tmp_path / "ray")
        report = run_jobs(jobs, OPTIONS, workers=2, use_ray=True, manifest=tmp_path / "ray", show_progress=False)
        again = run_jobs(jobs, OPTIONS, workers=2, use_ray=True, manifest=tmp_path / "ray", show_progress=False)
        events = _events_of_one_task(archive / "face.mp4", tmp_path / "progress.mp4")
    finally:
        ray.shutdown()
    assert report.exit_code == 0, report.errors
    assert [s.input for s in report.summaries] == [s.input for s in one.summaries]
    assert [s.faces_per_frame for s in report.summaries] == [s.faces_per_frame for s in one.summaries]
    assert len(again.resumed) == 2 and again.summaries == []
    for job_one, job in zip(jobs_one, jobs):
        assert sha256_file(job.dst) == sha256_file(job_one.dst), job.dst
    with Manifest(tmp_path / "ray", lock=False, create=False) as book:
        assert book.totals()["done"] == 2
    # The actors report frames done while they work, not only when a file is finished.
    progress = [e for e in events if e[0] == "progress"]
    assert progress and all(e[1] == 7 and 0 < e[2] <= e[3] == 72 for e in progress)
    assert events[-1][0] == "result" and events[-1][1].ok


def _events_of_one_task(src, dst):
    from veil.batch.ray_runner import RayRunner
    from veil.batch.workers import Task

    runner = RayRunner(OPTIONS, 1, progress_every=0.02)
    events = []
    deadline = time.monotonic() + 120
    try:
        runner.submit(Task(7, "file", src, dst))
        while (not events or events[-1][0] != "result") and time.monotonic() < deadline:
            runner.poll(0.1, events.append)
    finally:
        runner.close()
    return events

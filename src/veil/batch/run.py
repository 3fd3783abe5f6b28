"""Many videos and photos: run jobs (see `veil.batch.plan`) with progress, resumably, and collect a report.

A folder is searched recursively and its layout mirrored under the output folder; files that are
neither videos nor photos are skipped with a note. One bad file does not stop the others: its
error is recorded and the run's exit code says that something failed (2 for bad input, 1 for
other failures).

With an output folder, a manifest (`veil.batch.manifest`) records every file, so a run that was
interrupted (Ctrl-C, kill -9, power loss) resumes where it stopped: finished files are skipped,
changed inputs redone, half-written outputs (temporary files) removed. The work runs in this
process, in N worker processes (``workers=N``) or on Ray (``use_ray=True``); long videos can be cut
into segments at keyframes, protected in parallel and joined (`veil.batch.segments`).
"""

from __future__ import annotations

import re
import shutil
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from veil import __version__
from veil.batch.manifest import Manifest, options_fingerprint
from veil.batch.plan import Job
from veil.batch.segments import merge_summaries, plan_segments
from veil.batch.workers import InlineRunner, ProcessRunner, Task, TaskResult
from veil.errors import InputError
from veil.media.outputs import in_use
from veil.media.photo import is_photo
from veil.pipeline import ProtectOptions, Summary

__all__ = ["Report", "run_jobs", "remove_temporaries"]

PARTS_FOLDER = ".veil-parts"


@dataclass
class Report:
    summaries: list[Summary] = field(default_factory=list)
    errors: list[tuple[Job, str]] = field(default_factory=list)
    exit_code: int = 0
    resumed: list[Job] = field(default_factory=list)  # done by an earlier run, unchanged: skipped

    def to_dict(self) -> dict[str, Any]:
        frames = sum(s.frames for s in self.summaries)
        seconds = sum(s.seconds for s in self.summaries)
        return {
            "veil_version": __version__,
            "files": [s.to_dict() for s in self.summaries],
            "failed": [{"input": str(j.src), "error": m} for j, m in self.errors],
            "totals": {"files": len(self.summaries), "failed": len(self.errors), "resumed": len(self.resumed),
                       "frames": frames,
                       "faces": sum(s.faces for s in self.summaries), "seconds": seconds,
                       "fps": frames / seconds if seconds else 0.0},
        }


def _temp_pattern(dst: Path) -> re.Pattern:
    # veil.media.outputs.temporary_beside: tempfile.mkstemp(prefix=".<stem>.", suffix=<suffix>), 8 random chars.
    return re.compile(rf"^\.{re.escape(dst.stem)}\.[a-z0-9_]{{8}}{re.escape(dst.suffix)}$")


def remove_temporaries(dst: Path) -> int:
    """Delete half-written outputs of `dst` left by a run that was killed. Returns how many."""
    if not dst.parent.is_dir():
        return 0
    pattern, removed = _temp_pattern(dst), 0
    for path in dst.parent.iterdir():
        if pattern.match(path.name) and not in_use(path):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)$")


def _remove_stale_temporaries(outputs: list[Path]) -> None:
    """`remove_temporaries` for many outputs, listing each folder once (archives have big folders)."""
    by_folder: dict[Path, set[tuple[str, str]]] = {}
    for dst in outputs:
        by_folder.setdefault(dst.parent, set()).add((dst.stem, dst.suffix))
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _TEMP_NAME.match(path.name)
            if match and (match["stem"], match["suffix"]) in names and not in_use(path):
                path.unlink(missing_ok=True)


def _runner(options: ProtectOptions, workers: int, use_ray: bool, ray_address: str | None, threads: int | None,
            protector: Any = None):
    if use_ray:
        from veil.batch.ray_runner import RayRunner

        return RayRunner(options, workers, address=ray_address, threads=threads)
    if workers > 1:
        return ProcessRunner(options, workers, threads=threads)
    return InlineRunner(options, threads=threads or 0, protector=protector)


@dataclass
class _Pending:
    """A job in flight: its tasks, and for a segmented file the parts done so far."""

    job: Job
    index: int
    started: float
    parts: list = field(default_factory=list)  # Segment, in order
    part_summaries: dict[int, Summary] = field(default_factory=dict)
    frames: dict[int, tuple[int, int]] = field(default_factory=dict)  # task id -> (done, total)
    failed: bool = False


def run_jobs(jobs: Sequence[Job], options: ProtectOptions, *, console: Console | None = None,
             show_progress: bool = True, workers: int = 1, use_ray: bool = False,
             ray_address: str | None = None, manifest: Path | None = None, resume: bool = True,
             segment_seconds: float | None = None, threads: int | None = None, protector: Any = None) -> Report:
    """Protect the jobs' videos; never raises for one bad file.

    workers: parallel workers (processes, or Ray actors with `use_ray`), each building the models once.
    ray_address: a Ray cluster to join (None: start a local Ray).
    manifest: the output folder that holds the manifest (see `output_folder`); None: no manifest.
    resume: skip files the manifest records as done and unchanged (False: redo everything).
    segment_seconds: cut videos longer than this at keyframes and protect the segments in parallel.
    threads: CPU threads of each worker's models (None: the cores shared evenly by the workers; one
        worker in this process uses the libraries' defaults).
    protector: one already built from `options`, used when the work runs in this process (worker
        processes and Ray actors build their own).
    """
    if workers < 1:
        raise InputError("the number of workers must be at least 1")
    if segment_seconds is not None and segment_seconds <= 0:
        raise InputError("segment_seconds must be positive")
    book = Manifest(manifest) if manifest is not None and not options.dry_run else None
    try:
        return _Batch(jobs, options, book, console, show_progress, workers, use_ray, ray_address, resume,
                      segment_seconds, threads, protector).run()
    finally:
        if book is not None:
            book.close()


class _Batch:
    def __init__(self, jobs, options, book, console, show_progress, workers, use_ray, ray_address, resume,
                 segment_seconds, threads, protector) -> None:
        self.threads, self.protector = threads, protector
        self.jobs, self.options, self.book = list(jobs), options, book
        self.console, self.show_progress = console, show_progress
        self.workers, self.use_ray, self.ray_address = workers, use_ray, ray_address
        self.resume, self.segment_seconds = resume, segment_seconds
        self.fingerprint = options_fingerprint(options)
        self.report = Report()
        self.queue: deque[Task] = deque()
        self.tasks: dict[int, tuple[_Pending, Task]] = {}
        self.outcomes: list[tuple[int, Summary | None, Job, str | None]] = []
        self.next_id = 0
        self.parts_root = (book.folder if book is not None else None)

    # --- planning --------------------------------------------------------------------------------

    def _todo(self) -> list[Job]:
        todo = []
        if self.book is not None:
            self.book.interrupted()
            if self.parts_root is not None:
                shutil.rmtree(self.parts_root / PARTS_FOLDER, ignore_errors=True)
        _remove_stale_temporaries([job.dst for job in self.jobs if job.dst is not None])
        for job in self.jobs:
            if (self.book is not None and self.resume and job.dst is not None
                    and self.book.is_done(job.src, job.dst, self.fingerprint)):
                self.report.resumed.append(job)
                continue
            todo.append(job)
        return todo

    def _task(self, pending: _Pending, kind: str, dst: Path | None, **kw) -> Task:
        task = Task(self.next_id, kind, pending.job.src, dst, **kw)
        self.next_id += 1
        self.tasks[task.id] = (pending, task)
        return task

    def _plan(self, job: Job, index: int) -> list[Task]:
        pending = _Pending(job, index, time.perf_counter())
        segments = []
        if self.segment_seconds and job.dst is not None and not is_photo(job.src):
            try:
                segments = plan_segments(job.src, self.segment_seconds, self.options.tracker)
            except Exception:  # noqa: BLE001 - an unreadable file fails in its own task, with its message
                segments = []
        if len(segments) < 2:
            return [self._task(pending, "file", job.dst)]
        parts_dir = self.parts_root / PARTS_FOLDER if self.parts_root else job.dst.parent / PARTS_FOLDER
        folder = parts_dir / f"{index:06d}"
        shutil.rmtree(folder, ignore_errors=True)  # parts of a run that was killed
        folder.mkdir(parents=True)
        pending.parts = [s.with_part(folder / f"part{k:04d}{job.dst.suffix}") for k, s in enumerate(segments)]
        return [self._task(pending, "segment", job.dst, segment=s) for s in pending.parts]

    # --- running ---------------------------------------------------------------------------------

    def run(self) -> Report:
        todo = self._todo()
        sizes = {job.src: _size(job.src) for job in todo}
        total_bytes = max(sum(sizes.values()), 1)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn())
        self.progress = Progress(*columns, console=self.console, disable=not self.show_progress, transient=True)
        self.sizes, self.bytes_done, self.frames_done = sizes, 0.0, 0
        self.files_done = self.files_failed = 0
        self.started = time.perf_counter()
        self.bars: dict[int, Any] = {}
        if not todo:
            return self.report
        runner = _runner(self.options, self.workers, self.use_ray, self.ray_address, self.threads, self.protector)
        # Largest files first: the batch does not end with one worker busy on a long file while the
        # others idle. Reports and the manifest keep the input order.
        pending_jobs = deque(sorted(enumerate(todo), key=lambda item: -sizes[item[1].src]))
        in_flight = 0
        try:
            with self.progress:
                self.overall = self.progress.add_task("batch", total=total_bytes, info="")
                self._show()
                while pending_jobs or self.queue or in_flight:
                    while in_flight < 2 * runner.capacity and (self.queue or pending_jobs):
                        if not self.queue:
                            index, job = pending_jobs.popleft()
                            if self.book is not None and job.dst is not None:
                                self.book.start(job.src, job.dst, self.fingerprint)
                            self.queue.extend(self._plan(job, index))
                        runner.submit(self.queue.popleft())
                        in_flight += 1
                    finished: list[TaskResult] = []

                    def on_event(event: tuple) -> None:
                        if event[0] == "progress":
                            self._frames(event[1], event[2], event[3])
                        else:
                            finished.append(event[1])

                    runner.poll(0.2, on_event)
                    for result in finished:
                        in_flight -= 1
                        self._done(result)
                    self._show()
        except BaseException:
            runner.close(abort=True)
            for pending, task in self.tasks.values():
                if task.dst is not None:
                    remove_temporaries(task.dst)
                if task.kind == "segment":
                    remove_temporaries(task.segment.part)
            if self.book is not None:
                self.book.interrupted()
            raise
        runner.close()
        self.outcomes.sort(key=lambda o: o[0])
        for _, summary, job, error in self.outcomes:
            if error is not None:
                self.report.errors.append((job, error))
            elif summary is not None:
                self.report.summaries.append(summary)
        return self.report

    def _frames(self, task_id: int, done: int, total: int) -> None:
        if task_id not in self.tasks:
            return
        pending, task = self.tasks[task_id]
        bar = self.bars.get(task_id)
        if bar is None:
            name = pending.job.src.name[:40] + (f" [{task.segment.index}]" if task.kind == "segment" else "")
            bar = self.bars[task_id] = self.progress.add_task(name, total=None, info="")
        self.progress.update(bar, completed=done, total=total or None)
        pending.frames[task_id] = (done, total)
        self._show()

    def _show(self) -> None:
        elapsed = time.perf_counter() - self.started
        live = 0.0
        frames = self.frames_done
        seen: set[int] = set()
        for pending, _ in self.tasks.values():
            if id(pending) in seen:
                continue
            seen.add(id(pending))
            done = sum(d for d, _ in pending.frames.values())
            total = sum(t for _, t in pending.frames.values())
            frames += done
            if total and not pending.parts:
                live += self.sizes.get(pending.job.src, 0) * min(done / total, 1.0)
        fps = frames / elapsed if elapsed > 0 else 0.0
        failed = f", {self.files_failed} failed" if self.files_failed else ""
        info = f"{self.files_done + self.files_failed}/{len(self.sizes)} files{failed}, {fps:.1f} frames/s"
        self.progress.update(self.overall, completed=self.bytes_done + live, info=info)

    def _done(self, result: TaskResult) -> None:
        pending, task = self.tasks.pop(result.id)
        pending.frames.pop(result.id, None)
        if not result.ok and task.dst is not None:
            remove_temporaries(task.dst)  # a worker that died leaves its half-written file
        bar = self.bars.pop(result.id, None)
        if bar is not None:
            self.progress.remove_task(bar)
        if task.kind == "segment":
            if result.ok:
                pending.part_summaries[task.segment.index] = result.summary
                self.frames_done += result.summary.frames
                if len(pending.part_summaries) == len(pending.parts) and not pending.failed:
                    self.queue.appendleft(self._task(pending, "join", pending.job.dst,
                                                     parts=tuple(s.part for s in pending.parts)))
            elif not pending.failed:
                pending.failed = True
                self._file_done(pending, None, result)
            if pending.failed and not any(p is pending for p, _ in self.tasks.values()):
                _remove_parts(pending)
            return
        summary = result.summary
        if task.kind == "join" and result.ok:
            summary = merge_summaries([pending.part_summaries[k] for k in range(len(pending.parts))],
                                      output=pending.job.dst, seconds=time.perf_counter() - pending.started,
                                      audio_streams=result.extra.get("audio_streams", 0))
            _remove_parts(pending)
        elif summary is not None:
            self.frames_done += summary.frames
        self._file_done(pending, summary, result)

    def _file_done(self, pending: _Pending, summary: Summary | None, result: TaskResult) -> None:
        job = pending.job
        self.bytes_done += self.sizes.get(job.src, 0)
        if result.ok:
            self.files_done += 1
            if self.book is not None:
                self.book.finish(job.src, sha256=result.sha256, size=result.size, mtime_ns=result.mtime_ns,
                                 output_size=result.output_size, output_sha256=result.output_sha256,
                                 summary=summary.to_dict())
            self.outcomes.append((pending.index, summary, job, None))
        else:
            self.files_failed += 1
            if self.book is not None:
                self.book.fail(job.src, result.error)
            self.report.exit_code = max(self.report.exit_code, result.exit_code)
            self.outcomes.append((pending.index, None, job, result.error))


def _remove_parts(pending: _Pending) -> None:
    folder = pending.parts[0].part.parent
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # the parts folder itself, once no file uses it
    except OSError:
        pass


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

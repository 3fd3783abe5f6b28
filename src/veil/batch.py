"""Many videos: turn inputs (files, folders) into jobs, run them with progress, collect a report.

A folder is searched recursively and its layout mirrored under the output folder; files that are
not videos are skipped with a note. One bad file does not stop the others: its error is recorded
and the run's exit code says that something failed (2 for bad input, 1 for other failures).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from veil import __version__
from veil.errors import InputError, OutputError, VeilError
from veil.pipeline import ProtectOptions, Summary, protect_video
from veil.video import VIDEO_SUFFIXES

__all__ = ["Job", "Report", "plan_jobs", "run_jobs"]


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path | None  # None on a dry run


@dataclass
class Report:
    summaries: list[Summary] = field(default_factory=list)
    errors: list[tuple[Job, str]] = field(default_factory=list)
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        frames = sum(s.frames for s in self.summaries)
        seconds = sum(s.seconds for s in self.summaries)
        return {
            "veil_version": __version__,
            "files": [s.to_dict() for s in self.summaries],
            "failed": [{"input": str(j.src), "error": m} for j, m in self.errors],
            "totals": {"files": len(self.summaries), "failed": len(self.errors), "frames": frames,
                       "faces": sum(s.faces for s in self.summaries), "seconds": seconds,
                       "fps": frames / seconds if seconds else 0.0},
        }


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


def _under(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def plan_jobs(inputs: Sequence[Path], output: Path | None, *, dry_run: bool = False,
              suffix: str = "_protected") -> tuple[list[Job], list[Path]]:
    """Jobs for the inputs, and the files skipped because they are not videos.

    One input file: `output` is the output file (default ``<stem>_protected<ext>`` beside it).
    A folder or several inputs: `output` is a folder; a folder's layout is mirrored under it.
    """
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise InputError("give at least one video file or folder")
    single_file = len(inputs) == 1 and not inputs[0].is_dir()
    if single_file:
        src = inputs[0]
        if dry_run:
            return [Job(src, None)], []
        if output is None:
            return [Job(src, src.with_name(f"{src.stem}{suffix}{src.suffix}"))], []
        if output.is_dir() or (not output.suffix and not output.exists()):
            return [Job(src, output / src.name)], []
        return [Job(src, output)], []
    if output is None and not dry_run:
        raise InputError("several inputs or a folder need an output folder: -o FOLDER")
    if output is not None and output.exists() and not output.is_dir():
        raise OutputError(f"output {str(output)!r} is a file; several inputs need an output folder")
    jobs, skipped = [], []
    for item in inputs:
        if not item.is_dir():
            jobs.append(Job(item, None if dry_run else output / item.name))
            continue
        base = output if len(inputs) == 1 else (output / item.name if output else None)
        for path in sorted(p for p in item.rglob("*") if p.is_file()):
            if _under(path, output):
                continue  # never re-process what this run writes
            if not _is_video(path):
                skipped.append(path)
                continue
            jobs.append(Job(path, None if dry_run else base / path.relative_to(item)))
    return jobs, skipped


def run_jobs(jobs: Sequence[Job], options: ProtectOptions, *, console: Console | None = None,
             show_progress: bool = True) -> Report:
    """Protect each job's video in turn (models built once); never raises for one bad file."""
    report = Report()
    detector = options.build_detector()
    protector = options.build_protector()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not show_progress, transient=True) as progress:
        overall = progress.add_task("files", total=len(jobs), rate="")
        for job in jobs:
            task = progress.add_task(job.src.name[:40], total=None, rate="")
            started = time.perf_counter()

            def update(done: int, total: int, task: int = task, started: float = started) -> None:
                elapsed = time.perf_counter() - started
                rate = f"{done / elapsed:.1f} fps" if elapsed > 0 else ""
                progress.update(task, completed=done, total=total or None, rate=rate)

            try:
                summary = protect_video(job.src, job.dst, options, detector=detector, protector=protector,
                                        progress=update)
                report.summaries.append(summary)
            except VeilError as exc:
                report.errors.append((job, str(exc)))
                report.exit_code = max(report.exit_code, exc.exit_code)
            except Exception as exc:  # noqa: BLE001 - one broken file must not stop a folder run
                report.errors.append((job, f"{job.src}: unexpected failure: {type(exc).__name__}: {exc}"))
                report.exit_code = max(report.exit_code, 1)
            progress.remove_task(task)
            progress.advance(overall)
    return report

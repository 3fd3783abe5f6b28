"""Inputs to jobs: files and folders (recursive, layout mirrored), output names, the manifest folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from veil.errors import InputError, OutputError
from veil.media.files import is_media

__all__ = ["Job", "plan_jobs", "output_folder"]


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path | None  # None on a dry run


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
    """Jobs for the inputs, and the files skipped because they are neither videos nor photos.

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
            if not is_media(path):
                skipped.append(path)
                continue
            jobs.append(Job(path, None if dry_run else base / path.relative_to(item)))
    return jobs, skipped


def output_folder(inputs: Sequence[Path], output: Path | None, *, dry_run: bool = False) -> Path | None:
    """The folder that holds the batch manifest: the output folder of a folder or multi-file run."""
    inputs = [Path(p) for p in inputs]
    if dry_run or output is None or (len(inputs) == 1 and not inputs[0].is_dir()):
        return None
    return Path(output)

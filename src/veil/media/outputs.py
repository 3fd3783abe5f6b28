"""Outputs, videos and photos alike: the checks before anything is written, and the temporary file
beside the target that is moved into place only when complete.

A temporary file is locked (``flock``) by the process writing it until it is published, so that a
run cleaning up what a killed run left (`in_use`) never removes the file of a run still writing.
"""

from __future__ import annotations

import os
import tempfile
import time

try:
    import fcntl
except ImportError:  # not POSIX: temporaries are not locked, and none counts as in use
    fcntl = None  # type: ignore[assignment]
from collections.abc import Collection
from pathlib import Path

from veil.errors import OutputError

__all__ = ["check_output", "temporary_beside", "publish", "discard", "in_use"]

_HELD: dict[str, int] = {}  # temporary file -> the descriptor that holds its lock


def check_output(src: Path, dst: Path, suffixes: Collection[str], kind: str, examples: str) -> None:
    """Refuse an output that is the input itself, a folder, not a `kind` file (by its extension),
    or in a folder that cannot be created or written. `examples`: extensions to suggest."""
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise OutputError(f"output {str(dst)!r} is the input itself; veil never overwrites its input")
    if dst.is_dir():
        raise OutputError(f"output {str(dst)!r} is a folder; give a file name")
    if dst.suffix.lower() not in suffixes:
        raise OutputError(f"output {str(dst)!r} has no {kind} file extension (use {examples})")
    parent = dst.parent if str(dst.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {str(parent)!r}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"the output folder {str(parent)!r} is not writable")


def temporary_beside(dst: Path) -> Path:
    """A new empty file beside `dst` to write the output into: ``.<stem>.XXXXXXXX<suffix>``, the
    name a resumed batch looks for to remove what a killed run half wrote."""
    try:
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}.", suffix=dst.suffix)
    except OSError as exc:
        raise OutputError(f"cannot write in {str(dst.parent)!r}: {exc.strerror}") from None
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held (the descriptor stays open) until published
        _HELD[os.path.abspath(tmp)] = fd
    else:
        os.close(fd)
    return Path(tmp)


def in_use(path: Path, wait_s: float = 2.0) -> bool:
    """Whether another process is still writing the temporary file `path`: it holds the file's lock
    for `wait_s` (a run killed a moment ago may still be letting go of it)."""
    if fcntl is None or os.path.abspath(path) in _HELD:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return False
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return True
                time.sleep(0.05)
    finally:
        os.close(fd)


def publish(tmp: Path, dst: Path) -> None:
    """Move the finished `tmp` to `dst` in one step, with the permissions a new file gets."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
    os.replace(tmp, dst)
    _release(tmp)


def discard(tmp: Path) -> None:
    """Remove an unfinished temporary file (and let go of its lock)."""
    Path(tmp).unlink(missing_ok=True)
    _release(tmp)


def _release(tmp: Path) -> None:
    fd = _HELD.pop(os.path.abspath(tmp), None)
    if fd is not None:
        os.close(fd)

"""The batch manifest: one SQLite file in the output folder that says what is done.

Each input has one row: its path, size, mtime and sha256, the options it was protected with, its
status (``pending``, ``running``, ``done``, ``failed``), the output's path, size and sha256, the
JSON summary and the error. Only the coordinating process writes it, one transaction per change,
in WAL mode, so a run killed at any moment (Ctrl-C, ``kill -9``, power loss) leaves a manifest
that is consistent: a row is ``done`` only after its output was synced and moved into place.

A file is skipped on the next run when its row is ``done``, the input is unchanged (same size and
mtime, or the same sha256 when only the mtime moved) and the output is still there with the
recorded size. Anything else is redone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.errors import OutputError
from veil.models.store import sha256_file

__all__ = ["MANIFEST_NAME", "Manifest", "Entry", "options_fingerprint"]

MANIFEST_NAME = ".veil-manifest.sqlite"
_LOCK_NAME = ".veil-manifest.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    input TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    options TEXT NOT NULL,
    status TEXT NOT NULL,
    output_size INTEGER,
    output_sha256 TEXT,
    summary TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
)
"""


def options_fingerprint(options: Any) -> str:
    """A short stable hash of the protection options (a dataclass): other options, other output."""
    from dataclasses import asdict

    text = json.dumps(asdict(options), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Entry:
    """One row of the manifest."""

    input: str
    output: str
    size: int
    mtime_ns: int
    sha256: str | None
    options: str
    status: str
    output_size: int | None
    output_sha256: str | None
    summary: dict[str, Any] | None
    error: str | None
    attempts: int
    updated: float


class Manifest:
    """The manifest of one output folder; holds an exclusive lock while open (one run per folder).

    >>> with Manifest(Path("SAFE")) as manifest:  # doctest: +SKIP
    ...     manifest.totals()
    """

    def __init__(self, folder: str | os.PathLike, *, lock: bool = True, create: bool = True) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self._lock_fd: int | None = None
        if create:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create the output folder {str(self.folder)!r}: {exc.strerror}") from None
        elif not self.path.is_file():
            raise OutputError(f"{str(self.folder)!r} has no batch manifest ({MANIFEST_NAME})")
        self._db: sqlite3.Connection | None = None
        if lock:
            self._lock_fd = os.open(self.folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise OutputError(f"another veil run is writing to {str(self.folder)!r}") from None
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a 'done' row survives a power loss
            self._db.execute(_SCHEMA)
            self._db.execute("SELECT input, output, size, mtime_ns, sha256, options, status, output_size, "
                             "output_sha256, summary, error, attempts, updated FROM files LIMIT 0")
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            self.close()
            raise self._damaged(exc) from None

    def _damaged(self, exc: Exception) -> OutputError:
        return OutputError(f"the batch manifest {str(self.path)!r} is damaged ({exc}); move it away to start "
                           "the batch afresh (finished outputs are then checked again)")

    def _sql(self, sql: str, *args: object) -> sqlite3.Cursor:
        """Run one statement; a damaged manifest is an `OutputError` that says what to do."""
        try:
            return self._db.execute(sql, args)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._damaged(exc) from None

    def _rows(self, sql: str, *args: object) -> list[tuple]:
        try:
            return self._sql(sql, *args).fetchall()
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._damaged(exc) from None

    # --- reading ---------------------------------------------------------------------------------

    def get(self, src: str | os.PathLike) -> Entry | None:
        rows = self._rows("SELECT * FROM files WHERE input = ?", _key(src))
        return self._entry(rows[0]) if rows else None

    def entries(self) -> Iterator[Entry]:
        for row in self._rows("SELECT * FROM files ORDER BY input"):
            yield self._entry(row)

    def _entry(self, row: tuple) -> Entry:
        try:
            return _entry(row)
        except (ValueError, TypeError) as exc:  # a summary that is not JSON, a row of the wrong shape
            raise self._damaged(exc) from None

    def totals(self) -> dict[str, int]:
        counts = {"pending": 0, "running": 0, "done": 0, "failed": 0}
        for status, n in self._rows("SELECT status, COUNT(*) FROM files GROUP BY status"):
            counts[str(status)] = int(n)
        counts["files"] = sum(counts.values())
        return counts

    def is_done(self, src: Path, dst: Path, options: str) -> bool:
        """Whether `src` was protected to `dst` with these options and neither changed since."""
        entry = self.get(src)
        if entry is None or entry.status != "done" or entry.options != options or entry.output != _key(dst):
            return False
        try:
            st, out = src.stat(), dst.stat()
        except OSError:
            return False
        if out.st_size != entry.output_size:
            return False
        if st.st_size != entry.size:
            return False
        if st.st_mtime_ns != entry.mtime_ns:
            # Touched, copied or restored: the content decides.
            if entry.sha256 is None or sha256_file(src) != entry.sha256:
                return False
            self._sql("UPDATE files SET mtime_ns = ? WHERE input = ?", st.st_mtime_ns, _key(src))
        return True

    # --- writing (one transaction each) ----------------------------------------------------------

    def start(self, src: Path, dst: Path, options: str) -> None:
        """Record that `src` is being protected (its row is no longer 'done' until it finishes)."""
        try:
            size, mtime_ns = src.stat().st_size, src.stat().st_mtime_ns
        except OSError:
            size = mtime_ns = -1  # a missing input: its task fails with the reason
        self._sql(
            "INSERT INTO files (input, output, size, mtime_ns, options, status, attempts, updated) "
            "VALUES (?, ?, ?, ?, ?, 'running', 1, ?) "
            "ON CONFLICT(input) DO UPDATE SET output = excluded.output, size = excluded.size, "
            "mtime_ns = excluded.mtime_ns, options = excluded.options, status = 'running', "
            "sha256 = NULL, output_size = NULL, output_sha256 = NULL, summary = NULL, error = NULL, "
            "attempts = attempts + 1, updated = excluded.updated",
            _key(src), _key(dst), size, mtime_ns, options, time.time())

    def finish(self, src: Path, *, sha256: str, size: int, mtime_ns: int, output_size: int,
               output_sha256: str, summary: dict[str, Any]) -> None:
        self._sql(
            "UPDATE files SET status = 'done', sha256 = ?, size = ?, mtime_ns = ?, output_size = ?, "
            "output_sha256 = ?, summary = ?, error = NULL, updated = ? WHERE input = ?",
            sha256, size, mtime_ns, output_size, output_sha256, json.dumps(summary), time.time(), _key(src))

    def fail(self, src: Path, error: str) -> None:
        self._sql("UPDATE files SET status = 'failed', error = ?, updated = ? WHERE input = ?",
                  error, time.time(), _key(src))

    def interrupted(self) -> int:
        """Rows left 'running' by a run that stopped: back to 'pending'. Returns how many."""
        return self._sql("UPDATE files SET status = 'pending' WHERE status = 'running'").rowcount

    def close(self) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())


def _entry(row: tuple) -> Entry:
    (input_, output, size, mtime_ns, sha, options, status, output_size, output_sha, summary, error,
     attempts, updated) = row
    return Entry(input_, output, size, mtime_ns, sha, options, status, output_size, output_sha,
                 json.loads(summary) if summary else None, error, attempts, updated)

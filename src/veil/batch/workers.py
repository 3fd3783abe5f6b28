"""Where the work of a batch runs: in this process, or in worker processes that load the models once.

A unit of work is a `Task`: a whole file, one segment of a long file, or the join of a file's
protected segments. `execute` runs one task with already-built models and returns a `TaskResult`;
the back ends only differ in where `execute` runs:

- `InlineRunner`: in the calling process (``--jobs 1``);
- `ProcessRunner`: N spawned worker processes, each building its detector and protector once and
  taking tasks from a queue; a worker that dies (killed, out of memory) fails only its own task and
  is replaced;
- `veil.batch.ray_runner.RayRunner`: one Ray actor per worker, on one machine or a cluster.

Outputs are always written to a temporary file and moved into place, then synced, before a task
reports success, so the manifest never calls a file done that a power loss could still take away.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.errors import VeilError, VideoOpenError
from veil.models.store import sha256_file
from veil.pipeline import ProtectOptions, Summary, protect_file

__all__ = ["Task", "TaskResult", "Models", "build_models", "execute", "InlineRunner", "ProcessRunner"]


@dataclass(frozen=True)
class Task:
    """One unit of work. `kind`: "file" (src -> dst), "segment" (part `index` of src -> `part`),
    "join" (the protected `parts` of src -> dst)."""

    id: int
    kind: str
    src: Path
    dst: Path | None  # None on a dry run
    segment: Any = None  # veil.batch.segments.Segment for kind "segment"
    parts: tuple[Path, ...] = ()


@dataclass
class TaskResult:
    id: int
    summary: Summary | None = None
    error: str | None = None
    exit_code: int = 0
    # For "file" and "join": what the manifest records.
    sha256: str | None = None
    size: int = 0
    mtime_ns: int = 0
    output_size: int = 0
    output_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Models:
    detector: Any
    protector: Any


def build_models(options: ProtectOptions, threads: int = 0, protector: Any = None) -> Models:
    """The detector and protector of `options`; `threads` > 0 caps the CPU threads each uses.

    `protector`: one already built from `options` in this process (not loaded twice).
    """
    if threads > 0:
        import cv2
        import torch

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    return Models(options.build_detector(threads), protector or options.build_protector())


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself
    finally:
        os.close(dir_fd)


def _finished(result: TaskResult, src: Path, dst: Path, before: os.stat_result) -> TaskResult:
    """Fill in what the manifest records about a finished file."""
    _sync(dst)
    result.size, result.mtime_ns = before.st_size, before.st_mtime_ns
    result.sha256 = sha256_file(src)
    result.output_size = dst.stat().st_size
    result.output_sha256 = sha256_file(dst)
    return result


def execute(task: Task, options: ProtectOptions, models: Models,
            progress: Callable[[int, int], None] | None = None) -> TaskResult:
    """Run one task; never raises for a bad file (the error is in the result)."""
    result = TaskResult(task.id)
    try:
        try:
            before = task.src.stat()
        except FileNotFoundError:
            raise VideoOpenError(f"{str(task.src)!r} does not exist") from None
        if task.kind == "file":
            result.summary = protect_file(task.src, task.dst, options, detector=models.detector,
                                          protector=models.protector, progress=progress)
            if not options.dry_run:
                _finished(result, task.src, task.dst, before)
        elif task.kind == "segment":
            from veil.batch.segments import protect_segment

            result.summary = protect_segment(task.src, task.segment, options, models.detector,
                                             models.protector, progress=progress)
        elif task.kind == "join":
            from veil.batch.segments import join_parts

            result.extra["audio_streams"] = join_parts(task.src, task.parts, task.dst, options.encode)
            _finished(result, task.src, task.dst, before)
        else:
            raise ValueError(f"unknown task kind {task.kind!r}")
    except VeilError as exc:
        result.error, result.exit_code = str(exc), exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one broken file must not stop a folder run
        result.error = f"{task.src}: unexpected failure: {type(exc).__name__}: {exc}"
        result.exit_code = 1
    return result


# Events a runner hands back from `poll`:
#   ("progress", task_id, frames_done, frames_total)
#   ("result", TaskResult)
Event = tuple


class InlineRunner:
    """Runs tasks in this process, one at a time, with models built once."""

    def __init__(self, options: ProtectOptions, *, threads: int = 0, protector: Any = None) -> None:
        self.options = options
        self.models = build_models(options, threads, protector)
        self._queue: list[Task] = []
        self.capacity = 1

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def poll(self, timeout: float, on_event: Callable[[Event], None]) -> None:
        if not self._queue:
            return
        task = self._queue.pop(0)
        result = execute(task, self.options, self.models,
                         progress=lambda done, total: on_event(("progress", task.id, done, total)))
        on_event(("result", result))

    def running(self) -> list[int]:
        return [t.id for t in self._queue]

    def close(self, *, abort: bool = False) -> None:
        self._queue.clear()


def _worker_main(options: ProtectOptions, threads: int, conn: Any) -> None:
    # Ctrl-C goes to the whole process group; the coordinator decides and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    models = build_models(options, threads)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        last = [0.0]

        def progress(done: int, total: int, task_id: int = task.id) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.5:
                last[0] = now
                conn.send(("progress", task_id, done, total))

        conn.send(("result", execute(task, options, models, progress=progress)))


class _Worker:
    def __init__(self, ctx: Any, options: ProtectOptions, threads: int, slot: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, name=f"veil-worker-{slot}", daemon=True,
                                   args=(options, threads, child))
        self.process.start()
        child.close()
        self.task: Task | None = None


class ProcessRunner:
    """`workers` spawned processes; each builds the models once and shares the cores evenly.

    Each worker has its own pipe (no lock shared between workers), so a worker killed at any moment
    (out of memory, ``kill -9``) fails only the task it was running and is replaced.
    """

    def __init__(self, options: ProtectOptions, workers: int, *, threads: int | None = None) -> None:
        self.options = options
        self.capacity = workers
        self._ctx = mp.get_context("spawn")
        self._threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)
        self._workers = [_Worker(self._ctx, options, self._threads, slot) for slot in range(workers)]
        self._waiting: deque[Task] = deque()
        self._restarts = 0

    def submit(self, task: Task) -> None:
        self._waiting.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        for worker in self._workers:
            if worker.task is None and self._waiting:
                worker.task = self._waiting.popleft()
                worker.conn.send(worker.task)

    def poll(self, timeout: float, on_event: Callable[[Event], None]) -> None:
        by_handle = {w.conn: w for w in self._workers} | {w.process.sentinel: w for w in self._workers}
        for handle in mp_connection.wait(list(by_handle), timeout=timeout):
            worker = by_handle[handle]
            if handle is worker.conn:
                try:
                    while worker.conn.poll():
                        event = worker.conn.recv()
                        if event[0] == "result":
                            worker.task = None
                        on_event(event)
                except (EOFError, OSError):
                    pass  # it died; its sentinel says so
            elif not worker.process.is_alive():
                self._replace(worker, on_event)
        self._dispatch()

    def _replace(self, worker: _Worker, on_event: Callable[[Event], None]) -> None:
        slot = self._workers.index(worker)
        try:
            while worker.conn.poll():  # what it sent before it died still counts
                event = worker.conn.recv()
                if event[0] == "result":
                    worker.task = None
                on_event(event)
        except (EOFError, OSError):
            pass
        task, code = worker.task, worker.process.exitcode
        worker.conn.close()
        self._restarts += 1
        if task is None and self._restarts > 2 * self.capacity:
            self.close(abort=True)
            raise VeilError(f"the worker processes keep failing to start (exit code {code}); "
                            'a script that calls run_jobs needs `if __name__ == "__main__":`')
        self._workers[slot] = _Worker(self._ctx, self.options, self._threads, slot)
        if task is not None:
            on_event(("result", TaskResult(task.id, error=f"{task.src}: the worker process died "
                                           f"(exit code {code})", exit_code=1)))

    def running(self) -> list[int]:
        return [w.task.id for w in self._workers if w.task is not None] + [t.id for t in self._waiting]

    def close(self, *, abort: bool = False) -> None:
        for worker in self._workers:
            if abort:
                worker.process.terminate()
            else:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
        for worker in self._workers:
            worker.process.join(timeout=30)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()

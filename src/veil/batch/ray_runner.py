"""The batch on Ray: one actor per worker, each holding its detector and protector, on one machine or many.

Tasks are the same as with local worker processes (`veil.batch.workers.Task`): whole files, segments of
long files, joins. The coordinating process keeps the manifest, hands each idle actor its next
task and asks each busy actor for its progress (frames done) about twice a second: the actors run
two threads, one protecting and one answering. Inputs and outputs are paths, so on a cluster every
machine must see the archive and the output folder at the same paths (a shared file system). An
actor that dies (its machine lost) fails its task, and a new actor takes its place.

Ray is optional: ``pip install 'veil[ray]'``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from veil.batch.workers import Event, Task, TaskResult, build_models, execute
from veil.errors import InputError
from veil.pipeline import ProtectOptions

__all__ = ["RayRunner", "import_ray"]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray, an optional extra: pip install 'veil[ray]'") from None
    return ray


class _Actor:
    """Holds the models for its whole life; `run` protects one task, `progress` says how far it is."""

    def __init__(self, options: ProtectOptions, workers_per_node: int, threads: int | None) -> None:
        self.options = options
        self.models = build_models(options, threads or max(1, (os.cpu_count() or 1) // workers_per_node))
        self._progress: tuple[int, int, int] | None = None  # (task id, frames done, frames total)

    def run(self, task: Task) -> TaskResult:
        def progress(done: int, total: int) -> None:
            self._progress = (task.id, done, total)

        try:
            return execute(task, self.options, self.models, progress=progress)
        finally:
            self._progress = None

    def progress(self) -> tuple[int, int, int] | None:
        return self._progress


class RayRunner:
    """`workers` Ray actors (one CPU each). Joins the Ray at `address`, or starts a local one."""

    def __init__(self, options: ProtectOptions, workers: int, *, address: str | None = None,
                 threads: int | None = None, progress_every: float = 0.5) -> None:
        ray = self._ray = import_ray()
        self._threads = threads
        self.options, self.capacity = options, workers
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                if address:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False,
                             log_to_driver=False)
            except ConnectionError as exc:
                raise InputError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
        # Two threads per actor: `progress` is answered while `run` works (one run at a time is sent).
        self._actor_class = ray.remote(num_cpus=1, max_concurrency=2)(_Actor)
        self._actors = [self._new_actor() for _ in range(workers)]
        self._idle = deque(self._actors)
        self._waiting: deque[Task] = deque()
        self._refs: dict[Any, tuple[Any, Task]] = {}  # object ref -> (actor, task)
        self._asked: dict[Any, Any] = {}  # progress object ref -> actor
        self._progress_every, self._last_asked = progress_every, 0.0

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.options, min(self.capacity, os.cpu_count() or 1), self._threads)

    def submit(self, task: Task) -> None:
        self._waiting.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._idle and self._waiting:
            actor, task = self._idle.popleft(), self._waiting.popleft()
            self._refs[actor.run.remote(task)] = (actor, task)

    def _ask_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_asked < self._progress_every:
            return
        self._last_asked = now
        asking = set(self._asked.values())
        for actor, _ in self._refs.values():
            if actor not in asking:
                self._asked[actor.progress.remote()] = actor

    def poll(self, timeout: float, on_event: Callable[[Event], None]) -> None:
        if not self._refs:
            return
        self._ask_progress()
        ready, _ = self._ray.wait(list(self._refs) + list(self._asked), num_returns=1, timeout=timeout)
        for ref in ready:
            if ref in self._asked:
                del self._asked[ref]
                try:
                    state = self._ray.get(ref)
                except self._ray.exceptions.RayError:
                    continue  # the actor died: its run's result says so
                if state is not None:
                    on_event(("progress", *state))
                continue
            actor, task = self._refs.pop(ref)
            try:
                result = self._ray.get(ref)
            except self._ray.exceptions.RayActorError as exc:
                actor = self._new_actor()
                result = TaskResult(task.id, error=f"{task.src}: the Ray worker died ({type(exc).__name__})",
                                    exit_code=1)
            except self._ray.exceptions.RayError as exc:
                result = TaskResult(task.id, error=f"{task.src}: Ray failed: {exc}", exit_code=1)
            self._idle.append(actor)
            on_event(("result", result))
        self._dispatch()

    def running(self) -> list[int]:
        return [t.id for _, t in self._refs.values()] + [t.id for t in self._waiting]

    def close(self, *, abort: bool = False) -> None:
        for actor in set(a for a, _ in self._refs.values()) | set(self._idle):
            try:
                self._ray.kill(actor)
            except Exception:  # noqa: BLE001 - an actor already gone is fine
                pass
        self._refs.clear()
        self._asked.clear()
        self._idle.clear()
        if self._owns_ray:
            self._ray.shutdown()

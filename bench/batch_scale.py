"""Batch throughput: a folder of copies of the real clips, protected with --jobs 1, --jobs 2 and local Ray.

    python bench/batch_scale.py [--copies 2] [--method blur] [--detector centerface] [--detect-every 2]
                                [--detect-size 1920] [--clips ...] [--out FILE]

Prints and writes a table: total frames/s of each run, its ratio to --jobs 1 (measured in the same
run), and the time it takes to resume a batch that is already finished (every file skipped by the
manifest). One more row holds a single-threaded worker to one core (Linux), the share each worker
of `--jobs 2` gets, so that the scaling of the workers themselves can be read. Not a test: the
figures depend on the machine and on what else runs on it.

It also measures the machine itself: the throughput of 2 processes running a fixed single-threaded
OpenCV kernel, over one process's. That is the most any parallel run can gain on these cores (virtual
cores that share a physical one, or memory bandwidth, give less than 2x).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from veil.batch import plan_jobs, run_jobs
from veil.models.store import fetch
from veil.pipeline import ProtectOptions

CLIPS = ["media/single_face.mp4", "media/face_noface.mov"]
ONE_CORE = "--jobs 1 --threads 1 on one core"


def _kernel(duration: float, out: mp.Queue) -> None:
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    image = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
    count, end = 0, time.perf_counter() + duration
    while time.perf_counter() < end:
        cv2.GaussianBlur(image, (11, 11), 3.0)
        count += 1
    out.put(count)


def machine_scaling(processes: int, duration: float = 3.0) -> float:
    """Throughput of `processes` copies of a single-threaded kernel over one copy's."""
    ctx = mp.get_context("spawn")

    def run(k: int) -> int:
        queue = ctx.Queue()
        procs = [ctx.Process(target=_kernel, args=(duration, queue)) for _ in range(k)]
        for proc in procs:
            proc.start()
        total = sum(queue.get() for _ in procs)
        for proc in procs:
            proc.join()
        return total

    return run(processes) / run(1)


def _archive(root: Path, copies: int, clips: list[str]) -> Path:
    archive = root / "archive"
    for k in range(copies):
        folder = archive / f"copy{k:03d}"
        folder.mkdir(parents=True)
        for name in clips:
            shutil.copy(fetch(name), folder / Path(name).name)
    return archive


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (worker processes; not Ray's actors)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run(archive: Path, out: Path, options: ProtectOptions, cores: set[int] | None = None,
         **kw) -> tuple[float, int, int, float]:
    """One batch run; `cores`: the CPUs this process (and the workers it starts) may use."""
    jobs, _ = plan_jobs([archive], out)
    every = os.sched_getaffinity(0) if cores else None
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        start, cpu = time.perf_counter(), _cpu_seconds()
        report = run_jobs(jobs, options, manifest=out, show_progress=False, **kw)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    finally:
        if every:
            os.sched_setaffinity(0, every)
    if report.errors:
        raise SystemExit(f"failures: {report.errors}")
    return seconds, sum(s.frames for s in report.summaries), len(report.resumed), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--method", default="blur")
    parser.add_argument("--detector", default="centerface")
    parser.add_argument("--detect-every", type=int, default=ProtectOptions.detect_every,
                        help="1: the detector on every frame (the most detection-bound run)")
    parser.add_argument("--detect-size", type=int, default=ProtectOptions.detect_size,
                        help="longest side the detector sees (0: full size)")
    parser.add_argument("--clips", nargs="+", default=CLIPS, choices=CLIPS,
                        help="store media to copy into the archive (a slow detector: fewer frames)")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "batch_scale.md")
    args = parser.parse_args()
    options = ProtectOptions(method=args.method, detector=args.detector, detect_every=args.detect_every,
                             detect_size=args.detect_size or None)
    ceiling = machine_scaling(2)
    print(f"machine: 2 processes of a single-threaded kernel give {ceiling:.2f}x one process's throughput")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = _archive(root, args.copies, args.clips)
        files = sum(1 for _ in archive.rglob("*.*"))
        # --jobs 1 lets the libraries use every core; "1 thread" is one worker as each of --jobs 2's sees it.
        configs = [("--jobs 1", {}), ("--jobs 1 --threads 1", {"threads": 1})]
        if hasattr(os, "sched_setaffinity"):
            # One worker held to one core: what each worker of --jobs 2 gets if the two share evenly.
            configs.append((ONE_CORE, {"threads": 1, "cores": {min(os.sched_getaffinity(0))}}))
        configs.append(("--jobs 2", {"workers": 2}))
        if not args.no_ray:
            configs.append(("--ray (local, 2 workers)", {"workers": 2, "use_ray": True}))
        base = None
        for label, kw in configs:
            out = root / label.replace(" ", "_").replace("/", "")
            load = os.getloadavg()[0]
            seconds, frames, _, cpu = _run(archive, out, options, **kw)
            fps = frames / seconds
            base = base or fps
            cpu_ms = "n/a" if kw.get("use_ray") else f"{1000 * cpu / frames:.0f}"
            busy = "n/a" if kw.get("use_ray") else f"{cpu / seconds:.2f}"
            resume_s, _, resumed, _ = _run(archive, out, options, **kw)
            rows.append((label, files, frames, seconds, fps, fps / base, cpu_ms, busy, resume_s, resumed, load))
            print(f"{label}: {frames} frames in {seconds:.1f} s = {fps:.2f} frames/s ({fps / base:.2f}x); "
                  f"resume of the finished batch {resume_s * 1000:.0f} ms ({resumed} files skipped); load {load:.1f}")
    header = ("| run | files | frames | seconds | frames/s | vs --jobs 1 | CPU ms/frame | cores busy | "
              "resume finished batch (ms) | load avg at start |\n|---|---|---|---|---|---|---|---|---|---|\n")
    table = header + "".join(
        f"| {label} | {files} | {frames} | {seconds:.1f} | {fps:.2f} | {ratio:.2f}x | {cpu_ms} | {busy} | {resume_s * 1000:.0f} "
        f"({resumed} skipped) | {load:.1f} |\n"
        for label, files, frames, seconds, fps, ratio, cpu_ms, busy, resume_s, resumed, load in rows)
    by_label = {row[0]: row[4] for row in rows}
    text = (f"# Batch throughput\n\n`python bench/batch_scale.py --copies {args.copies} --method {args.method}"
            f" --detector {args.detector}"
            + (f" --detect-every {args.detect_every}" if args.detect_every != ProtectOptions.detect_every else "")
            + f"` on {platform.machine()}, {os.cpu_count()} CPU cores "
            f"(detect size {options.detect_size}); "
            f"clips: {', '.join(Path(c).name for c in args.clips)} x {args.copies}.\n\n{table}\n"
            + (f"--jobs 2 over one worker held to one core: {by_label['--jobs 2'] / by_label[ONE_CORE]:.2f}x.\n\n"
               if ONE_CORE in by_label else "")
            + f"The machine itself: 2 processes of a fixed single-threaded OpenCV kernel give {ceiling:.2f}x the "
            "throughput of one, the most any parallel run can gain on these cores.\n\n"
            "--jobs N runs N worker processes with the cores split between them; Ray runs one actor per "
            "worker. The resume column is a second run over the finished output folder: the manifest "
            "skips every file. The load average is the whole machine's (other work shares the cores): "
            "ratios taken under load are not the scaling of an idle machine; the CPU time per frame (this "
            "process and its worker processes) does not depend on the load. Cores busy = CPU seconds / wall "
            f"seconds: the machine's ceiling is {os.cpu_count()} cores divided by the CPU time per frame.\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(table)


if __name__ == "__main__":
    main()

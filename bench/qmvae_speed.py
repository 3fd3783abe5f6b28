"""QM-VAE on video: frames a second, and what is kept and hidden, against the model alone and blur.

On the store's two real 640x360 clips, each run is a whole ``veil protect`` command (start-up and
model loading included), timed from outside, best of REPEATS; "per file" is veil's own ``--json``
seconds for the file (what a long video or a batch pays per frame once the models are loaded).
The rows, all in this one run:

- ``qmvae``: the default, the model's codes searched for the answer of all three expression
  classifiers veil ships;
- ``qmvae, search face-api's``: the search keeps face-api's answer alone (``-O service=faceapi``);
- ``qmvae, forward pass``: the paper's model alone (``-O service_steps=0``): the peer the search's
  cost is a ratio to;
- ``blur``: what any face protection costs here (detection, tracking, encoding).

What is kept: per frame, each expression classifier by its own pipeline (face-api's on its
aligned crop, Human's and fer's on their own cuts of the detector's box on the original frame)
names the same top expression on the written frame as on the original ("agreement"). What is
hidden: ``veil evaluate``'s re-identification rate by veil's four recognizers, the worst of them.

    python bench/qmvae_speed.py        # writes bench/results/qmvae_speed.md (about 18 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from veil.detect import get_detector
from veil.evaluate.run import EvaluateConfig, evaluate
from veil.media.read import read_frames
from veil.models.store import fetch

sys.path.insert(0, str(Path(__file__).parent))
from qmvae_table import OwnPipelines  # noqa: E402 - a sibling script: the same judges as the table's

RESULTS = Path(__file__).parent / "results" / "qmvae_speed.md"
CLIPS = ["single_face.mp4", "WolfgangLanger_Pexels.mp4"]
RUNS = {"qmvae": ["--method", "qmvae"],
        "qmvae, search face-api's": ["--method", "qmvae", "-O", "service=faceapi"],
        "qmvae, forward pass": ["--method", "qmvae", "-O", "service_steps=0"],
        "blur": ["--method", "blur"]}
PEER = "qmvae, forward pass"
REPEATS = 2
FLOOR_FPS = 10.0


def protect(clip: Path, out: Path, args: list[str], checkpoint: Path | None) -> tuple[float, dict]:
    """(wall seconds of the whole command, the file's ``--json`` summary)."""
    report = out.with_suffix(".json")
    extra = ["--checkpoint", str(checkpoint)] if checkpoint and "qmvae" in args else []
    cmd = [str(Path(sys.executable).parent / "veil"), "protect", str(clip), "-o", str(out), "-q", "--json", str(report),
           *args, *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"veil protect failed: {proc.stderr[-2000:]}")
    return seconds, json.loads(report.read_text())["files"][0]


class Judges:
    """The three expression classifiers by their own pipelines, on the faces of a clip's frames."""

    def __init__(self, clip: Path) -> None:
        detector = get_detector("centerface")
        frames = list(read_frames(clip))
        found = [detector.detect(f) for f in frames]
        self.keep = [i for i, f in enumerate(found) if len(f)]
        self.judges = OwnPipelines([found[i].landmarks for i in self.keep], [found[i].boxes for i in self.keep])
        self.base = self.judges.labels([frames[i] for i in self.keep])

    def agreement(self, video: Path) -> dict[str, float]:
        written = list(read_frames(video))
        shown = self.judges.labels([written[i] for i in self.keep])
        return {name: float(np.mean(shown[name] == self.base[name])) for name in self.base}


def measure(clip_name: str, work: Path, checkpoint: Path | None) -> list[dict]:
    clip = fetch(f"media/{clip_name}")
    judges = Judges(clip)
    rows = []
    for run, args in RUNS.items():
        out = work / f"{clip.stem}.{run.replace(' ', '_').replace(',', '')}.mp4"
        timings = [protect(clip, out, args, checkpoint) for _ in range(REPEATS)]
        wall = min(t[0] for t in timings)
        per_file = min(t[1]["seconds"] for t in timings)
        frames = timings[0][1]["frames"]
        summary = evaluate(clip, out, EvaluateConfig(expressions=False))["summary"]
        row = {"clip": clip_name, "run": run, "frames": frames, "fps": frames / wall, "fps_per_file": frames / per_file,
               "agreement": judges.agreement(out), "reid": summary["reidentification_rate"],
               "flicker": summary.get("flicker")}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict], command: str) -> str:
    lines = [f"Made by `{command}` (2 CPU cores, no GPU; whole commands timed from outside, model loading "
             f"included; best of {REPEATS} runs). Agreement: the share of face frames whose top expression "
             "each classifier names the same on the written frame as on the original, by its own pipeline. "
             f"Ratio: frames a second per file against `{PEER}` on the same clip.", "",
             "| clip | run | frames | fps (whole command) | fps (per file) | ratio to forward pass | agreement face-api | "
             "agreement Human | agreement fer | re-id (worst recognizer) | flicker |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    peer = {r["clip"]: r["fps_per_file"] for r in rows if r["run"] == PEER}
    for r in rows:
        worst = max(r["reid"].values()) if r["reid"] else float("nan")
        flicker = f"{r['flicker']:.2f}" if isinstance(r["flicker"], (int, float)) else "-"
        lines.append(f"| {r['clip']} | {r['run']} | {r['frames']} | {r['fps']:.1f} | {r['fps_per_file']:.1f} | "
                     f"{r['fps_per_file'] / peer[r['clip']]:.2f} | {r['agreement']['faceapi']:.3f} | "
                     f"{r['agreement']['human']:.3f} | {r['agreement']['fer']:.3f} | {worst:.3f} | {flicker} |")
    default = [r for r in rows if r["run"] == "qmvae"]
    lines += ["", "Floor: `veil protect --method qmvae` >= "
              f"{FLOOR_FPS:.0f} frames/s on a 640x360 single-face clip: "
              + "; ".join(f"{r['clip']} {r['fps_per_file']:.1f} per file, {r['fps']:.1f} whole command "
                          f"({'met' if r['fps_per_file'] >= FLOOR_FPS else 'not met'} per file)" for r in default) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", default=CLIPS)
    parser.add_argument("--checkpoint", type=Path, help="another QM-VAE model than the shipped one")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = "python bench/qmvae_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for clip in args.clips for row in measure(clip, Path(tmp), args.checkpoint)]
    text = table(rows, command.strip())
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

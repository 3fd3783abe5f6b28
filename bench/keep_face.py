"""`--keep-face`: how much of the known person stays visible, that nobody else does, and its cost.

Reference photos: one frame (200) of each real clip, written as a PNG, so each clip has its own
person's photo and the other clip's person as a stranger. For every clip and photo, `veil
protect --keep-face` (defaults otherwise) is run as a whole command; the table gives the faces
found, the faces left as they are, and the speed against the same command without
`--keep-face` in the same run.

    python bench/keep_face.py            # writes bench/results/keep_face.md
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

from veil.models.store import fetch

HERE = Path(__file__).resolve().parent
CLIPS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4")
REFERENCE_FRAME = 200


def reference_photo(clip: Path, out: Path) -> Path:
    """Frame `REFERENCE_FRAME` of `clip` (or its last, if shorter) as a PNG."""
    with av.open(str(clip)) as container:
        frame = None
        for i, frame in enumerate(container.decode(video=0)):
            if i == REFERENCE_FRAME:
                break
        frame.to_image().save(out)
    return out


def run(clip: Path, out: Path, *extra: str) -> tuple[dict, float]:
    veil = str(Path(sys.executable).with_name("veil"))
    summary = out.with_suffix(".json")
    start = time.perf_counter()
    subprocess.run([veil, "protect", str(clip), "-o", str(out), "--json", str(summary), "-q", *extra], check=True)
    return json.loads(summary.read_text())["files"][0], time.perf_counter() - start


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = {name: fetch(f"media/{name}") for name in CLIPS}
        photos = {name: reference_photo(path, root / f"{Path(name).stem}.png") for name, path in clips.items()}
        for name, clip in clips.items():
            _, plain = run(clip, root / f"plain_{name}")
            for person, photo in photos.items():
                summary, seconds = run(clip, root / f"keep_{person}_{name}", "--keep-face", str(photo))
                rows.append((name, "its own person" if person == name else f"the person of {person}",
                             summary["frames"], summary["faces"], summary["faces_kept"], plain / seconds))
    lines = [
        f"Reference photo: frame {REFERENCE_FRAME} of a clip; whole `veil protect` commands (defaults), "
        "speed against the same command without --keep-face.",
        "",
        "| clip | --keep-face photo | frames | faces | faces left as they are | share | speed vs without |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, who, frames, faces, kept, ratio in rows:
        lines.append(f"| {name} | {who} | {frames} | {faces} | {kept} | {kept / max(faces, 1):.2f} | {ratio:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "keep_face.md").write_text(text)


if __name__ == "__main__":
    main()

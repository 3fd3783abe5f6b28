"""The JSON report's aggregates: per track and in total, from the per-frame records.

Rates are shares in 0..1 over face-frames (one face in one frame); ``null`` where nothing was
there to count (e.g. no face at all, or flicker on a single frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from veil.evaluate.utility import psnr_from_mse

__all__ = ["SCHEMA_VERSION", "summarize", "face_rates"]

SCHEMA_VERSION = 1


def _mean(values: Iterable[float | bool | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(float(np.mean(vals)), 5) if vals else None


def face_rates(faces: Sequence[dict], detectors: Sequence[str], recognizers: Sequence[str]) -> dict:
    """Privacy and utility aggregates over a set of face records (a track, or all faces)."""
    changes = [(f["temporal_change_protected"], f["temporal_change_original"]) for f in faces
               if f.get("temporal_change_original") is not None]
    flicker = None
    if changes:
        p, o = np.mean(changes, axis=0)
        flicker = round(float((p + 1.0) / (o + 1.0)), 5)  # as utility.flicker_ratio, on the means
    return {
        "faces_detected_after": {d: _mean(f["detected_after"][d] for f in faces) for d in detectors},
        "reidentification_rate": {r: _mean(f["reidentified"][r] for f in faces) for r in recognizers},
        "mean_descriptor_distance": {r: _mean(f["descriptor_distance"][r] for f in faces) for r in recognizers},
        "expression_agreement": _mean(f.get("expression_agrees") for f in faces),
        "flicker": flicker,
    }


def summarize(frames: Sequence[dict], detectors: Sequence[str], recognizers: Sequence[str], seconds: float) -> dict:
    """``summary`` and ``tracks`` of the report."""
    by_track: dict[int, list[tuple[int, dict]]] = {}
    for fr in frames:
        for face in fr["faces"]:
            by_track.setdefault(face["track_id"], []).append((fr["index"], face))
    tracks = []
    for tid, items in sorted(by_track.items()):
        idx = [i for i, _ in items]
        tracks.append({"track_id": tid, "first_frame": min(idx), "last_frame": max(idx), "face_frames": len(items),
                       **face_rates([f for _, f in items], detectors, recognizers)})
    all_faces = [face for fr in frames for face in fr["faces"]]
    mse = float(np.mean([fr["mse"] for fr in frames]))
    mse_out = float(np.mean([fr["mse_outside_faces"] for fr in frames]))
    summary = {
        "frames": len(frames),
        "frames_with_faces": sum(1 for fr in frames if fr["faces"]),
        "face_frames": len(all_faces),
        "tracks": len(tracks),
        "faces_detected_after_count": {d: sum(f["detected_after"][d] for f in all_faces) for d in detectors},
        **face_rates(all_faces, detectors, recognizers),
        "ssim": _mean(fr["ssim"] for fr in frames),
        "ssim_outside_faces": _mean(fr["ssim_outside_faces"] for fr in frames),
        # PSNR of the mean squared error over all frames (as ffmpeg's psnr filter averages)
        "psnr": round(psnr_from_mse(mse), 4),
        "psnr_outside_faces": round(psnr_from_mse(mse_out), 4),
        "seconds": round(seconds, 3),
        "frames_per_second": round(len(frames) / seconds, 3) if seconds > 0 else None,
    }
    return {"summary": summary, "tracks": tracks}


# Every key of the JSON report, as the README documents it ("<name>" stands for each detector or
# recognizer). tests/evaluate/test_evaluate.py checks that reports have exactly these keys.
DOCUMENTED_KEYS: dict[str, str] = {
    "schema_version": "report format version (1)",
    "original": "path of the original video or image folder",
    "protected": "path of the protected video or image folder",
    "settings": "the EvaluateConfig used (detector, detectors, recognizers, expressions, mask_scale, "
                "iou_threshold, batch_size, max_frames, attack, attack_pipelines, attack_clean)",
    "thresholds.<recognizer>": "the recognizer's same-person L2 threshold (dlib 0.6, faceres 0.87)",
    "summary.frames": "frames evaluated",
    "summary.frames_with_faces": "frames where the original has at least one face",
    "summary.face_frames": "faces counted over all frames (one face in one frame = 1)",
    "summary.tracks": "distinct tracked faces",
    "summary.faces_detected_after_count.<detector>": "face-frames the detector still finds in the protected video",
    "summary.faces_detected_after.<detector>": "the same as a share of face_frames (0..1; lower hides more)",
    "summary.reidentification_rate.<recognizer>": "share of face-frames whose protected descriptor is within "
                                                  "the recognizer's threshold of the original's (lower hides more)",
    "summary.mean_descriptor_distance.<recognizer>": "mean L2 distance between protected and original descriptors",
    "summary.expression_agreement": "share of face-frames with the same top expression before and after (0..1)",
    "summary.flicker": "(mean change of the protected face between consecutive frames + 1) / "
                       "(the original's + 1); 1 = no added flicker",
    "summary.ssim": "mean SSIM of the whole frames (1 = identical)",
    "summary.ssim_outside_faces": "mean SSIM outside the face masks (box x mask_scale, + 5 px)",
    "summary.psnr": "PSNR (dB) of the mean squared error over all frames; 100 = identical",
    "summary.psnr_outside_faces": "the same outside the face masks",
    "summary.seconds": "wall time of the evaluation",
    "summary.frames_per_second": "frames evaluated per second",
    "tracks[].track_id": "track id",
    "tracks[].first_frame": "first frame of the track",
    "tracks[].last_frame": "last frame of the track",
    "tracks[].face_frames": "frames in which the track has a face",
    "tracks[].faces_detected_after.<detector>": "as in summary, for this track",
    "tracks[].reidentification_rate.<recognizer>": "as in summary, for this track",
    "tracks[].mean_descriptor_distance.<recognizer>": "as in summary, for this track",
    "tracks[].expression_agreement": "as in summary, for this track",
    "tracks[].flicker": "as in summary, for this track (null for a single frame)",
    "frames[].index": "frame number (0-based)",
    "frames[].ssim": "SSIM of the frame",
    "frames[].psnr": "PSNR of the frame (dB, 100 = identical)",
    "frames[].ssim_outside_faces": "SSIM outside the face masks",
    "frames[].psnr_outside_faces": "PSNR outside the face masks",
    "frames[].mse": "mean squared error of the frame (grey levels squared)",
    "frames[].mse_outside_faces": "mean squared error outside the face masks",
    "frames[].faces[].track_id": "track of the face",
    "frames[].faces[].box": "face box on the original, [x1, y1, x2, y2] pixels",
    "frames[].faces[].detected_after.<detector>": "whether the detector finds a face overlapping it (IoU >= 0.3) "
                                                  "in the protected frame",
    "frames[].faces[].reidentified.<recognizer>": "whether the protected face still matches the original face",
    "frames[].faces[].descriptor_distance.<recognizer>": "L2 distance of the two descriptors",
    "frames[].faces[].expression_original": "top expression on the original (neutral, happy, sad, angry, "
                                            "fearful, disgusted, surprised)",
    "frames[].faces[].expression_protected": "top expression on the protected frame",
    "frames[].faces[].expression_agrees": "whether the two are the same",
    "frames[].faces[].temporal_change_original": "mean absolute change inside the box since the previous frame "
                                                 "(grey levels; null on a track's first frame)",
    "frames[].faces[].temporal_change_protected": "the same on the protected video",
    "frames[].faces[].flicker": "(protected change + 1) / (original change + 1)",
    "attack.<recognizer>.classifier": "with --attack: the attacker's classifier (knn or linear)",
    "attack.<recognizer>.other_identities": "other people the attacker knows (faces of veil's sample photos)",
    "attack.<recognizer>.test_clean_faces": "clean, unseen faces of the tracked people tested",
    "attack.<recognizer>.protection_success": "share of those not classified as the person (Fawkes' protocol)",
    "attack.<recognizer>.test_source": "where the clean test faces come from: later frames of each track, "
                                       "or the --attack-clean footage",
    "attack.<recognizer>.tracks[]": "the same per track: track_id, recognizer, classifier, train_protected_faces, "
                                    "test_clean_faces, other_identities, protection_success (with "
                                    "--attack-clean one entry, track_id -1, for all faces at once)",
    "attack_dlib.train_faces": "with --attack-pipeline dlib: protected faces dlib's own library found and "
                               "trained its 1-NN on",
    "attack_dlib.test_faces": "clean faces of the person it was tested on",
    "attack_dlib.other_faces": "other people's faces it knows (veil's sample photos, each face one identity)",
    "attack_dlib.protection_success": "share of the clean test faces whose nearest neighbour is not the person",
    "attack_dlib.nearest_person_distance": "median distance of a test face to its nearest protected face",
    "attack_dlib.nearest_other_distance": "median distance of a test face to its nearest other person",
    "attack_dlib.test_faces_within_threshold": "share of test faces within dlib's 0.6 of a protected face",
    "attack_dlib.test_source": "the --attack-clean footage, or the original after the training frames",
}

"""The attacker that is not veil: dlib's own library end to end, and what a cloak does against it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from veil.evaluate.attack import ATTACKER_SCRIPT, dlib_library_attack
from veil.media.read import read_frames
from veil.models.store import fetch, fetch_many

pytest.importorskip("dlib", reason="dlib-bin is a test dependency (veil[attack])")


def _encode(frames: list[np.ndarray], path: Path, crf: int) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": str(crf), "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_the_attacker_runs_no_veil_code_and_names_an_unprotected_person() -> None:
    video = fetch("media/single_face.mp4")
    request = {"train": [{"path": str(video), "stop": 20}], "test": [{"path": str(video), "start": 40, "stop": 60}],
               "others": [str(fetch_many(["media/biden.jpg"])["media/biden.jpg"])], "every": 4}
    proc = subprocess.run([sys.executable, "-I", "-X", "importtime", str(ATTACKER_SCRIPT)], input=json.dumps(request),
                          capture_output=True, text=True, check=True)
    imported = {m.group(1).strip() for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \| (.+)$", proc.stderr, re.M)}
    assert "dlib" in {m.strip() for m in imported} and "av" in {m.strip() for m in imported}
    assert not [m for m in imported if m.strip() == "veil" or m.strip().startswith("veil.")]
    answer = json.loads(proc.stdout)
    assert answer["train_faces"] == 5 and answer["test_faces"] == 5 and answer["other_faces"] == 1
    assert answer["protection_success"] == 0.0  # the same man, unprotected: named every time
    assert answer["nearest_person_distance"] < 0.6 < answer["nearest_other_distance"]


def test_the_attacker_imports_only_the_standard_library_numpy_pyav_and_dlib() -> None:
    import ast

    tree = ast.parse(ATTACKER_SCRIPT.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "importlib", "json", "sys", "pathlib", "av", "dlib", "numpy"}, names


def test_a_cloak_moves_dlibs_own_descriptor_past_its_threshold_also_after_crf_23(load_rgb, tmp_path) -> None:
    """dlib's C++ pipeline (its detector, shape predictor, chip, network) on the written pixels and
    after a downloader's re-encode: the cloaked face is no longer the person to dlib (0.6)."""
    from veil.detect import detect
    from veil.evaluate.dlib_attacker import Dlib
    from veil.protect import ProtectState, get_protector

    image = load_rgb("obama.jpg")
    faces = detect(image)[:1]
    faces.track_ids[:] = 0
    cloaked = get_protector("cloak", mode="low")(image, faces, ProtectState())
    h, w = (d - d % 2 for d in image.shape[:2])
    frames = [cloaked[:h, :w]] * 3
    downloaded = list(read_frames(_encode(list(read_frames(_encode(frames, tmp_path / "veil.mp4", 18))),
                                          tmp_path / "crf23.mp4", 23)))
    dlib = Dlib()
    clean = dlib.faces(np.ascontiguousarray(image[:h, :w]))[0]
    for name, seen in (("as written", cloaked[:h, :w]), ("after CRF 23", downloaded[1])):
        d = float(np.linalg.norm(dlib.faces(np.ascontiguousarray(seen))[0] - clean))
        assert d > 0.6, (name, d)


def test_dlib_library_attack_refuses_without_dlib(monkeypatch, tmp_path) -> None:
    import importlib.util

    from veil.errors import InputError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real(name, *a))
    with pytest.raises(InputError, match=r"veil\[attack\]"):
        dlib_library_attack(tmp_path / "p.mp4", tmp_path / "o.mp4", 10)


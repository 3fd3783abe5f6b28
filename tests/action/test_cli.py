"""`veil action` end to end on a few synthetic videos: make-synthetic, train, evaluate, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from veil.action.synthetic import ACTIONS, make_synthetic
from veil.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    result = runner.invoke(app, ["action", "make-synthetic", str(out), "--count", "18", "--frames", "8", "--size", "32"])
    assert result.exit_code == 0, result.output
    return out


def test_make_synthetic_writes_videos_that_decode_to_the_clips(videos: Path) -> None:
    from veil.media.read import read_frames

    doc = json.loads((videos / "labels.json").read_text())
    assert len(doc["videos"]) == 18 and doc["actions"] == list(ACTIONS)
    assert sum(v["split"] == "test" for v in doc["videos"]) == 4  # a quarter, rounded
    first = doc["videos"][0]
    frames = np.stack(list(read_frames(videos / first["path"])))
    expected = make_synthetic(18, frames=8, size=32, seed=0).videos[0]
    assert frames.shape == expected.shape
    # lossless H.264 4:4:4 only rounds the RGB <-> YUV conversion
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 3


def test_train_evaluate_predict(videos: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "m.pt"
    result = runner.invoke(app, ["train", "action", str(videos), "--dataset", "folder", "--preset", "tiny",
                                 "--epochs", "1", "--batch-size", "8", "-o", str(ckpt)])
    assert result.exit_code == 0, result.output
    report = tmp_path / "r.json"
    result = runner.invoke(app, ["action", "evaluate", str(ckpt), str(videos), "--dataset", "folder", "--attacker-epochs",
                                 "1", "--json", str(report), "--keep-ratio", "0.25"])
    assert result.exit_code == 0, result.output
    numbers = json.loads(report.read_text())
    assert numbers["keep_ratio"] == 0.25
    assert set(numbers["token_attacker"]["per_attribute"]) == {"face", "skin_tone", "clothing", "pattern"}
    preview = tmp_path / "p.mp4"
    clip = next(videos.glob("wave/*.mp4"))
    result = runner.invoke(app, ["action", "predict", str(clip), "-c", str(ckpt), "--preview", str(preview), "--scale", "2"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if "\t" in ln]
    assert len(lines) == 3 and all(ln.split("\t")[0] in ACTIONS for ln in lines)
    from veil.media.read import probe

    info = probe(preview)
    assert (info.width, info.height, info.frame_count) == (64, 64, 8)


def test_bad_input_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["action", "predict", str(tmp_path / "none.mp4"), "-c", str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["train", "action", str(tmp_path / "nowhere"), "--dataset", "hmdb51"])
    assert result.exit_code == 2

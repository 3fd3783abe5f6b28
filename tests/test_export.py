"""--export-tracks and --export-masks: the boxes and masks written are the ones the protection used."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from veil.cli import app
from veil.detect import get_detector
from veil.detect.base import _REGISTRY, register_detector
from veil.errors import InputError, OutputError
from veil.export import read_tracks
from veil.export.masks import MANIFEST
from veil.pipeline import ProtectOptions, protect_photo, protect_video
from veil.protect import get_protector

runner = CliRunner()


class _Recording:
    """Blur that remembers the boxes (and kinds) it was given on each frame."""

    name = "blur"

    def __init__(self) -> None:
        self.inner = get_protector("blur")
        self.seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, frame, faces, state):
        self.seen[state.frame_index] = (faces.boxes.copy(), faces.kinds.copy())
        return self.inner(frame, faces, state)

    def mask(self, shape, faces):
        return self.inner.mask(shape, faces)


@pytest.fixture(scope="module")
def clip(media):
    return media("single_face.mp4")  # 72 frames, one face on every one


@pytest.fixture(scope="module")
def exported(clip, tmp_path_factory):
    """One run with both exports (JSON tracks) and the boxes the protection was given."""
    out = tmp_path_factory.mktemp("export")
    recorder = _Recording()
    options = ProtectOptions(export_tracks=str(out / "t.json"), export_masks=str(out / "masks"))
    summary = protect_video(clip, out / "o.mp4", options, protector=recorder)
    return out, recorder, summary


def test_the_boxes_written_are_the_boxes_the_protection_used(exported):
    out, recorder, summary = exported
    tracks = read_tracks(out / "t.json")
    assert tracks.frame_count == summary.frames == 72 and tracks.video["width"] == summary.width
    assert tracks.targets == ["faces"] and tracks.detector == "centerface"
    assert len(recorder.seen) == 72 and sorted(set(tracks.frames.tolist())) == list(range(72))
    for frame, (boxes, kinds) in recorder.seen.items():
        written = tracks.at(frame)
        assert len(written) == len(boxes) >= 1
        np.testing.assert_allclose(written.boxes, boxes, atol=0.006)  # written to 0.01 px
        assert (written.kinds == kinds).all() and (kinds == 0).all()
    # Detected and filled: with the default cadence (every 2nd frame), half the boxes are the tracker's.
    assert 0 < (~tracks.detected).sum() < tracks.detected.sum() + 5
    assert (tracks.scores[~tracks.detected] == 0).all() and (tracks.scores[tracks.detected] > 0.5).all()
    assert tracks.masked == {} and not tracks.kept.any()


def test_csv_holds_the_same_rows_as_json(exported, clip, tmp_path):
    out, _, _ = exported
    protect_video(clip, tmp_path / "o.mp4", ProtectOptions(export_tracks=str(tmp_path / "t.csv")))
    a, b = read_tracks(out / "t.json"), read_tracks(tmp_path / "t.csv")
    for field in ("frames", "track_ids", "kinds", "detected", "kept"):
        assert (getattr(a, field) == getattr(b, field)).all(), field
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
    np.testing.assert_allclose(a.times, b.times, atol=1e-4)
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    assert header == "frame,time_s,track,kind,x1,y1,x2,y2,score,detected,kept,note"


def test_masks_are_the_protections_own_and_one_per_frame(exported):
    out, recorder, _ = exported
    folder = out / "masks" / "single_face"
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(72)]
    assert json.loads((folder / MANIFEST).read_text())["frames"] == 72
    blur = get_protector("blur")
    tracks = read_tracks(out / "t.json")
    for frame in (0, 1, 35, 71):
        mask = cv2.imread(str(pngs[frame]), cv2.IMREAD_UNCHANGED)
        expected = blur.mask(mask.shape + (3,), tracks.at(frame))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        assert ((mask == 255) == expected).all()
        assert 0.005 < expected.mean() < 0.5


@pytest.fixture
def failing_every_third():
    @register_detector("fails-every-third-for-test")
    class Flaky:
        name = "fails-every-third-for-test"

        def __init__(self, **options: object) -> None:
            self.inner, self.calls = get_detector("centerface", **options), 0

        def detect(self, image):
            self.calls += 1
            if self.calls % 3 == 0:
                raise RuntimeError("simulated failure")
            return self.inner.detect(image)

    yield
    del _REGISTRY["fails-every-third-for-test"]


def test_frames_masked_whole_are_listed_and_their_masks_are_full(clip, tmp_path, failing_every_third):
    options = ProtectOptions(detector="fails-every-third-for-test", detect_every=1,
                             export_tracks=str(tmp_path / "t.json"), export_masks=str(tmp_path / "m"))
    summary = protect_video(clip, tmp_path / "o.mp4", options)
    tracks = read_tracks(tmp_path / "t.json")
    assert sorted(tracks.masked) == [2 + 3 * k for k in range(24)] == sorted(set(tracks.masked))
    assert set(tracks.masked.values()) == {"detection failed"} and summary.frames_masked_on_error == 24
    full = cv2.imread(str(tmp_path / "m" / "single_face" / "000002.png"), cv2.IMREAD_UNCHANGED)
    assert (full == 255).all()


def test_a_photo_exports_one_frame(media, tmp_path):
    protect_photo(media("multi_face.jpg"), tmp_path / "o.jpg",
                  ProtectOptions(export_tracks=str(tmp_path / "t.csv"), export_masks=str(tmp_path / "m")))
    tracks = read_tracks(tmp_path / "t.csv")
    assert set(tracks.frames.tolist()) == {0} and len(tracks.at(0)) >= 3 and tracks.detected.all()
    assert len(list((tmp_path / "m" / "multi_face").glob("*.png"))) == 1


def test_a_failed_run_leaves_no_export(clip, tmp_path):
    def broken(done, total):
        if done == 30:
            raise RuntimeError("stop here")

    options = ProtectOptions(export_tracks=str(tmp_path / "t.json"), export_masks=str(tmp_path / "m"))
    with pytest.raises(RuntimeError):
        protect_video(clip, tmp_path / "o.mp4", options, progress=broken)
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []
    assert not (tmp_path / "m" / "single_face").exists()


def test_masks_never_go_into_a_folder_that_holds_other_files(clip, tmp_path):
    (tmp_path / "m" / "single_face").mkdir(parents=True)
    (tmp_path / "m" / "single_face" / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="holds no earlier veil masks"):
        protect_video(clip, tmp_path / "o.mp4", ProtectOptions(export_masks=str(tmp_path / "m")))
    assert (tmp_path / "m" / "single_face" / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("text, problem", [
    ("{not json", "invalid JSON"),
    ('{"schema": "other"}', "schema"),
    ('{"schema": "veil.tracks", "version": 9}', "version 9"),
    ('{"schema": "veil.tracks", "version": 1, "columns": ["frame"]}', "columns"),
])
def test_a_bad_track_file_is_refused_naming_the_problem(tmp_path, text, problem):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(InputError, match=problem):
        read_tracks(path)


def test_cli_exports_and_refuses_one_file_for_several_inputs(clip, tmp_path):
    result = runner.invoke(app, ["protect", str(clip), "-o", str(tmp_path / "o.mp4"), "-q",
                                 "--export-tracks", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert read_tracks(tmp_path / "t.json").frame_count == 72
    result = runner.invoke(app, ["protect", str(clip), str(clip), "-o", str(tmp_path / "out"), "-q",
                                 "--export-tracks", str(tmp_path / "t2.json")])
    assert result.exit_code == 2 and "--export-tracks" in result.output


def test_a_folder_run_on_two_workers_exports_one_file_per_input(clip, tmp_path):
    import shutil

    (tmp_path / "in").mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(clip, tmp_path / "in" / name)
    result = runner.invoke(app, ["protect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q", "--jobs", "2",
                                 "--export-tracks", str(tmp_path / "tracks"), "--export-masks", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    for name in ("a", "b"):
        assert read_tracks(tmp_path / "tracks" / f"{name}.tracks.json").frame_count == 72
        assert len(list((tmp_path / "m" / name).glob("*.png"))) == 72
    result = runner.invoke(app, ["protect", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "-q",
                                 "--segment-seconds", "1", "--export-tracks", str(tmp_path / "tracks")])
    assert result.exit_code == 2 and "--segment-seconds" in result.output

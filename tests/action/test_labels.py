"""Safe loading of the VP privacy labels; split files of HMDB51 and UCF101."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from veil.action.data import folder_split, hmdb51_split, resize_clip, sample_indices, ucf101_split
from veil.action.labels import UnsafeLabelsError, load_vp_labels, shipped_labels, video_key
from veil.errors import InputError

# The published pickles, where this checkout sits beside them (the shipped CSVs are made from them).
PUBLISHED = Path(__file__).resolve().parents[3] / "shared" / "data" / "stprivacy"


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_rejects_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "labels.pickle"
    evil.write_bytes(pickle.dumps({"a/b.mp4": _RunsCode(marker)}))
    with pytest.raises(UnsafeLabelsError, match="system"):
        load_vp_labels(evil)
    assert not marker.exists()


def test_rejects_values_that_are_not_binary_arrays(tmp_path: Path) -> None:
    bad = tmp_path / "labels.pickle"
    bad.write_bytes(pickle.dumps({"a/b.mp4": np.array([[0, 2, 1]])}))
    with pytest.raises(InputError, match="binary"):
        load_vp_labels(bad)


def test_loads_numpy_arrays(tmp_path: Path) -> None:
    good = tmp_path / "labels.pickle"
    good.write_bytes(pickle.dumps({"run/x_y.mp4": np.array([[1, 0, 1, 0, 0]]), "Walk/v_Walk_g01_c02.mp4":
                                   np.array([[0, 1, 0, 1, 1]])}))
    labels = load_vp_labels(good)
    assert labels == {"run/x_y": labels["run/x_y"], "Walk/v_Walk_g01_c02": labels["Walk/v_Walk_g01_c02"]}
    assert labels["run/x_y"].tolist() == [1, 0, 1, 0, 0]


@pytest.mark.parametrize(("name", "count"), [("hmdb51", 6766), ("ucf101", 13320)])
def test_shipped_vp_labels(name: str, count: int) -> None:
    labels = load_vp_labels(shipped_labels(name))
    assert len(labels) == count
    rows = np.stack(list(labels.values()))
    assert rows.shape == (count, 5) and set(np.unique(rows)) <= {0, 1}
    assert 0 < rows.mean() < 1  # both values occur


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="the published STPrivacy pickles are not beside this checkout")
@pytest.mark.parametrize("name", ["hmdb51", "ucf101"])
def test_shipped_vp_labels_are_the_published_ones(name: str) -> None:
    published = load_vp_labels(PUBLISHED / f"{name}_privacy_attribute_label.pickle")
    shipped = load_vp_labels(shipped_labels(name))
    assert published.keys() == shipped.keys()
    assert all((published[k] == shipped[k]).all() for k in published)


def test_a_damaged_labels_csv_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("video,a1,a2\nrun/x,1,maybe\n")
    with pytest.raises(InputError, match="not a readable labels CSV"):
        load_vp_labels(bad)


def test_video_key_ignores_the_container() -> None:
    assert video_key("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi") == \
        video_key("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.mp4") == \
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0"


def test_hmdb51_official_split(tmp_path: Path) -> None:
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "clap_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits / "run_test_split1.txt").write_text("d.avi 1 \ne.avi 2 \n")
    labels = {k: np.array([1, 0, 1, 0, 1]) for k in ("clap/a", "clap/b", "clap/c", "run/d")}
    split = hmdb51_split(tmp_path, 1, labels)
    assert split.actions == ("clap", "run")
    assert [(i.path.name, i.action) for i in split.train] == [("a.avi", 0), ("d.avi", 1)]
    assert [(i.path.name, i.action) for i in split.test] == [("b.avi", 0)]
    assert split.unlabelled == 1  # run/e has no labels


def test_ucf101_official_split(tmp_path: Path) -> None:
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g08_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    split = ucf101_split(tmp_path, 1, None)
    assert [(i.path.relative_to(tmp_path).as_posix(), i.action) for i in split.train] == \
        [("Archery/v_Archery_g08_c01.avi", 1)]
    assert [i.action for i in split.test] == [0]


def test_folder_without_labels_file_uses_folder_names(tmp_path: Path) -> None:
    for a in ("jump", "sit"):
        (tmp_path / a).mkdir()
        for i in range(10):
            (tmp_path / a / f"{i}.mp4").write_bytes(b"")
    split = folder_split(tmp_path)
    assert split.actions == ("jump", "sit")
    assert len(split.train) + len(split.test) == 20 and split.test
    assert folder_split(tmp_path).test == split.test  # the hash split is stable


def test_missing_split_folder_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--splits"):
        hmdb51_split(tmp_path)


def test_sample_indices_and_resize() -> None:
    assert sample_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert sample_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    clip = np.zeros((2, 40, 60, 3), np.uint8)
    clip[:, :, 10:50] = 200  # the centre 40x40 square
    out = resize_clip(clip, 20)
    assert out.shape == (2, 20, 20, 3) and (out == 200).all()

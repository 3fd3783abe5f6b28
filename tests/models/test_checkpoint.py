"""veil's checkpoint files: written atomically, refused in one line when they are not veil's."""

from __future__ import annotations

import pytest
import torch

from veil.models.checkpoint import CheckpointError, load_blob, save_blob


class _Anything:
    """An object a plain unpickle would rebuild (and could run code for)."""


def test_round_trip_keeps_the_tensors(tmp_path):
    path = save_blob({"format": "x/1", "w": torch.arange(6.0)}, tmp_path / "a" / "m.pt")
    assert torch.equal(load_blob(path, "x/1", "test", "")["w"], torch.arange(6.0))
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("content", ["object", "garbage", "other format"])
def test_a_file_that_is_not_a_veil_checkpoint_is_refused_in_one_line(tmp_path, content):
    path = tmp_path / "m.pt"
    if content == "object":
        torch.save({"format": "x/1", "thing": _Anything()}, path)
    elif content == "garbage":
        path.write_bytes(b"\x80\x04 not a checkpoint" * 50)
    else:
        torch.save({"format": "y/1"}, path)
    with pytest.raises(CheckpointError) as caught:
        load_blob(path, "x/1", "test", "make one")
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300 and "not a veil test checkpoint" in message
    if content == "object":
        assert "could run code" in message

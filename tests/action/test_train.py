"""A short training run learns actions; checkpoints round-trip with their config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from veil.action.anonymize import confusion_loss
from veil.action.config import preset
from veil.action.data import synthetic_batches
from veil.action.evaluate import collect
from veil.action.metrics import top1
from veil.action.model import STPrivacy
from veil.action.synthetic import ACTIONS, ATTRIBUTES, make_synthetic, render_clip
from veil.action.train import TrainConfig, load_checkpoint, save_checkpoint, schedule, train
from veil.errors import InputError


def test_confusion_loss_is_zero_at_the_prior_and_positive_elsewhere() -> None:
    prior = torch.tensor([0.5, 0.2])
    at_prior = torch.logit(prior).expand(4, 2)
    assert float(confusion_loss(at_prior, prior)) == pytest.approx(0.0, abs=1e-6)
    assert float(confusion_loss(torch.tensor([[3.0, -3.0]]), prior)) > 0.3


def test_schedule_warms_up_then_reaches_the_targets() -> None:
    cfg = TrainConfig(privacy_weight=2.0, warmup=0.2, anneal=0.4)
    assert schedule(0.1, cfg, 0.5) == (1.0, 0.0)
    assert schedule(0.4, cfg, 0.5) == pytest.approx((0.75, 1.0))
    assert schedule(0.9, cfg, 0.5) == (0.5, 2.0)


def test_synthetic_set_is_deterministic_and_balanced() -> None:
    a, b = make_synthetic(24, frames=8, size=32, seed=3), make_synthetic(24, frames=8, size=32, seed=3)
    assert a.videos.shape == (24, 8, 32, 32, 3) and a.videos.dtype == np.uint8
    assert np.array_equal(a.videos, b.videos) and np.array_equal(a.attributes, b.attributes)
    assert np.bincount(a.actions).tolist() == [4] * len(ACTIONS)
    assert a.attributes.shape == (24, len(ATTRIBUTES))


def test_skin_tone_attribute_changes_only_the_skin() -> None:
    light = render_clip(np.random.default_rng(5), 4, np.array([0, 0, 0, 0]), frames=8, size=32)
    dark = render_clip(np.random.default_rng(5), 4, np.array([0, 1, 0, 0]), frames=8, size=32)
    changed = (light != dark).any(-1)  # (T, H, W)
    assert 10 <= changed[0].sum() <= 40  # neck and hands, a few pixels of a 32x32 frame
    diff = light[changed].astype(int) - dark[changed].astype(int)
    assert diff[:, 0].mean() > 80  # light skin is ~115 levels redder than dark skin


def test_short_training_run_beats_chance_on_actions() -> None:
    # The tiny transformer without the privacy parts: the shortest run that learns reliably on a CPU
    # (the full model starts from such a run in the benchmark, as the paper starts from pretraining).
    train_set = make_synthetic(640, frames=8, size=32, seed=1)
    test_set = make_synthetic(300, frames=8, size=32, seed=2)
    cfg = preset("tiny", num_actions=6, num_attributes=4, sparsify=False, anonymize=False)
    torch.manual_seed(0)
    model = STPrivacy(cfg)
    epochs = iter(range(1000))
    train(model, lambda: synthetic_batches(train_set, 32, True, next(epochs)),
          TrainConfig(epochs=12, lr=3e-3, seed=0), steps_per_epoch=20)
    out = collect(model, synthetic_batches(test_set, 100, False), keep_ratio=1.0)
    # chance is 1/6 = 0.167; with 300 clips its standard deviation is 0.022
    assert top1(out.logits, out.actions) > 0.24


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = STPrivacy(preset("tiny", num_actions=6, num_attributes=4, keep_ratio=0.3))
    path = save_checkpoint(tmp_path / "m.pt", model, TrainConfig(epochs=1))
    loaded, _ = load_checkpoint(path)
    assert loaded.config == model.config
    x = torch.randn(1, 3, 8, 32, 32)
    model.eval()
    torch.testing.assert_close(loaded(x)[0], model(x)[0])


def test_load_checkpoint_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a veil action checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")

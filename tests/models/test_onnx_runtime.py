"""FrozenNet: the ONNX Runtime forward pass agrees with torch, is cached by weights, falls back to torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from veil.models.onnx_runtime import FrozenNet


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def _torch(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(x)).numpy()


def test_onnx_matches_torch_for_any_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    net = _net(0)
    frozen = FrozenNet(net, "tiny", 32)
    assert frozen.runtime == "onnxruntime"
    for batch in (1, 5):
        x = np.random.default_rng(batch).uniform(0, 255, (batch, 3, 32, 32)).astype(np.float32)
        np.testing.assert_allclose(frozen(x), _torch(net, x), rtol=1e-4, atol=1e-4)


def test_cache_is_keyed_by_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    FrozenNet(_net(0), "tiny", 32)
    FrozenNet(_net(0), "tiny", 32)
    assert len(list((tmp_path / "derived").glob("tiny-32-*.onnx"))) == 1  # same weights: exported once
    other = _net(1)
    x = np.ones((2, 3, 32, 32), np.float32)
    np.testing.assert_allclose(FrozenNet(other, "tiny", 32)(x), _torch(other, x), rtol=1e-4, atol=1e-4)
    assert len(list((tmp_path / "derived").glob("tiny-32-*.onnx"))) == 2  # new weights: a new graph
    assert not list((tmp_path / "derived").glob("*.tmp"))


def test_export_failure_falls_back_to_torch_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no such op")))
    net = _net(0)
    with pytest.warns(RuntimeWarning, match="no such op"):
        frozen = FrozenNet(net, "tiny", 32)
    assert frozen.runtime == "torch"
    x = np.ones((1, 3, 32, 32), np.float32)
    np.testing.assert_allclose(frozen(x), _torch(net, x), rtol=1e-6)
    assert not list((tmp_path / "derived").glob("*"))  # nothing half-written left behind


def test_export_leaves_the_network_in_eval_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    net = _net(0)
    FrozenNet(net, "tiny", 32)
    assert not any(m.training for m in net.modules())

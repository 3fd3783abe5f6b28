"""The privacy mechanisms: where the adversarial gradient goes, and the anonymizer's noisy bottleneck."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from veil.action.anonymize import Anonymizer, blend
from veil.action.config import preset
from veil.action.model import STPrivacy
from veil.action.train import TrainConfig, _adversaries, _model_step, load_checkpoint, save_checkpoint


def _grads(model: STPrivacy, cfg: TrainConfig, privacy_weight: float) -> dict[str, torch.Tensor]:
    """Gradients of one training step; the same random draws (Gumbel masks, strengths) every call."""
    torch.manual_seed(1)
    adversaries = _adversaries(model.config, 2)
    video = torch.randint(0, 256, (4, 8, 32, 32, 3), dtype=torch.uint8)
    batch = (video, torch.tensor([0, 1, 2, 3]), torch.tensor([[0, 1, 0, 1]] * 2 + [[1, 0, 1, 0]] * 2))
    model.zero_grad(set_to_none=True)
    loss, _, _, _ = _model_step(model, adversaries, batch, cfg, torch.full((4,), 0.5), 0.5, privacy_weight)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("encoder_privacy", [0.0, 1.0])
def test_adversarial_gradient_reaches_the_encoder_only_when_asked(encoder_privacy: float) -> None:
    torch.manual_seed(0)
    model = STPrivacy(preset("tiny", num_actions=6, num_attributes=4, keep_ratio=0.5))
    model.train()
    cfg = TrainConfig(encoder_privacy=encoder_privacy)
    without, with_ = _grads(model, cfg, 0.0), _grads(model, cfg, 1.0)
    # The privacy term always trains the anonymizer ...
    assert not torch.allclose(without["anonymizer.proj.weight"], with_["anonymizer.proj.weight"])
    # ... and reaches the tubelet embedding and the keep predictors only with encoder_privacy > 0.
    for name in ("embed.proj.weight", "predictors.0.out.4.weight"):
        changed = not torch.allclose(without[name], with_[name], atol=1e-7)
        assert changed == (encoder_privacy > 0), name


def test_noisy_anonymizer_is_normalised_and_random_and_strength_zero_is_exact() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 10, 32) * 5 + 3
    plain = Anonymizer(32, 2, 1)
    torch.testing.assert_close(plain(x), plain(x))
    noisy = Anonymizer(32, 2, 1, noise=1.0)
    with torch.no_grad():
        a, b = noisy(x), noisy(x)
    assert not torch.allclose(a, b)
    # unit-variance tokens plus unit-variance noise: about 2 per coordinate, whatever the input scale
    assert 1.5 < float(a.var()) < 2.5
    torch.testing.assert_close(blend(x, a, 0.0), x)


def test_bottleneck_config_survives_a_checkpoint(tmp_path: Path) -> None:
    model = STPrivacy(preset("tiny", num_actions=6, num_attributes=4, anonymizer_noise=0.5))
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model))
    assert loaded.config.anonymizer_noise == 0.5
    x = torch.randn(1, 3, 8, 32, 32)
    model.eval()
    torch.manual_seed(3)
    expected = model(x, strength=1.0)[1]
    torch.manual_seed(3)
    torch.testing.assert_close(loaded(x, strength=1.0)[1], expected)

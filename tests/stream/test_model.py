"""The cycle-VQ-VAE: shapes, the fast code search, audio fusion, and that training helps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from veil.stream.checkpoint import Checkpoint
from veil.stream.model import CodecConfig, CodecModel, pad_to_multiple
from veil.stream.train import Clip, TrainConfig, load_clip, sample_batch, train


def test_pad_to_multiple_replicates_edges() -> None:
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    y = pad_to_multiple(x, 4)
    assert y.shape == (1, 1, 4, 4)
    assert y[0, 0, 3, 3] == x[0, 0, 1, 2] and y[0, 0, 0, 3] == x[0, 0, 0, 2]


@pytest.mark.parametrize("kind", ["f2f", "v2v"])
def test_shapes_and_code_round_trip(kind: str, tiny: dict) -> None:
    torch.manual_seed(0)
    model = CodecModel(CodecConfig(kind=kind, **tiny))
    t = model.config.frames_per_step
    x, a = torch.rand(2, t, 3, 16, 24), torch.randn(2, t, tiny["n_mels"])
    model.train()
    coded = model(x, a)  # initialises the codebooks (k-means)
    model.eval()
    assert coded.recon.shape == x.shape
    assert coded.indices.shape == (2, model.config.latents_per_step, 4, 6, tiny["num_quantizers"])
    idx = model.encode_codes(x, a)
    # The matmul search picks codes as near as the quantiser's (equal up to ties between duplicate
    # codebook entries), and decoding codes equals the quantised path.
    q_ref, ref, _ = model.quantize(model.encode_latent(x, a))
    q = model.codes_to_quantized(idx.reshape(ref.shape))
    torch.testing.assert_close(q, q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.decode_codes(idx, a), model.decode_latent(q, a).clamp(0, 1))
    assert torch.isfinite(model.cycle_loss(coded, a))


def test_rd_codes_reuse_more_as_the_rate_weight_grows_and_a_still_picture_repeats(tiny: dict) -> None:
    torch.manual_seed(0)
    model = CodecModel(CodecConfig(**tiny))
    x, a = torch.rand(6, 1, 3, 16, 24), torch.randn(6, 1, tiny["n_mels"])
    model.train()
    model(x, a)
    model.eval()
    with torch.no_grad():
        latent = model.encode_latent(x, a)
    nearest = model.nearest_codes(latent)
    assert torch.equal(model.rd_codes(latent, 0.0), nearest)

    def error(idx: torch.Tensor) -> float:
        return float(((latent - model.codes_to_quantized(idx)) ** 2).sum(1).mean())

    def repeated(idx: torch.Tensor) -> float:
        return float((idx[1:] == idx[:-1]).all(-1).float().mean())

    scale = error(nearest)
    runs = [model.rd_codes(latent, w * scale) for w in (0.0, 0.1, 1.0, 10.0)]
    assert [repeated(r) for r in runs] == sorted(repeated(r) for r in runs) and repeated(runs[-1]) > repeated(nearest)
    assert error(runs[1]) < 1.5 * scale  # a small weight costs little error
    reference = runs[-1][-1]
    again = model.rd_codes(latent, 1e6, reference)  # a rate that outweighs any error: everything is reused
    assert (again == reference).all()
    still = model.encode_codes(x[:1].repeat(4, 1, 1, 1, 1), a[:1].repeat(4, 1, 1), rate_weight=1e-6)
    assert (still == still[:1]).all()
    with pytest.raises(ValueError, match=">= 0"):
        model.rd_codes(latent, -1.0)


def test_null_codes_are_the_shortest_of_each_stage(tiny: dict) -> None:
    model = CodecModel(CodecConfig(**tiny))
    null = model.null_codes()
    for q, book in enumerate(model.quantizer.codebooks):
        assert (book[null[q]] ** 2).sum() == (book**2).sum(1).min()


def test_audio_changes_the_decoded_picture_once_film_is_trained(tiny: dict) -> None:
    torch.manual_seed(0)
    model = CodecModel(CodecConfig(**tiny)).eval()
    a = torch.randn(1, 1, tiny["n_mels"])
    idx = torch.zeros(1, 1, 4, 4, tiny["num_quantizers"], dtype=torch.long)
    same = model.decode_codes(idx, a), model.decode_codes(idx, -a)
    assert torch.equal(*same)  # FiLM starts as the identity
    torch.nn.init.normal_(model.dec_film.proj.weight)
    assert (model.decode_codes(idx, a) - model.decode_codes(idx, -a)).abs().mean() > 1e-3


def test_a_few_training_steps_beat_the_initialisation(clip_path, tiny: dict) -> None:
    frames, feats, _ = load_clip(clip_path, tiny["n_mels"])
    torch.manual_seed(0)
    model = CodecModel(CodecConfig(**tiny))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[:, None] / 255.0
    a = torch.from_numpy(feats)[:, None]

    def mse(m: CodecModel) -> float:
        return float(((m.decode_codes(m.encode_codes(x, a), a) - x) ** 2).mean())

    init = copy.deepcopy(model).train()
    init(x, a)  # k-means initialisation of the codebooks, no gradient step
    before = mse(init.eval())
    ckpt = train(Checkpoint(model), [Clip(frames, feats)], TrainConfig(steps=60, batch=4, crop=32, lr=3e-3),
                 log=lambda _: None)
    after = mse(ckpt.model)
    assert ckpt.step == 60 and [h["step"] for h in ckpt.history] == [25, 50, 60]
    assert after < 0.7 * before, (before, after)  # at least 1.5 dB better


def test_sample_batch_takes_consecutive_frames_for_clips() -> None:
    frames = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((10, 8, 8, 3), np.uint8)
    clip = Clip(frames, np.arange(10, dtype=np.float32)[:, None].repeat(4, 1))
    f, a = sample_batch([clip], 5, 4, 8, np.random.default_rng(0))
    assert f.shape == (5, 4, 3, 8, 8) and a.shape == (5, 4, 4)
    steps = np.diff((f[:, :, 0, 0, 0] * 255).round().numpy(), axis=1)
    assert (steps == 1).all() and (np.diff(a[:, :, 0].numpy(), axis=1) == 1).all()

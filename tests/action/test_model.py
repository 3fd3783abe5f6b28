"""Tubelet embedding, keep masks, gradients and FLOPs of the STPrivacy model."""

from __future__ import annotations

import pytest
import torch

from veil.action.blocks import Block, masked_attention
from veil.action.config import preset
from veil.action.model import STPrivacy, TubeletEmbed, flops, sincos_position, tubelets
from veil.action.sparsify import stage_counts


@pytest.fixture
def tiny() -> STPrivacy:
    torch.manual_seed(0)
    return STPrivacy(preset("tiny", num_actions=6, num_attributes=4))


@pytest.mark.parametrize(("frames", "size", "tubelet", "tokens"), [
    (16, 112, (2, 16, 16), 8 * 7 * 7), (8, 32, (2, 8, 8), 4 * 4 * 4), (16, 32, (4, 8, 8), 4 * 4 * 4),
])
def test_tubelet_embedding_shapes(frames: int, size: int, tubelet: tuple[int, int, int], tokens: int) -> None:
    embed = TubeletEmbed(24, tubelet)
    out = embed(torch.zeros(2, 3, frames, size, size))
    assert out.shape == (2, tokens, 24)


def test_tubelet_token_order_is_time_major() -> None:
    # One bright tubelet at time slot 1, row 2, column 3 must land on token 1*16 + 2*4 + 3 = 27.
    video = torch.zeros(1, 3, 8, 32, 32)
    video[:, :, 2:4, 16:24, 24:32] = 1.0
    tokens = tubelets(video, (2, 8, 8))
    assert tokens.shape == (1, 64, 3 * 2 * 8 * 8)
    assert torch.nonzero(tokens.abs().sum(-1))[:, 1].tolist() == [27]
    embed = TubeletEmbed(8, (2, 8, 8))
    diff = (embed(video) - embed(torch.zeros_like(video))).abs().sum(-1)
    assert torch.nonzero(diff[0] > 1e-6).flatten().tolist() == [27]


def test_position_table_is_distinct_per_tubelet() -> None:
    pos = sincos_position((4, 4, 4), 48)[0]
    assert pos.shape == (64, 48)
    dist = torch.cdist(pos, pos) + torch.eye(64) * 10
    assert float(dist.min()) > 0.1


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 1.0])
def test_keep_mask_keeps_exactly_the_ratio_at_inference(tiny: STPrivacy, ratio: float) -> None:
    tiny.eval()
    with torch.no_grad():
        logits, z, enc = tiny(torch.randn(3, 3, 8, 32, 32), keep_ratio=ratio)
    k = round(64 * ratio)
    assert enc.index.shape == (3, k) and z.shape == (3, k, 32)
    for row in enc.index:
        assert len(set(row.tolist())) == k and row.tolist() == sorted(row.tolist())
    assert logits.shape == (3, 6)


def test_stage_counts_spread_geometrically() -> None:
    assert stage_counts(392, 0.5, 3) == [311, 247, 196]
    assert stage_counts(64, 0.25, 1) == [16]


def test_gradient_reaches_the_predictor_in_training(tiny: STPrivacy) -> None:
    tiny.train()
    logits, _, enc = tiny(torch.randn(4, 3, 8, 32, 32))
    assert enc.keep is not None and set(enc.keep.unique().tolist()) <= {0.0, 1.0}
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    grads = [p.grad for p in tiny.predictors.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_masked_attention_equals_attention_over_kept_tokens() -> None:
    torch.manual_seed(1)
    block = Block(16, 2).eval()
    x = torch.randn(2, 10, 16)
    keep = torch.zeros(2, 10)
    kept = torch.tensor([[0, 3, 4, 8], [1, 2, 5, 9]])
    keep.scatter_(1, kept, 1.0)
    masked = block(x, keep).gather(1, kept[..., None].expand(-1, -1, 16))
    gathered = block(x.gather(1, kept[..., None].expand(-1, -1, 16)))
    torch.testing.assert_close(masked, gathered, atol=1e-5, rtol=1e-5)


def test_masked_attention_without_mask_is_softmax_attention() -> None:
    q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
    ref = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1) @ v
    torch.testing.assert_close(masked_attention(q, k, v, torch.ones(1, 5)), ref, atol=1e-5, rtol=1e-5)


def test_flops_drop_with_the_keep_ratio() -> None:
    c = preset("paper", num_actions=51)
    full, half = flops(c, 1.0), flops(c, 0.5)
    assert 10e9 < full < 14e9  # ViT-S on 392 tokens plus anonymizer and head
    assert half < 0.75 * full


def test_decode_puts_kept_tubelets_back_and_blanks_the_rest(tiny: STPrivacy) -> None:
    tiny.eval()
    with torch.no_grad():
        _, z, enc = tiny(torch.randn(1, 3, 8, 32, 32), keep_ratio=0.25)
        video = tiny.decode(z, enc.index)
    assert video.shape == (1, 8, 32, 32, 3)
    blank = (video == 0).all(-1)  # (1, T, H, W)
    per_tubelet = tubelets(blank[:, None].float(), (2, 8, 8))[0].mean(-1)  # 1.0 where dropped
    assert int((per_tubelet < 1).sum()) <= 16 and int((per_tubelet == 1).sum()) >= 48

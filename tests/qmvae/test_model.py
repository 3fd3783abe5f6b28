"""QM-VAE model: the VQ round trip, the documented shapes, Eq. 7 term by term, the crop resampler."""

from __future__ import annotations

import pytest
import torch

from veil.align import CropSpec
from veil.qmvae.model import (
    QMVAE,
    QMVAEConfig,
    composite,
    crop_to_spec,
    qmvae_loss,
    search_codes,
    service_divergence,
    service_loss_rate,
)


@pytest.fixture
def model() -> QMVAE:
    torch.manual_seed(0)
    return QMVAE(QMVAEConfig()).eval()


def test_decode_of_indices_equals_the_quantised_path(model):
    x = torch.rand(3, model.config.in_channels, 64, 64)
    with torch.no_grad():
        out = model(x)
        z_q, indices = model.quantize(model.encode(x))
        assert torch.equal(indices, out.indices)
        # the codebook vectors at the indices are the quantised latent ...
        torch.testing.assert_close(model.codes(indices), z_q, atol=1e-6, rtol=0)
        # ... and decoding the indices alone gives the forward pass's faces
        torch.testing.assert_close(model.decode(indices), out.faces, atol=1e-6, rtol=0)


@pytest.mark.parametrize("inputs, size, hidden, latent", [
    (("mosaic", "noise", "cartoon"), 64, (16, 32, 64), 8),            # Figure 12: 3 inputs
    (("blindfold", "mosaic", "noise", "cartoon"), 64, (16, 32, 64), 8),
    (("blindfold", "mosaic", "noise", "cartoon", "blur"), 96, (16, 32), 24),  # 5 inputs
])
def test_shapes_follow_the_contract(inputs, size, hidden, latent):
    cfg = QMVAEConfig(inputs=inputs, size=size, hidden=hidden, codebook_size=16, codebook_dim=8)
    model = QMVAE(cfg).eval()
    assert cfg.in_channels == 3 * len(inputs)
    with torch.no_grad():
        out = model(torch.rand(2, 3 * len(inputs), size, size))
    assert out.faces.shape == (2, 3, size, size)
    assert out.indices.shape == (2, latent, latent)
    assert int(out.indices.max()) < 16 and int(out.indices.min()) >= 0
    assert float(out.faces.min()) >= 0.0 and float(out.faces.max()) <= 1.0


def test_wrong_channel_count_names_the_inputs(model):
    with pytest.raises(ValueError, match="blindfold"):
        model(torch.rand(1, 9, 64, 64))


@pytest.mark.parametrize("kwargs, message", [
    ({"inputs": ("blindfold", "original")}, "inputs must be"),
    ({"size": 60}, "divisible"),
    ({"codebook_size": 1}, "codebook_size"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QMVAEConfig(**kwargs)


def test_loss_is_eq7_term_by_term(model):
    torch.manual_seed(1)
    model.train()
    x, original = torch.rand(4, 12, 64, 64), torch.rand(4, 3, 64, 64)
    weights = torch.randn(3 * 64 * 64, 7) * 0.01
    service = lambda faces: faces.flatten(1) @ weights  # noqa: E731 - a linear "service"
    out = model(x)
    terms = qmvae_loss(out, original, service, alpha=0.4, beta=0.25)
    mse = ((out.faces - original) ** 2).mean()
    p, q = torch.softmax(service(original), -1), torch.softmax(service(out.faces), -1)
    kl = (p * (p.log() - q.log())).sum(-1).mean()
    expected = 0.4 * kl + 0.6 * mse + out.codebook + 0.25 * out.commitment
    torch.testing.assert_close(terms.total, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(terms.service, kl, atol=1e-6, rtol=1e-5)
    # the codebook term moves only the codebook, the commitment term only the encoder
    codebook = model.vq.codebook
    assert torch.autograd.grad(out.commitment, codebook, retain_graph=True, allow_unused=True)[0] is None
    enc_w = model.encoder[0].weight
    assert torch.autograd.grad(out.codebook, enc_w, retain_graph=True, allow_unused=True)[0] is None
    with pytest.raises(ValueError, match="alpha"):
        qmvae_loss(out, original, service, alpha=1.5)


def test_service_divergence_and_rate_by_hand():
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert service_loss_rate(a, b) == pytest.approx(1 / 3)
    assert float(service_divergence(a, a)) == pytest.approx(0.0, abs=1e-7)
    p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    assert float(service_divergence(a, b)) == pytest.approx(float((p * (p / q).log()).sum() / 3), rel=1e-5)


def test_crop_to_spec_is_identity_for_the_same_spec_and_zooms_by_the_padding_ratio():
    spec = CropSpec(64, 0.35)
    faces = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(crop_to_spec(faces, spec, spec), faces, atol=1e-5, rtol=0)
    # a bright square exactly the mean face's extent fills a padding-0 crop
    square = torch.zeros(1, 1, 64, 64)
    lo, hi = round(0.35 / 1.7 * 64), round(1.35 / 1.7 * 64)
    square[..., lo:hi, lo:hi] = 1.0
    zoomed = crop_to_spec(square, spec, CropSpec(32, 0.0))
    assert float(zoomed[..., 2:-2, 2:-2].min()) > 0.99


def test_service_sees_the_face_pasted_under_the_mask(model):
    torch.manual_seed(2)
    x, original = torch.rand(2, 12, 64, 64), torch.rand(2, 3, 64, 64)
    mask = torch.zeros(64, 64)
    mask[16:48, 16:48] = 1.0
    with torch.no_grad():
        out = model(x)
    pasted = composite(out.faces, original, mask)
    assert torch.equal(pasted[..., 20:40, 20:40], out.faces[..., 20:40, 20:40])
    assert torch.equal(pasted[..., :8, :], original[..., :8, :])
    assert composite(out.faces, original, None) is out.faces
    seen = []
    service = lambda faces: seen.append(faces) or faces.mean((2, 3)).repeat(1, 3)[:, :7]  # noqa: E731
    qmvae_loss(out, original, service, alpha=0.5, service_original=torch.zeros(2, 7), mask=mask)
    assert torch.equal(seen[0], pasted)


@pytest.fixture(scope="module")
def trained() -> QMVAE:
    """A decoder whose swaps all change the face: random weights and codebook (distinct vectors) at
    64 px, 8x8 codes (the search tests decode every single swap: 2048 here; the shipped model has
    4608, at 96 px)."""
    torch.manual_seed(1)
    model = QMVAE(QMVAEConfig()).eval()
    with torch.no_grad():
        model.vq.codebook = torch.randn(model.config.codebook_size, model.config.codebook_dim)
    return model


def _cells_off(model: QMVAE, seed: int, faces: int, *changes: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random code maps (the goal) and a copy of them (the start) with face 0's cells (y, x)
    moved by their offsets along the codebook."""
    k, s = model.config.codebook_size, model.config.latent_size
    torch.manual_seed(seed)
    goal = torch.randint(0, k, (faces, s, s))
    start = goal.clone()
    for y, x, offset in changes:
        start[0, y, x] = (goal[0, y, x] + offset) % k
    return goal, start


def test_code_search_finds_a_changed_cell_and_never_raises_the_loss(trained):
    """A target drawn from known codes: the search must find the cell that differs from them."""
    model = trained
    goal, start = _cells_off(model, 1, 2, (6, 3, 5))  # face 0: one code off
    with torch.no_grad():
        target = model.decode(goal)

    def loss_fn(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return ((faces - target[face]) ** 2).flatten(1).mean(1)

    with torch.no_grad():
        before = loss_fn(model.decode(start), torch.arange(2))
    found, loss = search_codes(model, start, loss_fn, steps=1, candidates=8)
    assert float(loss[0]) < float(before[0]) and torch.equal(found[1], goal[1])
    everything = model.config.codebook_size * model.config.latent_size ** 2  # every single swap is a candidate: the exact one wins
    found, loss = search_codes(model, start, loss_fn, steps=4, candidates=everything, done=1e-9)
    assert torch.equal(found[1], goal[1])  # face 1 starts at its optimum (loss 0 <= done): untouched
    assert torch.equal(found[0], goal[0]) and float(loss[0]) < 1e-9
    assert found.dtype == start.dtype and int(found.min()) >= 0 and int(found.max()) < model.config.codebook_size


def test_code_search_widens_where_the_ranking_fails(trained):
    """A loss with no gradient (the faces rounded to 8 bits) ranks every swap alike: the narrow
    search tries 8 arbitrary ones and stops; widened to every swap it finds the one wrong cell."""
    model = trained
    k = model.config.codebook_size
    goal, start = _cells_off(model, 2, 1, (6, 3, 5))
    with torch.no_grad():
        target = torch.round(model.decode(goal) * 255.0)

    def loss_fn(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return ((torch.round(faces * 255.0) - target[face]) ** 2).flatten(1).mean(1)

    with torch.no_grad():
        before = float(loss_fn(model.decode(start), torch.arange(1))[0])
    assert before > 0
    narrow, loss = search_codes(model, start, loss_fn, steps=4, candidates=8)
    assert torch.equal(narrow, start) and float(loss[0]) == before
    everything = k * model.config.latent_size ** 2
    found, loss = search_codes(model, start, loss_fn, steps=4, candidates=8, widest=everything)
    assert torch.equal(found, goal) and float(loss[0]) == 0.0
    found, _ = search_codes(model, start, loss_fn, steps=1, candidates=10 * everything)  # more than there are
    assert torch.equal(found, goal)
    # a face already below `wide_above` does not widen
    kept, loss = search_codes(model, start, loss_fn, steps=4, candidates=8, widest=everything, wide_above=before)
    assert torch.equal(kept, start) and float(loss[0]) == before


def test_a_settled_carried_choice_is_kept_unsearched(trained):
    """Two cells off the target, carried with one of them right: a narrow face with ``settled``
    above the carried choice's loss keeps it; below, the search goes on to the exact target."""
    model = trained
    k = model.config.codebook_size
    goal, start = _cells_off(model, 3, 1, (6, 3, 5), (1, 2, 7))
    carried = start.clone()
    carried[0, 1, 2] = goal[0, 1, 2]
    with torch.no_grad():
        target = model.decode(goal)

    def loss_fn(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return ((faces - target[face]) ** 2).flatten(1).mean(1)

    with torch.no_grad():
        own, other = (float(loss_fn(model.decode(c), torch.arange(1))[0]) for c in (start, carried))
    assert 0 < other < own
    everything = k * model.config.latent_size ** 2
    narrow = torch.tensor([True])
    kept, loss = search_codes(model, start, loss_fn, steps=4, candidates=everything, alternative=carried,
                              settled=other * 1.01, narrow=narrow)
    assert torch.equal(kept, carried) and float(loss[0]) == other
    found, loss = search_codes(model, start, loss_fn, steps=4, candidates=everything, done=1e-9, alternative=carried,
                               settled=other * 0.5, narrow=narrow)
    assert float(loss[0]) <= other * 0.5 and not torch.equal(found, carried)
    held, loss = search_codes(model, start, loss_fn, steps=4, candidates=everything, done=1e-9, alternative=carried,
                              settled=other * 0.5, narrow=narrow, kept=other * 1.01)
    assert torch.equal(held, carried) and float(loss[0]) == other  # within `kept`: left as it is
    found, loss = search_codes(model, start, loss_fn, steps=4, candidates=everything, done=1e-9, alternative=carried,
                               settled=other * 1.01)  # not narrow: searched down to `done`
    assert torch.equal(found, goal)


def test_finalists_are_screened_by_the_quick_loss_and_judged_by_the_full_one(trained):
    """The quick screen ranks the candidates and only each face's ``finalists`` best of it are
    scored by the full loss, which alone decides: a screen that ranks the one right swap last
    hides it, one that ranks it first finds it at a fraction of the full loss's work."""
    model = trained
    k = model.config.codebook_size
    goal, start = _cells_off(model, 4, 1, (2, 5, 3))
    with torch.no_grad():
        target = model.decode(goal)
    judged = []

    def loss_fn(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        judged.append(len(faces))
        return ((faces - target[face]) ** 2).flatten(1).mean(1)

    everything = k * model.config.latent_size ** 2
    loss_fn.quick = lambda faces, face: ((faces - target[face]) ** 2).flatten(1).mean(1)
    found, _ = search_codes(model, start, loss_fn, steps=1, candidates=everything, finalists=4)
    assert torch.equal(found, goal) and judged[-1] == 4  # 4 of every swap judged in full
    loss_fn.quick = lambda faces, face: -((faces - target[face]) ** 2).flatten(1).mean(1)  # ranks it last
    found, _ = search_codes(model, start, loss_fn, steps=1, candidates=everything, finalists=4)
    assert not torch.equal(found, goal)
    found, _ = search_codes(model, start, loss_fn, steps=1, candidates=everything, finalists=None)  # no screen
    assert torch.equal(found, goal) and judged[-1] == everything


def test_code_search_keeps_the_start_when_no_swap_helps(model):
    start = torch.zeros(1, 8, 8, dtype=torch.long)

    def loss_fn(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(faces)) + 0 * faces.sum()  # flat: no swap is better

    found, loss = search_codes(model, start, loss_fn, steps=3)
    assert torch.equal(found, start) and float(loss[0]) == 1.0

"""QM-VAE training on real faces: the loss falls, checkpoints round-trip, `veil train qmvae` runs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from veil.align import EXPRESSION_CROP
from veil.qmvae.checkpoint import CheckpointError, QMVAECheckpoint, TrainConfig, load_checkpoint, save_checkpoint
from veil.qmvae.data import FaceSet, augment, balance, lfw_subset, load_faces
from veil.qmvae.model import QMVAE, ExpressionService, QMVAEConfig
from veil.qmvae.train import evaluate_split, paste_mask, prepare, service_targets, train

PHOTOS = ("obama.jpg", "obama2.jpg", "biden.jpg", "0-f15-hao-ph.jpg", "0-f1-su-ph.jpg")
SMALL = dict(hidden=(16, 32, 64), codebook_size=32, codebook_dim=16)


@pytest.fixture(scope="module")
def faces(media):
    cfg = QMVAEConfig(**SMALL)
    return load_faces([media(n) for n in PHOTOS], cfg.crop, service_spec=EXPRESSION_CROP, log=lambda _: None)


def test_faces_are_split_per_photo(faces):
    assert len(faces) == 5
    assert faces.crops.shape == (5, 64, 64, 3)
    # every fifth photo is held out whole: the fifth (0-f1-su-ph.jpg)
    assert faces.test.tolist() == [False, False, False, False, True]
    assert faces.sources[4].endswith("0-f1-su-ph.jpg")
    assert faces.service_crops.shape == (5, 112, 112, 3)
    assert faces.subset([1, 4]).service_crops.shape == (2, 112, 112, 3)


def test_lfw_faces_are_aligned_photos_that_only_train(tmp_path, media, faces):
    paths = lfw_subset(tmp_path / "lfw")
    assert len(paths) == 100 and all(p.is_file() for p in paths)
    assert lfw_subset(tmp_path / "lfw") == paths  # written once
    extra = paths[:6]
    cfg = QMVAEConfig(**SMALL)
    # LFW first: the store's photos must still be held out as without them
    both = load_faces([*extra, *(media(n) for n in PHOTOS)], cfg.crop, train_only=extra, log=lambda _: None)
    lfw = np.asarray([s.startswith(str(tmp_path)) for s in both.sources])
    assert lfw.sum() >= 5  # the detector aligns (nearly) every enlarged 25-pixel face
    assert not both.test[lfw].any()
    assert both.test[~lfw].tolist() == faces.test.tolist()
    grey = both.crops[lfw].astype(int)
    assert np.abs(grey[..., 0] - grey[..., 2]).max() <= 1  # grey faces, kept grey


def test_service_targets_are_the_classifier_on_the_full_resolution_face(faces):
    service = ExpressionService(QMVAEConfig(**SMALL).crop)
    targets = service_targets(faces, service)
    crops = torch.from_numpy(faces.service_crops).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        torch.testing.assert_close(targets, service.net.logits(crops))
    assert service_targets(faces.subset([0]), lambda f: f) is None  # a service without its own crop
    with pytest.raises(ValueError, match="service targets"):
        prepare(faces.crops, QMVAEConfig(**SMALL), service, seed=0, logits=targets[:2])


def test_balance_caps_each_source_evenly():
    n = 10
    faces = FaceSet(np.zeros((n + 2, 4, 4, 3), np.uint8), np.zeros((n + 2, 5, 2)), np.arange(n + 2),
                    np.zeros(n + 2, bool), ["video.mp4"] * n + ["a.jpg", "b.jpg"])
    kept = balance(faces, 4)
    assert kept.sources == ["video.mp4"] * 4 + ["a.jpg", "b.jpg"]
    assert kept.frame_index.tolist() == [0, 3, 6, 9, 10, 11]
    assert balance(faces, None) is faces
    with pytest.raises(ValueError, match="cap"):
        balance(faces, 0)


def test_augment_keeps_the_row_order_its_targets_rely_on():
    crops = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    out = augment(crops, np.random.default_rng(1), copies=2, colour=0.2)
    assert out.shape == (12, 16, 16, 3)
    assert np.array_equal(out[:3], crops) and np.array_equal(out[3:6], crops[:, :, ::-1])
    assert not np.array_equal(out[6:9], out[9:12])


def test_paste_mask_is_the_protections_ellipse():
    mask = paste_mask(QMVAEConfig())
    assert mask.shape == (64, 64) and float(mask[32, 32]) == 1.0 and float(mask[0, 0]) == 0.0


def test_a_tiny_training_run_lowers_the_loss(faces):
    cfg = QMVAEConfig(**SMALL)
    service = ExpressionService(cfg.crop)
    crops = augment(faces.crops, np.random.default_rng(0))
    data = prepare(crops, cfg, service, seed=0)
    torch.manual_seed(0)
    tc = TrainConfig(epochs=16, batch_size=16, service_batch=8, lr=3e-3, warmup_epochs=2, service_lr_scale=0.3,
                     freeze_decoder=False)
    ckpt = QMVAECheckpoint(QMVAE(cfg), tc)
    before = evaluate_split(ckpt.model, data, service, tc)
    train(ckpt, data, data, service, log=lambda _: None)
    after = evaluate_split(ckpt.model, data, service, tc)
    assert len(ckpt.history) == 16 and ckpt.epoch == 16
    assert after["total"] < 0.8 * before["total"], (before, after)
    assert after["service"] < before["service"] and after["mse"] < before["mse"], (before, after)


def test_training_twice_gives_the_same_model(faces):
    """Several threads, the service phase included: the same run twice, the same weights bit for bit
    (the shipped model's size: some of its kernels sum in a varying order unless told not to)."""
    cfg = QMVAEConfig()
    service = ExpressionService(cfg.crop)
    data = prepare(augment(faces.crops, np.random.default_rng(0), copies=3), cfg, service, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weights = []
        for _ in range(2):
            torch.manual_seed(0)
            tc = TrainConfig(epochs=2, batch_size=32, service_batch=4, warmup_epochs=1)
            ckpt = train(QMVAECheckpoint(QMVAE(cfg), tc), data, data, service, log=lambda _: None)
            weights.append(torch.cat([p.detach().flatten() for p in ckpt.model.state_dict().values()]))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(weights[0], weights[1])
    assert not torch.are_deterministic_algorithms_enabled()  # switched back on return


def test_checkpoint_round_trips_with_its_config(tmp_path):
    cfg = QMVAEConfig(inputs=("mosaic", "noise", "cartoon"), hidden=(8, 16), codebook_size=8, codebook_dim=4)
    tc = TrainConfig(alpha=0.3, epochs=5)
    model = QMVAE(cfg).eval()
    x = torch.rand(2, 9, 32, 32)
    with torch.no_grad():
        model(x)  # the first batch initialises the codebook (k-means)
    ckpt = QMVAECheckpoint(model, tc, epoch=3, optimizer={"state": {}}, history=[{"epoch": 1, "test_mse": 0.5}])
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    back = load_checkpoint(path)
    assert back.model.config == cfg and back.model.config.inputs == ("mosaic", "noise", "cartoon")
    assert back.train_config == tc and back.epoch == 3 and back.history == ckpt.history
    with torch.no_grad():
        torch.testing.assert_close(back.model(x).faces, model(x).faces, atol=0, rtol=0)
    assert not (tmp_path / "m.pt.tmp").exists()


def test_a_bad_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(CheckpointError, match="veil train qmvae"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a veil QM-VAE checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_train_command_trains_and_resumes(tmp_path, media):
    from veil.cli import app

    folder = tmp_path / "faces"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(media(name), folder / name)
    out = tmp_path / "qm.pt"
    args = ["train", "qmvae", "--faces", str(folder), "-o", str(out), "--epochs", "1", "--batch-size", "16",
            "--codebook-size", "16", "--codebook-dim", "8", "--inputs", "mosaic,noise,cartoon"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out)
    assert ckpt.epoch == 1 and ckpt.model.config.inputs == ("mosaic", "noise", "cartoon")
    assert ckpt.model.config.codebook_size == 16
    assert (tmp_path / "qm.curves.csv").read_text().splitlines()[0].startswith("epoch,")
    result = CliRunner().invoke(app, [*args[:7], "2", "--resume", *args[8:]])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out).epoch == 2 and len(load_checkpoint(out).history) == 2
    bad = CliRunner().invoke(app, ["train", "qmvae", "--faces", str(tmp_path / "nowhere"), "-o", str(out)])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    both = CliRunner().invoke(app, ["train", "qmvae", "--default", "--faces", str(folder)])
    assert both.exit_code == 2 and "or --default" in both.output


def test_a_frozen_decoder_stays_put_once_the_service_joins(faces):
    cfg = QMVAEConfig(**SMALL)
    service = ExpressionService(cfg.crop)
    data = prepare(faces.crops, cfg, service, seed=0)
    torch.manual_seed(0)
    tc = TrainConfig(epochs=1, batch_size=4, lr=3e-3, warmup_epochs=1, freeze_decoder=True)
    ckpt = QMVAECheckpoint(QMVAE(cfg), tc)
    train(ckpt, data, data, service, log=lambda _: None)  # the warm-up epoch trains everything
    decoder = {k: v.clone() for k, v in ckpt.model.decoder.state_dict().items()}
    encoder = {k: v.clone() for k, v in ckpt.model.encoder.state_dict().items()}
    tc.epochs = 2
    train(ckpt, data, data, service, log=lambda _: None)
    assert all(torch.equal(v, ckpt.model.decoder.state_dict()[k]) for k, v in decoder.items())
    assert not all(torch.equal(v, ckpt.model.encoder.state_dict()[k]) for k, v in encoder.items())


def test_shape_terms_are_zero_for_the_original_and_grow_with_damage(faces):
    """1 - SSIM and the geometry change: nothing for the original itself, more for a face whose
    mouth is painted over than for one slightly blurred."""
    from veil.qmvae.service import ExpressionGeometry
    from veil.qmvae.train import _shape_terms

    cfg = QMVAEConfig(**SMALL)
    geometry = ExpressionGeometry(cfg.crop)
    data = prepare(faces.crops, cfg, None, seed=0, geometry=geometry)
    assert data.geometry.shape == (5, 4) and torch.isfinite(data.geometry).all()
    tc = TrainConfig(ssim_weight=1.0, geometry_weight=1.0)
    every = slice(0, 5)
    same = _shape_terms(data.target, data, every, tc, geometry, None)
    assert set(same) == {"structure", "geometry"}
    assert float(same["structure"]) < 1e-4 and float(same["geometry"]) < 1e-4
    blurred = torch.nn.functional.avg_pool2d(data.target, 3, 1, 1)
    painted = data.target.clone()
    painted[:, :, 40:56, 16:48] = painted[:, :, 40:56, 16:48].mean((2, 3), keepdim=True)  # the mouth, flat
    soft, flat = (_shape_terms(f, data, every, tc, geometry, None) for f in (blurred, painted))
    assert 0 < float(soft["structure"]) and 0 < float(flat["structure"])
    assert float(flat["geometry"]) > float(soft["geometry"]) > 0
    assert _shape_terms(data.target, data, every, TrainConfig(), geometry, None) == {}


def test_training_with_the_ensemble_and_shape_terms_records_them(faces):
    """The service term over face-api's, Human's and fer's nets, SSIM from the start, geometry once
    the service joins: every term is in the history, and the test split's geometry change too."""
    from veil.qmvae.service import ExpressionEnsemble, ExpressionGeometry

    cfg = QMVAEConfig(**SMALL)
    service, geometry = ExpressionEnsemble(cfg.crop, ("faceapi", "human", "fer")), ExpressionGeometry(cfg.crop)
    data = prepare(faces.crops, cfg, service, seed=0, geometry=geometry)
    assert data.logits.shape == (5, 3, 7)
    torch.manual_seed(0)
    tc = TrainConfig(epochs=2, batch_size=4, service_batch=2, warmup_epochs=1, ssim_weight=0.5, geometry_weight=1.0)
    ckpt = train(QMVAECheckpoint(QMVAE(cfg), tc), data, data, service, log=lambda _: None, geometry=geometry)
    warm, joined = ckpt.history
    assert "train_structure" in warm and "train_geometry" not in warm
    assert joined["train_geometry"] > 0 and joined["test_geometry"] > 0 and 0 <= joined["test_service_loss_rate"] <= 1
    assert all(np.isfinite(v) for v in joined.values())


def test_train_command_checks_the_service_and_shape_weights(tmp_path):
    from veil.cli import app

    base = ["train", "qmvae", "--faces", str(tmp_path), "-o", str(tmp_path / "m.pt")]
    bad = CliRunner().invoke(app, [*base, "--service", "faceapi,bogus"])
    assert bad.exit_code == 2 and "bogus" in bad.output
    bad = CliRunner().invoke(app, [*base, "--geometry-weight", "-1"])
    assert bad.exit_code == 2 and "--geometry-weight" in bad.output
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    bad = CliRunner().invoke(app, [*base, "--lfw"])
    assert bad.exit_code == 2 and "CelebA" in bad.output

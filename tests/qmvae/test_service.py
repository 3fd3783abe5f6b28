"""The expression service as an ensemble: its crops, its numbers on real faces, its ONNX twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from veil.align import EXPRESSION_CROP, crop_faces
from veil.detect import get_detector
from veil.errors import InputError
from veil.models.emotion import HumanEmotion
from veil.models.fer import FerEmotion
from veil.models.onnx_runtime import FrozenNet
from veil.protect import get_protector
from veil.qmvae.model import ExpressionService, QMVAEConfig, crop_to_spec, service_divergence
from veil.qmvae.service import _CROPS, MEMBERS, SHARED_CROP, ExpressionEnsemble, parse_members, resampling

PHOTOS = ("obama.jpg", "biden.jpg", "0-f15-hao-ph.jpg", "multi_face.jpg")


@pytest.fixture(scope="module")
def ensemble():
    return ExpressionEnsemble(QMVAEConfig().crop)


@pytest.fixture(scope="module")
def faces(load_rgb):
    """(frame, Faces) of the store photos, CenterFace's faces."""
    detector = get_detector("centerface", detect_size=None)
    return [(image, detector.detect(image)) for image in (load_rgb(n) for n in PHOTOS)]


def _tensor(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0


@pytest.mark.parametrize("name", MEMBERS)
def test_resampling_matrices_equal_the_grid_sampler(name):
    faces = torch.rand(2, 3, SHARED_CROP.size, SHARED_CROP.size)
    weights = resampling(SHARED_CROP, _CROPS[name])
    torch.testing.assert_close(torch.matmul(torch.matmul(weights, faces), weights.T),
                               crop_to_spec(faces, SHARED_CROP, _CROPS[name]), atol=1e-4, rtol=0)


def test_members_are_named_and_ordered():
    assert parse_members("fer, faceapi") == ("faceapi", "fer")
    assert parse_members(["human"]) == ("human",)
    for bad in ("faceapi,nope", ""):
        with pytest.raises(ValueError, match="expression classifiers are faceapi, human, fer"):
            parse_members(bad)


def test_each_member_reads_the_real_faces_as_its_own_network_does(ensemble, faces):
    # On the same aligned faces, face-api's member equals veil's single-classifier service (up to
    # the resampling through the shared crop); Human's and fer's agree in their top label with
    # their own pipelines (their own box crops) on most faces.
    single = ExpressionService(QMVAEConfig().crop)
    agree = {"human": 0, "fer": 0}
    n = 0
    for image, found in faces:
        shared = _tensor(crop_faces(image, found.landmarks, SHARED_CROP))
        with torch.no_grad():
            logp = ensemble.on_own_crop(shared)
            own = torch.log_softmax(single.on_own_crop(_tensor(crop_faces(image, found.landmarks, EXPRESSION_CROP))), -1)
        assert logp.shape == (len(found), 3, 7)
        torch.testing.assert_close(logp.exp().sum(-1), torch.ones(len(found), 3), atol=1e-4, rtol=0)
        assert (logp[:, 0].exp() - own.exp()).abs().max() < 0.1
        assert (logp[:, 0].argmax(-1) == own.argmax(-1)).all()
        for k, net in ((1, HumanEmotion.pretrained()), (2, FerEmotion.pretrained())):
            name = MEMBERS[k]
            agree[name] += int((logp[:, k].argmax(-1).numpy() == net.probabilities(image, found.boxes).argmax(-1)).sum())
        n += len(found)
    assert n >= 8
    assert agree["human"] >= 0.5 * n and agree["fer"] >= 0.6 * n, (agree, n)


def test_the_onnx_twin_gives_the_same_probabilities(ensemble):
    # (Its graphs pad "same" from the shapes: a ceiling division traced as ONNX's truncating one
    # padded the odd 15-pixel maps wrongly.)
    frozen = FrozenNet(ensemble.module, ensemble.name, SHARED_CROP.size)
    assert frozen.runtime == "onnxruntime"
    crops = np.random.default_rng(0).uniform(0, 255, (5, 3, SHARED_CROP.size, SHARED_CROP.size)).astype(np.float32)
    with torch.no_grad():
        expected = ensemble.module(torch.from_numpy(crops)).numpy()
    np.testing.assert_allclose(frozen(crops), expected, atol=1e-4)


def test_the_divergence_of_an_ensemble_is_the_mean_of_its_members():
    a, b = torch.randn(4, 3, 7), torch.randn(4, 3, 7)
    each = [float(service_divergence(a[:, k], b[:, k])) for k in range(3)]
    assert float(service_divergence(a, b)) == pytest.approx(np.mean(each), rel=1e-5)


def test_the_protection_takes_the_classifiers_it_keeps():
    assert get_protector("qmvae", service="faceapi,fer", service_steps=0).service == "faceapi,fer"
    with pytest.raises(InputError, match="expression classifiers"):
        get_protector("qmvae", service="faceapi,nope")


def test_a_lone_member_is_the_single_classifier_service(faces):
    lone = ExpressionEnsemble(QMVAEConfig().crop, ("faceapi",))
    assert lone.own_crop == EXPRESSION_CROP
    single = ExpressionService(QMVAEConfig().crop)
    image, found = faces[0]
    crops = _tensor(crop_faces(image, found.landmarks, EXPRESSION_CROP))
    with torch.no_grad():
        torch.testing.assert_close(lone.on_own_crop(crops)[:, 0], torch.log_softmax(single.on_own_crop(crops), -1),
                                   atol=1e-5, rtol=0)

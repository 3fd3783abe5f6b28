"""Camera motion by phase correlation, on a real photo moved by known amounts."""

import numpy as np
import pytest

from veil.detect.motion import CameraMotion


@pytest.fixture
def scene(load_rgb):
    return load_rgb("obama.jpg")


def _view(scene, x, y, w=640, h=360):
    return np.ascontiguousarray(scene[y:y + h, x:x + w])


@pytest.mark.parametrize("dx, dy", [(0, 0), (20, 0), (-14, 6), (3, -9)])
def test_a_pan_is_measured_to_a_pixel(scene, dx, dy):
    motion = CameraMotion()
    assert motion.update(_view(scene, 100, 200)) == (0.0, 0.0)  # nothing to compare the first frame with
    # The camera moves by (-dx, -dy): the picture's content moves by (dx, dy).
    mx, my = motion.update(_view(scene, 100 - dx, 200 - dy))
    assert abs(mx - dx) <= 1.0 and abs(my - dy) <= 1.0


def test_an_unrelated_picture_counts_as_no_motion(scene, load_rgb):
    motion = CameraMotion()
    motion.update(_view(scene, 100, 200))
    other = np.ascontiguousarray(load_rgb("biden.jpg")[:360, :640])
    assert motion.update(other) == (0.0, 0.0)


def test_reset_forgets_the_previous_frame(scene):
    motion = CameraMotion()
    motion.update(_view(scene, 100, 200))
    motion.reset()
    assert motion.update(_view(scene, 80, 200)) == (0.0, 0.0)

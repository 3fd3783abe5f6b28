"""Shared fixtures and the `slow` marker policy.

Tests marked ``@pytest.mark.slow`` (long training, benchmark-sized runs) run only when
``VEIL_SLOW=1``; CI runs the short versions.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("VEIL_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set VEIL_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

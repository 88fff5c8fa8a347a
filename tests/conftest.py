"""Shared fixtures: a small simulated study (fast sizes, same code path as the demo)."""

import pytest
from runner import SMALL_SIMULATION as SMALL

from prepost import simulate


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """A 2-participant simulated study: returns its root (with bids/ and truth/)."""
    out = tmp_path_factory.mktemp("study")
    simulate.simulate_study(out, participants=2, params=SMALL)
    return out


def pytest_collection_modifyitems(items):
    """Files with workflow (``slow``) tests first, each file's tests in their order: with one
    process per core (``-n auto --dist loadfile``) the long files start early and the processes
    finish together."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)

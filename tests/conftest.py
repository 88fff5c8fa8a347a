"""Shared fixtures: a small simulated study (fast sizes, same code path as the demo)."""

from pathlib import Path

import pytest

from prepost import simulate

ROOT = Path(__file__).resolve().parents[1]
# Small but complete: every file and sidecar of the demo, at coarse resolution.
SMALL = {
    "anat": {"voxel_mm": 4.0},
    "bold": {"n_volumes": 30, "voxel_mm": 6.0},
    "pet": {"voxel_mm": 6.0},
}


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """A 2-participant simulated study: returns its root (with bids/ and truth/)."""
    out = tmp_path_factory.mktemp("study")
    simulate.simulate_study(out, participants=2, params=SMALL)
    return out

"""PET frames: checks, window weights with partial frames, and regional vs voxel-wise SUVR."""

import nibabel as nib
import numpy as np
import pytest

from prepost.errors import InputError
from prepost.pet import frames, kinetics, preproc, tacs

# frames of 60, 60, 120, 300, 300 s: windows below cut them
START = np.array([0.0, 60.0, 120.0, 240.0, 540.0])
DURATION = np.array([60.0, 60.0, 120.0, 300.0, 300.0])


@pytest.mark.parametrize("start, duration, n, words", [
    ([], [], None, ["at least one frame"]),
    ([0, 60], [60], None, ["'FrameDuration'", "2 values"]),
    ([0, 60], [60, 60], 3, ["'FrameTimesStart'", "3 values"]),
    ([0, np.nan], [60, 60], None, ["finite"]),
    ([0, 60], [60, 0], None, ["positive durations", "frame 1"]),
    ([-5, 60], [60, 60], None, ["times >= 0", "-5"]),
    ([0, 120, 60], [60, 60, 60], None, ["increasing frame starts", "frame 2"]),
    ([0, 50], [60, 60], None, ["non-overlapping", "frame 1 starts at 50"]),
])
def test_check_frames_names_the_fault(start, duration, n, words):
    with pytest.raises(InputError) as err:
        frames.check_frames(start, duration, n, source="pet.json")
    assert "pet.json" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_check_frames_accepts_gaps_and_returns_floats():
    fs, fd = frames.check_frames([0, 60, 200], [60, 60, 100], 3)  # a gap between 120 and 200 s
    assert fs.dtype == fd.dtype == float and fs.tolist() == [0, 60, 200]
    np.testing.assert_allclose(frames.mid_times(fs, fd), [30, 90, 250])


def test_window_weights_are_overlap_seconds():
    # 90-400 s: half of frame 1 (30 s), all of frame 2 (120 s), 160 of frame 3's 300 s
    w = frames.window_weights(START, DURATION, (90, 400))
    np.testing.assert_allclose(w, np.array([0, 30, 120, 160, 0]) / 310.0)
    # the mean of a piecewise-constant signal over the window, exactly
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert frames.window_mean(values, START, DURATION, (90, 400)) == pytest.approx(
        (30 * 2 + 120 * 3 + 160 * 4) / 310.0, rel=1e-12)
    # frames on the window edges: duration weights
    np.testing.assert_allclose(frames.window_weights(START, DURATION, (240, 840)), [0, 0, 0, 0.5, 0.5])
    # an open end runs to the scan end
    np.testing.assert_allclose(frames.window_weights(START, DURATION, (540, None)), [0, 0, 0, 0, 1])


@pytest.mark.parametrize("window, words", [
    ((400, 90), ["end > start"]),
    (("a", 5), ["(start_s, end_s)"]),
    ((0, 900), ["within the scan 0-840 s"]),
])
def test_window_errors(window, words):
    with pytest.raises(InputError) as err:
        frames.window_weights(START, DURATION, window)
    for word in words:
        assert word in str(err.value)


def test_window_clipped_to_the_scan_when_asked():
    w = frames.window_weights(START, DURATION, (600, 5000), within_scan=False)
    np.testing.assert_allclose(w, [0, 0, 0, 0, 1])
    with pytest.raises(InputError, match="overlapping the frames"):
        frames.window_weights(START, DURATION, (900, 1000), within_scan=False)


def test_regional_suvr_equals_voxel_map_averaged_over_the_roi():
    """A window cutting frames: the regional SUVR (kinetics) and the mean of the voxel SUVR map
    (tacs) over the same ROI weigh the frames alike, so they agree to rounding."""
    rng = np.random.default_rng(0)
    data = rng.uniform(1.0, 10.0, (6, 5, 4, START.size)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    roi = np.zeros(data.shape[:3], bool)
    roi[1:4, 1:3, :2] = True
    ref = rng.uniform(2.0, 4.0, START.size)
    window = (90.0, 700.0)  # cuts frames 1, 4 and 5
    regional_tac, _ = tacs.extract_tacs(img, {"roi": roi}, START, DURATION)
    regional = kinetics.suvr(regional_tac["roi"].to_numpy(), ref, START, DURATION, window_s=window)
    voxel = tacs.voxelwise_suvr(img, START, DURATION, reference_tac=ref, window_s=window)
    mean_map = float(np.asarray(voxel.dataobj)[roi].mean())
    assert regional.estimates["SUVR"] == pytest.approx(mean_map, rel=1e-6)
    # a duration-weighted mean of the frames at least half inside would differ here
    half_in = np.array([0, 1, 1, 1, 1], float) * DURATION
    other = (regional_tac["roi"].to_numpy() @ half_in) / (ref @ half_in)
    assert abs(other / mean_map - 1) > 1e-3


def test_summed_image_weights_frames_by_overlap():
    rng = np.random.default_rng(1)
    data = rng.uniform(0.0, 5.0, (3, 3, 2, START.size)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    summed = preproc.summed_image(img, START, DURATION, window_s=(90, 400))
    w = np.array([0, 30, 120, 160, 0]) / 310.0
    np.testing.assert_allclose(np.asarray(summed.dataobj), data @ w, rtol=1e-5)


@pytest.mark.parametrize("start, duration, kind", [
    ([0.0], [1200.0], "static"),                                   # one frame
    ([3000.0, 3300.0, 3600.0, 3900.0], [300.0] * 4, "static"),     # 4 late frames (20 min)
    (list(np.arange(0, 3600, 300.0)), [300.0] * 12, "dynamic"),    # from injection
    ([600.0 + 300 * i for i in range(10)], [300.0] * 10, "static"),  # 10 frames, 10 min late
    (list(START), list(DURATION), "static"),                       # only 5 frames
])
def test_scan_kind(start, duration, kind):
    assert frames.scan_kind(*frames.check_frames(start, duration)) == kind
    assert frames.MIN_DYNAMIC_FRAMES == 6 and frames.MAX_DYNAMIC_START_S == 300.0

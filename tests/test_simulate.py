"""The study simulator: determinism, planted effects and ground truth against closed forms."""

import filecmp
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

from prepost import bids, simulate

from conftest import SMALL


def test_same_seed_gives_byte_identical_files(tmp_path, small_study):
    again = simulate.simulate_study(tmp_path / "again", participants=2, params=SMALL)
    files = sorted(p.relative_to(small_study) for p in small_study.rglob("*") if p.is_file())
    assert len(files) > 40
    for rel in files:
        assert filecmp.cmp(small_study / rel, again / rel, shallow=False), rel


def test_other_seed_changes_the_data(tmp_path, small_study):
    other = simulate.simulate_study(tmp_path / "other", participants=1,
                                    params={**SMALL, "seed": 7})
    rel = "truth/sub-01/sub-01_ses-pre_network-fc.tsv"
    assert not filecmp.cmp(small_study / rel, other / rel, shallow=False)


def test_noise_free_network_signals_reproduce_truth_fc(small_study):
    params = simulate.merge_params(SMALL)
    S = simulate.subject_network_fc(params, "01")
    h = simulate.hierarchy_positions(params)
    table = simulate.schaefer400_table()
    truth = small_study / "truth" / "sub-01"
    for ses, planted in (("pre", False), ("post", True)):
        net = pd.read_csv(truth / f"sub-01_ses-{ses}_network-fc.tsv", sep="\t", index_col=0)
        sig = pd.read_csv(truth / f"sub-01_ses-{ses}_network-signals.tsv", sep="\t")
        assert list(net.columns) == simulate.NETWORKS == list(sig.columns[:-1])
        assert sig.columns[-1] == "hierarchy"
        # the network signals' sample covariance is the participant's network covariance exactly
        # (files keep 6 decimals); the hierarchy signal has unit variance
        np.testing.assert_allclose(np.cov(sig[simulate.NETWORKS].to_numpy().T), S[ses], atol=2e-5)
        assert sig["hierarchy"].var() == pytest.approx(1.0, abs=1e-4)
        # the network truth is the mean Fisher z over parcel pairs of the parcel truth, whose
        # hierarchy term is loading^2 x h_p h_q over the parcels' variances
        R = simulate.parcel_fc_truth(S[ses], table.network, h,
                                     simulate.hierarchy_loading(params, planted))
        z = np.arctanh(R[np.ix_(table.network == "Vis", table.network == "Default")]).mean()
        assert np.arctanh(net.loc["Vis", "Default"]) == pytest.approx(z, abs=1e-5)
        file_R = pd.read_csv(truth / f"sub-01_ses-{ses}_atlas-Schaefer400_fc.tsv.gz", sep="\t",
                             index_col=0).to_numpy()
        np.testing.assert_allclose(file_R, R, atol=6e-5)


def test_gradient_truth_is_the_workflow_measure_of_the_noise_free_runs(small_study):
    """truth.tsv's gradient rows are the connectivity stage's gradient measures of each run's
    noise-free parcel FC, which scatters about the expected FC by sampling error only."""
    truth = pd.read_csv(small_study / "truth" / "truth.tsv", sep="\t", dtype={"region": str})
    ids = [(sub, ses) for sub in ("01", "02") for ses in ("pre", "post")]
    fcs = []
    for sub, ses in ids:
        tp = simulate.truth_paths(small_study / "truth", sub, ses)
        z = pd.read_csv(tp["sample_fc"], sep="\t", index_col=0).to_numpy()
        R = pd.read_csv(tp["parcel_fc"], sep="\t", index_col=0).to_numpy()
        off = ~np.eye(len(R), dtype=bool)
        # 28 noise-free volumes: r scatters about the expected r with SD ~ 1/sqrt(T_eff)
        assert np.corrcoef(z[off], np.arctanh(R[off]))[0, 1] > 0.3
        assert abs(np.mean(np.tanh(z[off]) - R[off])) < 0.05
        fcs.append(z)
    nets = simulate.schaefer400_table().network.to_numpy()
    want = simulate.gradient_truth(fcs, ids, nets)
    assert set(want.measure) == {"gradient1_range", "gradient1_variance", "gradient1_position"}
    assert len(want) == 4 * (2 + 7)
    got = truth[truth.measure.str.startswith("gradient1")]
    merged = want.assign(participant_id="sub-" + want.participant_id).merge(
        got, on=["participant_id", "session", "measure", "region"])
    assert len(merged) == len(want)
    np.testing.assert_allclose(merged.value_x, merged.value_y, atol=1e-6)
    assert (merged.loc[merged.measure == "gradient1_range", "value_x"] > 0).all()


def test_parcel_model_gives_truth_parcel_fc():
    """Parcel signals built as in the simulator correlate as parcel_fc_truth says (long run),
    with and without the hierarchy signal."""
    rng = np.random.default_rng(0)
    S = simulate.subject_network_fc(simulate.merge_params(), "01")["pre"]
    nets = np.repeat(simulate.NETWORKS, 6)
    h = np.linspace(-1.5, 1.5, nets.size)
    T = 6000
    s = simulate.network_signals(S, T, 2.0, rng, band=(0.01, 0.24))
    c = rng.standard_normal((T, 1))
    e = rng.standard_normal((T, nets.size))
    off = ~np.eye(nets.size, dtype=bool)
    for g in (0.0, 0.45):
        R = np.corrcoef(simulate.parcel_series(S, nets, h, g, s, c, e).T)
        expected = simulate.parcel_fc_truth(S, nets, h, g)
        assert np.max(np.abs(R[off] - expected[off])) < 0.06
        assert abs(np.mean(R[off] - expected[off])) < 0.01
    # the hierarchy term: Vis (low h) and Default (high h) parcels anticorrelate more
    vis, dmn = nets == "Vis", nets == "Default"
    assert simulate.parcel_fc_truth(S, nets, h, 0.45)[np.ix_(vis, dmn)].mean() \
        < simulate.parcel_fc_truth(S, nets)[np.ix_(vis, dmn)].mean() - 0.2


def test_planted_gradient_changes_are_exact_in_a_null_study():
    """The two sessions of each draw share their random numbers: a null study's planted
    gradient changes are exactly 0, and a planted study's carry a Monte Carlo SE far below
    the change."""
    null = simulate.planted_changes(simulate.merge_params({"null_study": True}), n_draws=3)
    assert (null["change"] == 0).all() and (null["change_se"] == 0).all()
    comp = simulate.planted_changes(simulate.merge_params(), n_draws=3)
    rng = comp.set_index(["measure", "region"]).loc[("gradient1_range", "global")]
    assert rng["change"] < -0.01 and 0 < rng["change_se"] < abs(rng["change"]) / 4
    assert (comp.loc[comp["measure"].str.startswith("fc_"), "change_se"] == 0).all()


def test_planted_hierarchy_compression():
    """The flattened hierarchy: network FC changes are the configured ones plus the loading's
    share (none without compression), and the principal gradient's range falls."""
    def changes(**over):
        return simulate.planted_changes(simulate.merge_params(over), n_draws=2) \
            .set_index(["measure", "region"])["change"]

    # without the hierarchy signal: the configured changes (to the precision of the z-mean of
    # the nearest valid covariance); with it, uncompressed: the same up to the tanh nonlinearity
    none = changes(hierarchy={"loading": 0.0})
    flat = changes(effects={"gradient_compression": 0.0})
    for key, dz in ((("fc_within", "Default"), -0.10), (("fc_between", "SomMot-Default"), 0.10),
                    (("fc_between", "Vis-Limbic"), -0.05)):
        assert none[key] == pytest.approx(dz, abs=0.01)
        assert flat[key] == pytest.approx(dz, abs=0.03)
    params = simulate.merge_params()
    comp = simulate.planted_changes(params, n_draws=4).set_index(["measure", "region"])["change"]
    # closed form of the hierarchy's share for one Vis-Default pair pattern: loading^2 shrinks by
    # (1 - (1 - c)^2), times h_p h_q (negative between the ends) over the parcels' variances
    g = params["hierarchy"]["loading"]
    shrink = g**2 * (1 - (1 - params["effects"]["gradient_compression"]) ** 2)
    h = simulate.hierarchy_positions(params)
    nets = simulate.schaefer400_table().network.to_numpy()
    share = -shrink * np.mean(np.outer(h[nets == "SomMot"], h[nets == "Default"]))
    got = comp["fc_between", "SomMot-Default"] - flat["fc_between", "SomMot-Default"]
    assert got == pytest.approx(share, rel=0.35) and got > 0.02
    assert comp["fc_within", "Default"] < flat["fc_within", "Default"] - 0.02
    assert comp["gradient1_range", "global"] < -0.01
    assert abs(flat["gradient1_range", "global"]) < 0.01
    # the hierarchy axis is the principal gradient of the model's FC
    from prepost.connectivity import gradients as G

    grad, _ = G.fc_gradients(simulate.fisher_z(simulate.group_parcel_fc(params, False)), 3)
    assert abs(np.corrcoef(grad[:, 0], h)[0, 1]) > 0.75


def test_planted_effects_and_null_mode():
    eff = simulate.merge_params()["effects"]
    D = simulate.planted_effect_z(eff)
    d, s = simulate.NETWORKS.index("Default"), simulate.NETWORKS.index("SomMot")
    assert D[d, d] == pytest.approx(-0.10)
    assert D[s, d] == D[d, s] == pytest.approx(0.10)
    assert D[0, 0] == pytest.approx(-0.05)
    null = simulate.merge_params({"null_study": True})
    assert all(v == 0 for v in null["effects"].values())
    # with no effect and no noise, follow-up equals baseline
    quiet = {"null_study": True, "variability": {"fc_session_sd_z": 0.0, "vt_session_sd_pct": 0.0,
                                                  "vt_region_sd_pct": 0.0}}
    fc = simulate.subject_network_fc(simulate.merge_params(quiet), "03")
    np.testing.assert_allclose(fc["pre"], fc["post"])
    vt = simulate.pet_region_truth(simulate.merge_params(quiet), "03")
    np.testing.assert_allclose(vt["pre"]["parcel_vt"], vt["post"]["parcel_vt"])


def test_pcc_vt_change_is_planted_and_global_is_not():
    quiet = {"variability": {"vt_session_sd_pct": 0.0, "vt_region_sd_pct": 0.0}}
    params = simulate.merge_params(quiet)
    vt = simulate.pet_region_truth(params, "05")
    pcc = simulate.schaefer400_table().is_pcc.to_numpy()
    ratio = vt["post"]["parcel_vt"] / vt["pre"]["parcel_vt"]
    assert params["effects"]["pcc_vt_pct"] == 12.0
    np.testing.assert_allclose(ratio[pcc], 1.12)
    np.testing.assert_allclose(ratio[~pcc], 1.0)
    assert vt["post"]["wm"] == vt["pre"]["wm"]


def _ode_tac(inp, K1, k2, vb, starts, durs):
    """Independent 1TCM: integrate dC/dt = K1 Cp - k2 C numerically, then average per frame."""
    cp, cb = simulate.input_functions(inp)
    t_end = (starts[-1] + durs[-1]) / 60
    sol = integrate.solve_ivp(lambda t, c: K1 * cp(np.array([t]))[0] - k2 * c, (0, t_end), [0.0],
                              method="LSODA", rtol=1e-11, atol=1e-12, dense_output=True,
                              max_step=0.05)
    out = []
    for s0, d in zip(starts / 60, durs / 60):
        pts = [inp["delay_min"]] if s0 < inp["delay_min"] < s0 + d else None
        ct = integrate.quad(lambda t: sol.sol(t)[0], s0, s0 + d, points=pts, limit=200)[0]
        bl = integrate.quad(lambda t: cb(np.array([t]))[0], s0, s0 + d, points=pts, limit=200)[0]
        out.append(((1 - vb) * ct + vb * bl) / d)
    return np.array(out)


def test_noise_free_pet_tac_equals_1tcm_convolution_of_stored_input(small_study):
    truth = small_study / "truth" / "sub-02"
    inp = json.loads((truth / "sub-02_ses-post_input-function.json").read_text())
    reg = pd.read_csv(truth / "sub-02_ses-post_pet-regions.tsv", sep="\t").set_index("region")
    tacs = pd.read_csv(truth / "sub-02_ses-post_pet-tacs.tsv", sep="\t")
    starts = tacs.frame_start.to_numpy(float)
    durs = (tacs.frame_end - tacs.frame_start).to_numpy(float)
    for roi in ("PCC", "centrum_semiovale"):
        r = reg.loc[roi]
        expected = _ode_tac(inp, r.K1, r.k2, r.vB, starts, durs)
        np.testing.assert_allclose(tacs[roi].to_numpy(), expected, rtol=1e-5, atol=1e-7)


def test_closed_form_convolution_matches_quadrature():
    inp = {"feng": [400.0, 8.0, 2.5, -4.0, -0.25, -0.015], "delay_min": 0.3,
           "parent_fraction_hill": [0.15, 1.8, 12.0], "blood_plasma_ratio": 0.9}
    cp, _ = simulate.input_functions(inp)
    conv = cp.convolve_exp(0.3, 0.0125)
    for t in (0.5, 3.0, 45.0, 90.0):
        direct = integrate.quad(lambda s: cp(np.array([s]))[0] * 0.3 * np.exp(-0.0125 * (t - s)),
                                0, t, points=[0.3], limit=400)[0]
        assert conv(np.array([t]))[0] == pytest.approx(direct, rel=1e-8)


def test_simulated_sidecars_pass_the_bids_checks(small_study):
    study = bids.collect_study(small_study / "bids", ["01", "02"], ["pre", "post"])
    assert len(study) == 4
    inv = bids.inventory(study)
    assert set(inv.pet_frames) == {31} and set(inv.bold_volumes) == {30}
    assert set(inv.blood_recordings) == {"autosampler,manual"}


def test_written_files_are_the_ones_the_path_builders_name(small_study):
    """The workflow declares the simulator's outputs from the same builders it writes with."""
    bids_dir, truth_dir = small_study / "bids", small_study / "truth"
    written = {p for p in small_study.rglob("*") if p.is_file()}
    named = {bids_dir / "README"} | set(simulate.dataset_paths(bids_dir, truth_dir).values())
    for sub in ("01", "02"):
        named |= {Path(p) for p in simulate.subject_outputs(bids_dir, truth_dir, sub, params=SMALL)}
    assert written == named


def test_true_t1w_to_mni_is_the_recorded_geometry(small_study):
    """t1w_to_mni (what tests use) and the geometry the simulator records agree."""
    for sub in ("01", "02"):
        for ses in ("pre", "post"):
            geo = json.loads(simulate.truth_paths(small_study / "truth", sub, ses)["geometry"]
                             .read_text())
            np.testing.assert_allclose(simulate.t1w_to_mni(sub, ses), geo["t1w_to_mni"],
                                       atol=1e-11)


def test_maps_on_a_grid_sample_the_source_maps():
    """On the template's own 1 mm grid, with no transform, the sampled maps are the maps."""
    maps = simulate.mni_maps(1.0)
    ijk = (slice(80, 100), slice(100, 120), slice(70, 90))
    aff = maps["affine"].copy()
    aff[:3, 3] += aff[:3, :3] @ [80, 100, 70]
    got = simulate.mni_maps_on_grid(aff, (20, 20, 20), voxel_mm=1.0, keys=("gm", "labels"))
    np.testing.assert_allclose(got["gm"], maps["gm"][ijk], atol=1e-6)
    np.testing.assert_array_equal(got["labels"], maps["labels"][ijk])


def test_realistic_motion_and_tsnr(small_study):
    import nibabel as nib

    mot = pd.read_csv(small_study / "truth/sub-01/sub-01_ses-pre_task-rest_motion.tsv", sep="\t")
    assert mot.non_steady_state.sum() == 2
    assert np.all(mot.iloc[0, 1:] == 0)
    # the default-size trajectory has mean FD 0.1-0.2 mm with spikes over 0.5 mm
    fds = [simulate.fd_power(simulate.motion_trajectory(150, np.random.default_rng(i)))
           for i in range(20)]
    assert 0.08 < np.mean([f.mean() for f in fds]) < 0.22
    assert np.mean([(f > 0.5).sum() for f in fds]) >= 1
    bold = nib.load(small_study / "bids/sub-01/ses-pre/func/sub-01_ses-pre_task-rest_bold.nii.gz")
    assert bold.shape[-1] == 30 and bold.header.get_zooms()[3] == pytest.approx(2.0)


def test_participants_and_truth_table(small_study):
    part = pd.read_csv(small_study / "bids/participants.tsv", sep="\t")
    assert list(part.participant_id) == ["sub-01", "sub-02"]
    truth = pd.read_csv(small_study / "truth/truth.tsv", sep="\t")
    assert set(truth.session) == {"pre", "post"}
    vt = truth[(truth.measure == "VT") & (truth.region == "centrum_semiovale")]
    assert len(vt) == 4 and vt.value.between(2, 10).all()


def test_unknown_simulation_parameter_is_rejected():
    with pytest.raises(KeyError, match="bold.n_volume"):
        simulate.merge_params({"bold": {"n_volume": 10}})


def test_command_line_entry_point(tmp_path):
    simulate.main([str(tmp_path / "cli"), "--participants", "1", "--volumes", "12",
                   "--bold-voxel", "8", "--pet-voxel", "8"])
    assert (tmp_path / "cli/bids/sub-01/ses-post/pet/sub-01_ses-post_trc-UCBJ_pet.nii.gz").exists()
    assert (tmp_path / "cli/truth/effects.json").exists()


def test_control_arm_has_the_same_noise_and_no_effect():
    """A parallel design's control participant (null_study) draws the same noise: the planted
    participant's follow-up differs from it by the planted change."""
    planted = simulate.merge_params({})
    control = simulate.merge_params({"null_study": True})
    a, b = simulate.subject_network_fc(planted, "03"), simulate.subject_network_fc(control, "03")
    assert np.allclose(a["pre"], b["pre"], atol=1e-12)
    dz = np.arctanh(a["post"]) - np.arctanh(b["post"])
    # up to the projection onto valid covariances (eigenvalues floored), which moves Fisher z
    # by under 0.015 here
    assert np.allclose(dz, simulate.planted_effect_z(planted["effects"]), atol=0.015)
    va, vb = simulate.pet_region_truth(planted, "03"), simulate.pet_region_truth(control, "03")
    pcc = simulate.schaefer400_table()["is_pcc"].to_numpy()
    ratio = va["post"]["parcel_vt"] / vb["post"]["parcel_vt"]
    assert np.allclose(ratio[pcc], 1 + planted["effects"]["pcc_vt_pct"] / 100, rtol=1e-12)
    assert np.allclose(ratio[~pcc], 1.0, rtol=1e-12)


def test_participant_warp_is_smooth_invertible_and_recorded(small_study):
    """The nonlinear anatomy: RMS displacement over the brain as set, a Jacobian far from
    folding, an inverse that round-trips, the identity at zero, and the truth files hold it."""
    params = simulate.merge_params(SMALL)
    warp = simulate.subject_warp(params, "01")
    maps = simulate.mni_maps(4.0)
    brain = simulate.sample_world(maps["brain"], maps["affine"],
                                  simulate.world_coords(warp.affine, warp.field.shape[1:])) > 0.5
    rms = np.sqrt(np.mean(np.sum(warp.field.reshape(3, -1)[:, brain] ** 2, axis=0)))
    assert rms == pytest.approx(params["anat"]["warp_mm"], rel=1e-9)
    grad = np.stack([np.stack(np.gradient(c, 4.0)) for c in warp.field])  # du_i / dx_j
    jac = np.linalg.det(np.eye(3) + np.moveaxis(grad, (0, 1), (-2, -1)))
    assert jac.min() > 0.5
    y = np.random.default_rng(0).uniform(-70, 70, (3, 500))
    np.testing.assert_allclose(warp.inverse(warp(y)), y, atol=1e-3)
    assert warp.size != 1.0 and abs(np.log(warp.size)) < 5 * params["anat"]["size_sd"]
    # the template point of y is size * y displaced by the field at that point
    z = warp.size * y
    shift = warp(y) - z
    assert np.sqrt(np.mean(np.sum(shift**2, axis=0))) > 0.5
    flat = simulate.subject_warp(simulate.merge_params(
        {"anat": {"warp_mm": 0.0, "size_sd": 0.0}}), "01")
    np.testing.assert_array_equal(flat(y), y)
    for ses in ("pre", "post"):
        rec = simulate.Warp.from_truth(simulate.truth_paths(small_study / "truth", "01", ses))
        assert rec.size == pytest.approx(warp.size, rel=1e-12)
        np.testing.assert_allclose(rec(y), warp(y), atol=1e-4)


def test_simulated_t1w_is_the_warped_template(small_study):
    """The T1w is the template seen through the recorded geometry and warp (up to its bias
    field and noise); the recorded matrix without the warp fits it less well."""
    import nibabel as nib

    bp = simulate.bids_paths(small_study / "bids", "01", "pre")
    tp = simulate.truth_paths(small_study / "truth", "01", "pre")
    t1 = nib.load(bp["t1w"])
    geo = json.loads(tp["geometry"].read_text())
    warp = simulate.Warp.from_truth(tp)
    data = t1.get_fdata()

    def contrast(w):
        grid = simulate.mni_maps_on_grid(t1.affine, t1.shape, np.asarray(geo["t1w_to_mni"]),
                                         keys=("t1",), warp=w)["t1"]
        return np.corrcoef(grid.ravel(), data.ravel())[0, 1]

    warped, affine = contrast(warp), contrast(None)
    assert warped > 0.99 and warped > affine + 0.01  # measured 0.995 and 0.968

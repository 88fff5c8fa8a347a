"""The HTML report: content, embedded figures, provenance, and rendering in headless Chromium."""

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import yaml

from prepost.io import write_json, write_tsv
from prepost.pet import stage as pet_stage
from prepost.report import build_report
from prepost.report import provenance as prov
from prepost.stats import group, hypotheses as hyp, power

from runner import ROOT, small_config, snakemake
from test_stats_group import participants, study_table
from test_stats_hypotheses import KETAMINE

CONFIG = {"sessions": {"baseline": "pre", "followup": "post"}, "bids_dir": "",
          "modalities": {"fmri": True, "pet": True},
          "connectivity": {"atlases": ["Schaefer100"]},
          "stats": {"alpha": 0.05, "p_value": "p_perm", "hypothesis_adjustment": "holm",
                    "hypotheses": KETAMINE,
                    "qc": {"rules": [{"measure": "mean_fd", "op": ">", "value": 0.5,
                                      "exclude": "fmri"}], "exclude_flagged": True},
                    "paired": {"corrections": ["fdr_bh", "holm"], "family": ["modality",
                                                                             "measure"]},
                    "mixed": {"formula": "value ~ session + age"},
                    "nbs": {"thresh": 3.0},
                    "multimodal": {"pairs": [{"x": {"measure": "VT_1tcm", "region": "PCC"},
                                              "y": {"measure": "alff", "region": "Default"}}]}}}


def _relmats(n, rng):
    from prepost.connectivity.atlas import load_atlas

    atlas = load_atlas("Schaefer100")
    names, nets = atlas.table["name"].tolist(), atlas.parcel_networks
    base = np.arctanh(np.where(nets[:, None] == nets[None, :], 0.5, 0.15))
    dm = nets == "Default"
    pre, post = [], []
    for _ in range(n):
        subj = 0.05 * rng.standard_normal(base.shape)
        mats = []
        for eff in (0.0, -0.15):
            z = base + subj + 0.08 * rng.standard_normal(base.shape)
            z[np.ix_(dm, dm)] += eff
            z = (z + z.T) / 2
            r = np.tanh(z)
            np.fill_diagonal(r, 1.0)
            mats.append(r)
        pre.append(mats[0]), post.append(mats[1])
    return names, np.array(pre), np.array(post)


@pytest.fixture(scope="module")
def stage_outputs(tmp_path_factory):
    """Statistics-stage outputs of an 11-participant study with planted effects."""
    d = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    table = study_table(n=11, seed=1)
    table.loc[(table.participant_id == "sub-04") & (table.session == "post")
              & (table.measure == "mean_fd"), "value"] = 0.8
    grad = [(s, ses, "fmri", "gradient1_position", net, v + rng.normal(0, 0.1))
            for s in table.participant_id.unique() for ses in ("pre", "post")
            for net, v in (("Vis", -1.0), ("SomMot", -0.6), ("Default", 1.0))]
    table = pd.concat([table, pd.DataFrame(grad, columns=group.TIDY_COLUMNS)],
                      ignore_index=True)
    tidy = d / "tidy.tsv"
    write_tsv(table, tidy)
    parts = d / "participants.tsv"
    write_tsv(participants(11).assign(sex=["F", "M"] * 5 + ["F"]), parts)
    gt, exc = group.build_group_table([tidy], parts, rules=CONFIG["stats"]["qc"]["rules"])
    paired = group.paired_statistics(gt, n_boot=200)
    files = {"group_table": d / "group_table.tsv", "exclusions": d / "exclusions.tsv",
             "paired": d / "paired.tsv", "mixed": d / "mixed.tsv",
             "multimodal": d / "multimodal.tsv", "hypotheses": d / "hypotheses.tsv"}
    write_tsv(gt, files["group_table"])
    write_tsv(exc, files["exclusions"])
    write_tsv(paired, files["paired"])
    write_tsv(group.mixed_models(gt, ["fc_within"], "value ~ session + age"), files["mixed"])
    write_tsv(group.multimodal_correlations(gt, CONFIG["stats"]["multimodal"]["pairs"],
                                            n_perm=500), files["multimodal"])
    write_tsv(hyp.evaluate_hypotheses(hyp.validate_hypotheses(KETAMINE), gt, paired,
                                      n_perm=500), files["hypotheses"])
    curves, n_table, _ = power.plan(
        hyp.validate_hypotheses(KETAMINE), gt, {"designs": ["prepost", "parallel"],
                                                "n": [10, 20, 40], "target": 0.8,
                                                "simulations": 200, "n_perm": 200,
                                                "sampling": "normal", "seed": 0},
        alpha=0.05, p_value="p_perm", max_exact=16)
    files.update(power=d / "power.tsv", power_n=d / "power_n.tsv")
    write_tsv(curves, files["power"])
    write_tsv(n_table, files["power_n"])
    names, pre, post = _relmats(11, rng)
    summary, edges, t = group.nbs_matrices(pre, post, names, thresh=3.0)
    nbs = {"summary": d / "nbs.json", "edges": d / "edges.tsv", "t": d / "t.tsv",
           "mean_baseline": d / "mpre.tsv", "mean_followup": d / "mpost.tsv"}
    summary.update(left_out=[])
    write_json(summary, nbs["summary"])
    write_tsv(edges, nbs["edges"])
    write_tsv(t, nbs["t"], index=True)
    for k, Z in (("mean_baseline", pre), ("mean_followup", post)):
        write_tsv(pd.DataFrame(np.tanh(np.arctanh(np.clip(Z, -0.999, 0.999)).mean(0)),
                               index=names, columns=names), nbs[k], index=True)
    tacs = {}
    t_mid = np.array([30, 90, 300, 900, 1800, 3600, 5100], float)
    for s in ("sub-01", "sub-02"):
        for ses in ("pre", "post"):
            p = d / f"{s}_{ses}_tacs.tsv"
            write_tsv(pd.DataFrame({"frame_start": t_mid - 30, "frame_end": t_mid + 30,
                                    "PCC": 20 * (1 - np.exp(-t_mid / 600)),
                                    "centrum_semiovale": 5 * (1 - np.exp(-t_mid / 900))}), p)
            tacs[(s, ses)] = p
    return {"dir": d, "files": files, "nbs": {"Schaefer100": nbs}, "tacs": tacs,
            "participants": parts, "inputs": [tidy, parts]}


@pytest.fixture(scope="module")
def report(stage_outputs):
    out = stage_outputs["dir"] / "report" / "report.html"
    problems = build_report(
        out, **stage_outputs["files"], participants=stage_outputs["participants"],
        config=CONFIG, nbs=stage_outputs["nbs"], tacs=stage_outputs["tacs"],
        input_files=stage_outputs["inputs"], title="Ketamine study",
        fmri_measures=["fc_within", "fc_between", "gradient1_range"],
        pet_measures=["VT_1tcm"], tac_regions=["PCC", "centrum_semiovale"],
        versions={"prepost": "0.1.0", "numpy": np.__version__})
    return out, problems


def _images(text):
    return re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', text)


def test_report_is_self_contained_with_decodable_figures(report):
    out, problems = report
    assert problems == []
    text = out.read_text()
    imgs = _images(text)
    alts = [a for a, _ in imgs]
    assert len(imgs) == text.count("<img")
    for need in ("mean framewise displacement per participant", "FC matrices Schaefer100",
                 "glass brain Schaefer100", "paired plot fc_within", "gradient positions",
                 "TACs", "paired plot VT_1tcm", "scatter VT_1tcm(PCC) ~ alff(Default)",
                 "power curves"):
        assert need in alts
    for alt, data in imgs:
        im = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        im.load()
        assert im.format == "PNG" and im.width > 200 and im.height > 150, alt
        assert np.asarray(im.convert("L")).std() > 5, f"{alt} is blank"
    # nothing is fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert (out.stat().st_mode & 0o044) == 0o044


def test_report_content(report, stage_outputs):
    text = report[0].read_text()
    for section in ("Cohort and quality control", "Exclusions", "Hypotheses",
                    "Functional connectivity: Schaefer100", "Network-Based Statistic",
                    "Glass brain", "PET time-activity curves", "Statistics",
                    "Mixed models (session term)", "Multimodal: correlations of changes",
                    "Power planning", "Methods", "Provenance"):
        assert f">{section}<" in text
    # power planning: the n each planned hypothesis needs, per design, as the table says
    ntab = pd.read_csv(stage_outputs["files"]["power_n"], sep="\t")
    planned = ntab[ntab["design"].notna()]
    assert len(planned) >= 4 and set(planned["design"]) == {"prepost", "parallel"}
    for r in planned.itertuples():
        assert f'<td class="l">{r.name}</td><td class="l">{r.design}</td>' in text
    # the QC exclusion and its reason
    assert "QC mean_fd (global) = 0.8, rule mean_fd &gt; 0.5" in text
    h = pd.read_csv(stage_outputs["files"]["hypotheses"], sep="\t")
    assert (h.verdict == "supported").sum() >= 2
    for r in h.itertuples():
        assert f'<tr class="{r.verdict.replace(" ", "-")}"><td class="l">{r.name}</td>' in text
    # methods from the config, with versions and references
    assert "Holm adjustment across them at alpha = 0.05" in text
    assert "prepost 0.1.0" in text and "Zalesky A" in text and "value ~ session + age" in text
    # provenance: config hash and input checksums
    assert prov.config_hash(CONFIG) in text
    for f in stage_outputs["inputs"]:
        assert hashlib.sha256(f.read_bytes()).hexdigest() in text


def test_config_hash_is_canonical():
    a = {"b": 1, "a": {"y": [1, 2], "x": "é"}}
    b = {"a": {"x": "é", "y": [1, 2]}, "b": 1}
    assert prov.config_hash(a) == prov.config_hash(b)
    assert prov.config_hash(a) != prov.config_hash({**a, "b": 2})
    assert prov.config_hash(a) == hashlib.sha256(
        json.dumps(a, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_failed_figure_is_reported_not_fatal(stage_outputs, tmp_path):
    bad = dict(stage_outputs["nbs"]["Schaefer100"])
    t = pd.read_csv(bad["t"], sep="\t", index_col=0)
    t.index = [f"x{i}" for i in range(len(t))]
    t.columns = t.index
    for k in ("mean_baseline", "mean_followup"):
        p = tmp_path / f"{k}.tsv"
        m = pd.read_csv(bad[k], sep="\t", index_col=0)
        m.index = m.columns = t.index
        m.to_csv(p, sep="\t")
        bad[k] = p
    out = tmp_path / "r.html"
    problems = build_report(out, **stage_outputs["files"], config=CONFIG,
                            nbs={"Schaefer100": bad}, versions={"prepost": "0"})
    assert len(problems) == 1 and "glass brain" in problems[0]
    text = out.read_text()
    assert "could not be drawn" in text and "Problems while drawing" in text


def test_self_check_section_on_simulated_data(stage_outputs, tmp_path):
    """With the simulator's truth (here the study's own noise-free-of-estimation values), the
    report scores each hypothesis: planted, realised, coverage and expected verdicts."""
    from prepost import validate

    names = {"fc_within": "fc_within_z", "fc_between": "fc_between_z", "VT_1tcm": "VT"}
    truth = study_table(n=11, seed=1)
    truth = truth[truth["measure"].isin(list(names))].assign(
        measure=lambda d: d["measure"].map(names))
    write_tsv(truth, tmp_path / "truth.tsv")
    effects = {"within_default_dz": -0.10, "sommot_default_dz": 0.10, "global_dz": 0.0,
               "pcc_vt_pct": 10.0, "global_vt_pct": 0.0}
    write_json({"effects": effects}, tmp_path / "effects.json")
    out = tmp_path / "r.html"
    problems = build_report(out, **stage_outputs["files"], config=CONFIG,
                            versions={"prepost": "0"}, truth=tmp_path / "truth.tsv",
                            effects=tmp_path / "effects.json")
    assert problems == []
    text = out.read_text()
    assert ">Self-check against the simulated truth<" in text
    assert "self-check" in [a for a, _ in _images(text)]
    files = stage_outputs["files"]
    chk = validate.self_check(pd.read_csv(files["hypotheses"], sep="\t"),
                              pd.read_csv(files["group_table"], sep="\t"), truth, effects)
    # the estimates are the truth itself: every realised change is its hypothesis' estimate
    paired = chk[chk["realised"].notna()]
    assert len(paired) == 4
    assert np.allclose(paired["realised"], paired["estimate"], atol=1e-9)
    assert paired["covered"].all()
    judged = chk[chk["agrees"].notna()]
    assert f"<b>{int(chk['covered'].dropna().astype(bool).sum())} of " \
        f"{chk['covered'].notna().sum()}</b>intervals hold the truth" in text
    assert f"<b>{int(judged['agrees'].astype(bool).sum())} of {len(judged)}</b>verdicts as " \
        "planted" in text
    assert "Accuracy per session and of the change" in text
    assert '>error_sd_pct</th>' in text  # the estimate's share of VT test-retest variability
    # each planted paired change with the power a study of this n and spread has to find it
    assert '>power_adjusted</th>' in text
    assert paired.loc[paired["direction"] != "none", "power"].between(0, 1).all()
    # the correlation's planted 0 is scored against its interval
    c = chk[chk["test"] == "correlation"].iloc[0]
    assert c["planted"] == 0.0 and c["covered"] == bool(c["ci_low"] <= 0 <= c["ci_high"])


def test_no_self_check_without_truth(report):
    assert "Self-check" not in report[0].read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
           "--v=0", f"--screenshot={shot}", "--window-size=1280,4000",
           report[0].resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    log = res.stderr
    for bad in ("Uncaught", "Failed to load resource", "net::ERR_", "Not allowed to load"):
        assert bad not in log, log[-2000:]
    im = Image.open(shot)
    assert im.size == (1280, 4000)
    a = np.asarray(im.convert("L"), float)
    # the page is drawn: text and figures throughout, not a blank or error page
    rows_with_ink = (a < 200).any(axis=1).mean()
    assert rows_with_ink > 0.3 and a.std() > 20


def dry_run_job(dry_run_output, rule):
    """``{field: [values]}`` (input, output, wildcards ...) of the first job of ``rule`` in a dry
    run's job listing."""
    lines = dry_run_output.splitlines()
    job = {}
    for line in lines[lines.index(f"rule {rule}:") + 1:]:
        if not line.startswith("    ") or ":" not in line:
            break
        key, value = line.strip().split(":", 1)
        job[key] = value.strip().split(", ")
    return job


def test_report_takes_tacs_and_fits_from_the_pet_rules(tmp_path):
    # the report's TACs and model fits are the PET rules' own files; with bids.tracer null the
    # simulated study's tracer (its data carry trc-UCBJ) is in every name
    bids = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["bids"]
    cfg = small_config(tmp_path, bids={**bids, "tracer": None})
    res = snakemake("-n", "--cores", "1", "--configfile", str(cfg), cwd=tmp_path)
    inputs = set(dry_run_job(res.stdout, "report_html")["input"])
    for sub in ("01", "02"):
        for ses in ("pre", "post"):
            out = pet_stage.output_paths(tmp_path / "results", sub=sub, ses=ses, trc="UCBJ")
            assert {out["tacs"], out["fits"]} <= inputs

"""Connectivity stage: the step named by the rule's ``params.step``: the session's QC over its
runs (session_qc); parcel time series of its runs combined, FC matrices and per-session tables of
one atlas (session); voxel ALFF maps (alff_maps); group tangent FC (tangent) and gradients
(gradients)."""

import pandas as pd

from prepost import io, logs
from prepost.connectivity import stage

log = logs.setup(snakemake.log[0])
inp, out, p = snakemake.input, snakemake.output, snakemake.params


def read_ts(path):
    return pd.read_csv(path, sep="\t", na_values="n/a")


def run_session_qc():
    qc = stage.session_qc([stage.read_qc(f) for f in inp.qc], keys=list(p.run_keys))
    io.write_json(qc, out.qc)
    used = [r["key"] for r in qc["runs"] if r["used"]]
    log.info("%d run(s), used: %s; retained %.0f s%s", len(qc["runs"]), ", ".join(used),
             qc["retained_s"] or 0.0, f"; EXCLUDED: {qc['reason']}" if qc["excluded"] else "")


def run_session():
    # the time series as written (6 significant digits) feed the FC and the tables, so a rerun of
    # any part gives the same numbers
    qcs = [stage.read_qc(f) for f in inp.run_qc]
    sqc = stage.session_qc(qcs)
    atlas = stage.load_atlas_spec(p.atlas)
    parts = []
    for bold, mask, qc, run in zip(inp.bold, inp.mask, qcs, sqc["runs"]):
        if run["used"]:
            qc = {**qc, "excluded": sqc["excluded"]}
            parts.append(stage.parcel_timeseries(bold, mask, atlas, qc, p.min_coverage))
    ts, cov = stage.combine_timeseries(parts)
    log.info("%s: %d volumes of %d run(s) x %d parcels, %d below coverage %.2f%s", atlas.name,
             len(ts), len(parts), ts.shape[1], int((~cov["kept"]).sum()), p.min_coverage,
             f" (excluded: {sqc['reason']})" if sqc["excluded"] else "")
    io.write_tsv(ts, out.timeseries, float_format="%.6g")
    io.write_tsv(cov, out.coverage, float_format="%.4f")
    ts, qc = read_ts(out.timeseries), stage.read_qc(inp.qc)

    for meas, path in zip(p.fc_kinds, out.relmats, strict=True):
        mat = stage.session_fc(ts, qc, meas, p.estimator, combine=p.combine_runs)
        io.write_tsv(stage.relmat_frame(mat, list(ts.columns)), path, float_format="%.6f")

    tables = stage.session_measures(p.participant_id, snakemake.wildcards.session, ts, atlas, qc,
                                    hierarchy=dict(p.hierarchy), densities=list(p.densities),
                                    regions=dict(p.regions), band=list(p.band),
                                    combine=p.combine_runs)
    for name, df in tables.items():
        io.write_tsv(df, out[name], float_format="%.6g")
    log.info("FC %s; %d tidy rows%s", ", ".join(p.fc_kinds), len(tables["long"]),
             f", all NaN (excluded: {qc['reason']})" if qc["excluded"] else "")


def run_alff_maps():
    qcs = [stage.read_qc(f) for f in inp.qc]
    alff, falff = stage.session_alff_maps(list(inp.bold), list(inp.mask), qcs, band=list(p.band))
    io.write_nifti(alff, out.alff)
    io.write_nifti(falff, out.falff)


def run_tangent():
    qcs = [stage.read_qc(f) for f in inp.qc]
    series = [read_ts(f) for f in inp.timeseries]
    mats, mean = stage.tangent_fc(series, [q["excluded"] for q in qcs], p.estimator)
    names = list(series[0].columns)
    for mat, path in zip(mats, out.relmats):
        io.write_tsv(stage.relmat_frame(mat, names), path, float_format="%.6f")
    io.write_tsv(stage.relmat_frame(mean, names), out.groupmean, float_format="%.6g")


def run_gradients():
    qcs = [stage.read_qc(f) for f in inp.qc]
    atlas = stage.load_atlas_spec(p.atlas)
    ref, aligned, parts = stage.group_gradients(
        [read_ts(f) for f in inp.timeseries], [q["excluded"] for q in qcs], atlas,
        [tuple(i) for i in p.ids], n_components=p.n_components, sparsity=p.sparsity,
        kernel=p.kernel, regions=dict(p.regions))
    long = pd.concat([stage.finish_tidy(d, q, atlas.name, with_qc=False)
                      for d, q in zip(parts, qcs)], ignore_index=True)
    io.write_tsv(ref, out.reference, float_format="%.6g")
    io.write_tsv(aligned, out.aligned, float_format="%.6g")
    io.write_tsv(long, out.long, float_format="%.6g")
    log.info("gradients of %d runs aligned to the group reference", len(parts))


STEPS = {"session_qc": run_session_qc, "session": run_session, "alff_maps": run_alff_maps,
         "tangent": run_tangent, "gradients": run_gradients}
if p.step not in STEPS:
    raise ValueError(f"unknown step {p.step!r}; known steps: {', '.join(STEPS)}")
STEPS[p.step]()

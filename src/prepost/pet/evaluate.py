"""Score the PET stage's regional VT against the simulator's truth.

``python -m prepost.pet.evaluate <results_dir> [<truth_dir>]`` prints, per session and ROI, the
true VT, the workflow's 1TCM VT (its own input function) and the 1TCM VT refitted with the true
input function, for the uncorrected and the GTM-corrected TACs, then the median absolute errors.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from prepost import simulate as psim
from prepost.pet import kinetics
from prepost.pet.stage import output_paths

__all__ = ["vt_errors", "main"]

_ROIS = ("PCC", "cortical_gm", "centrum_semiovale")


def vt_errors(results_dir, truth_dir=None, rois=_ROIS):
    """One row per session, TAC table (pvc none/gtm) and ROI: true VT, workflow VT, VT with the
    true input, and their errors (%)."""
    results = Path(results_dir)
    truth = Path(truth_dir) if truth_dir else results / "simulated" / "truth"
    rows = []
    for kt in sorted(results.glob("sub-*/ses-*/pet/*_desc-kinetics_table.tsv")):
        sub, ses, trc = re.match(r"sub-([A-Za-z0-9]+)_ses-([A-Za-z0-9]+)_(?:trc-([A-Za-z0-9]+)_)?",
                                 kt.name).groups()
        names = output_paths(results, sub=sub, ses=ses, trc=trc)
        kin = pd.read_csv(kt, sep="\t")
        reg = pd.read_csv(truth / f"sub-{sub}" / f"sub-{sub}_ses-{ses}_pet-regions.tsv",
                          sep="\t").set_index("region")
        inp = json.loads((truth / f"sub-{sub}" / f"sub-{sub}_ses-{ses}_input-function.json").read_text())
        cp, cb = psim.input_functions(inp)
        for pvc, path in (("none", names["tacs"]), ("gtm", names["pvc"])):
            if not Path(path).exists():
                continue
            tacs = pd.read_csv(path, sep="\t")
            frame_start_s = tacs.frame_start.to_numpy(float)
            frame_duration_s = tacs.frame_end.to_numpy(float) - frame_start_s
            tt = np.arange(0.0, tacs.frame_end.iloc[-1] + 1.0)
            for roi in rois:
                wf = kin[(kin.pvc == pvc) & (kin.roi == roi) & (kin.model == "1tcm") & (kin.parameter == "VT")]
                fit = kinetics.one_tcm(tt, cp(tt / 60), cb(tt / 60), frame_start_s,
                                       frame_duration_s, tacs[roi].to_numpy(float))
                rows.append({"participant_id": f"sub-{sub}", "session": ses, "pvc": pvc, "roi": roi,
                             "vt_true": reg.VT[roi],
                             "vt_workflow": float(wf.estimate.iloc[0]) if len(wf) else np.nan,
                             "vt_true_input": fit.estimates["VT"]})
    out = pd.DataFrame(rows)
    if len(out):
        out["error_pct"] = 100 * (out.vt_workflow / out.vt_true - 1)
        out["error_true_input_pct"] = 100 * (out.vt_true_input / out.vt_true - 1)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    df = vt_errors(argv[0], argv[1] if len(argv) > 1 else None)
    if df.empty:
        print(f"no PET kinetics with a simulated truth under {argv[0]} (expected a results folder "
              "of a simulated study: simulated/truth and sub-*/ses-*/pet/*_desc-kinetics_table.tsv)",
              file=sys.stderr)
        return 1
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(df.round(2).to_string(index=False))
        print("\nmedian absolute error (%):")
        print(df.groupby(["pvc", "roi"])[["error_pct", "error_true_input_pct"]]
              .agg(lambda x: np.median(np.abs(x))).round(1).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())

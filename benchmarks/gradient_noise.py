"""How noise left in a session's parcel signals attenuates the principal gradient's planted
flattening: its range and its variance, on noise-free simulated runs and with noise added.

Each simulated participant's two sessions at the default protocol are drawn as the simulator
draws their parcel signals (network signals, hierarchy signal at the session's loading, unique
parcel signal; no image), then band-limited noise independent across parcels is added at a
fraction of each parcel's SD. The gradients are the workflow's (`simulate.gradient_truth`: the
connectivity stage's embedding and alignment). Printed per noise level and measure: the mean
baseline value, the mean change, its SD over participants and dz = mean / SD (what the paired
test's power depends on).

    python benchmarks/gradient_noise.py [--participants 40] [--noise 0 0.5 1]
"""

import argparse

import numpy as np
import pandas as pd

from prepost import simulate as sm
from prepost.connectivity.fc import fisher_z


def session_signals(params, participant, fc, planted, seed=7):
    """One session's noise-free parcel signals (volumes after the non-steady state, parcels)."""
    b = params["bold"]
    T, t_r = int(b["n_volumes"]), float(b["t_r"])
    table = sm.schaefer400_table()
    ses = "post" if planted else "pre"
    rng = sm.random_stream(seed, participant, ses)
    s = sm.network_signals(fc, T, t_r, rng)
    unique = sm._unit_band(rng, (T, len(table)), t_r)
    c = sm.hierarchy_signal(s, t_r, sm.random_stream(seed, participant, ses, "hierarchy"))
    x = sm.parcel_series(fc, table.network, sm.hierarchy_positions(params),
                         sm.hierarchy_loading(params, planted), s, c, unique)
    return x[int(b["dummy_volumes"]):]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=40)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.5, 1.0],
                    help="noise SD as a fraction of each parcel signal's SD")
    args = ap.parse_args(argv)
    params = sm.merge_params(None)
    t_r = float(params["bold"]["t_r"])
    nets = sm.schaefer400_table().network.astype(str).to_numpy()
    fcs, ids = {sd: [] for sd in args.noise}, []
    for i in range(args.participants):
        pid = f"{i + 1:02d}"
        fc = sm.subject_network_fc(params, pid, ("pre", "post"), None)
        for ses in ("pre", "post"):
            x = session_signals(params, pid, fc[ses], ses == "post")
            e = sm._unit_band(sm.random_stream(8, pid, ses), x.shape, t_r)
            e *= x.std(axis=0) / e.std(axis=0)
            for sd in args.noise:
                fcs[sd].append(fisher_z(np.corrcoef((x + sd * e).T)))
            ids.append((pid, ses))
    rows = []
    for sd in args.noise:
        g = sm.gradient_truth(fcs[sd], ids, nets)
        g = g[g.measure.isin(["gradient1_range", "gradient1_variance"])]
        g = g.pivot_table(index=["measure", "participant_id"], columns="session", values="value")
        d = (g["post"] - g["pre"]).groupby(level="measure")
        for m, pre in g["pre"].groupby(level="measure").mean().items():
            change, sd_change = d.mean()[m], d.std()[m]
            rows.append({"noise": sd, "measure": m, "baseline": pre, "change": change,
                         "change_pct": 100 * change / pre, "sd_change": sd_change,
                         "dz": change / sd_change})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()

"""Network FC of the simulated study recovered through the whole chain: bias and accuracy.

Scores every session's ``desc-network_fc.tsv`` under a finished run's results folder against the
simulator's truth (``results/simulated/truth``) with :func:`prepost.validate.fc_recovery`:

    python benchmarks/fc_recovery.py results            # after `snakemake --cores 2`
    python benchmarks/fc_recovery.py results --sessions # also one line per session

Goals (default simulated protocol): |mean change bias| <= 0.01 z, per-participant change vs truth
r >= 0.8 (pooled over network pairs), per-session r >= 0.9.
"""

import argparse
from pathlib import Path

from prepost.validate import fc_recovery, find_estimates


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--truth", type=Path, help="truth folder (default: RESULTS/simulated/truth)")
    ap.add_argument("--atlas", default="Schaefer400")
    ap.add_argument("--res", default="3", help="res- label of the denoised BOLD")
    ap.add_argument("--sessions", action="store_true", help="print every session's figures")
    args = ap.parse_args()
    est = find_estimates(args.results, atlas=args.atlas, res=args.res)
    if not est:
        raise SystemExit(f"{args.results}: no desc-network_fc.tsv of atlas-{args.atlas} found")
    sessions, s = fc_recovery(est, args.truth or args.results / "simulated" / "truth")
    if args.sessions:
        print(sessions.to_string(index=False, float_format="%.4f"))
    print(f"participants {s['n_participants']}; session bias pre {s['bias_pre']:+.4f} "
          f"post {s['bias_post']:+.4f} z; per-session r mean {s['session_r_mean']:.3f} "
          f"min {s['session_r_min']:.3f} (goal >= 0.9)")
    print(f"change bias {s['change_bias_mean']:+.4f} z (SD {s['change_bias_sd']:.4f}, "
          f"t {s['change_bias_t']:+.2f}; goal |bias| <= 0.01); per-participant change r "
          f"{s['change_r']:.3f} (goal >= 0.8); SD of changes {s['change_sd_estimate']:.3f} "
          f"estimated, {s['change_sd_truth']:.3f} true")


if __name__ == "__main__":
    main()

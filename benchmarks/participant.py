"""One participant at real size: per-rule wall time and peak memory, and the total wall time.

Sizes: T1w 1 mm, BOLD 2.4 mm x 300 volumes, PET 2 mm (the default protocol's 31 frames), two
sessions. The study is simulated once into --sim-dir (reused by later runs; simulation is not
timed), then the workflow runs on it as a BIDS dataset with `python -m snakemake --cores 2` and the
workflow profile. Per-rule figures come from the benchmark files (s = wall seconds, max_rss = peak
resident memory).

    python benchmarks/participant.py                    # the whole workflow (target: all)
    python benchmarks/participant.py --sim-dir /tmp/pp  # reuse a simulated study
    python benchmarks/participant.py -- --scheduler greedy   # extra snakemake arguments
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_SIZE = {"anat": {"voxel_mm": 1.0}, "bold": {"voxel_mm": 2.4, "n_volumes": 300},
             "pet": {"voxel_mm": 2.0}}


def simulate(sim_dir):
    """Simulate the real-size participant into `sim_dir` unless it is there already."""
    sim_dir = Path(sim_dir)
    done = sim_dir / ".complete"
    if not done.exists():
        from prepost.simulate import simulate_study

        t0 = time.perf_counter()
        simulate_study(sim_dir, participants=1, params=REAL_SIZE)
        done.write_text("")
        print(f"simulated into {sim_dir} in {time.perf_counter() - t0:.0f} s (not counted)")
    return sim_dir


def rule_figures(results):
    """{rule: [(job, wall s, max_rss MB), ...]} from the benchmark files under results."""
    out = defaultdict(list)
    for tsv in sorted(Path(results, "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(Path(results, "benchmarks"))
        with open(tsv) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                rss = row.get("max_rss")
                out[str(rel.parent)].append((rel.stem, float(row["s"]),
                                             float(rss) if rss not in (None, "", "NA") else None))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim-dir", default=os.path.join(tempfile.gettempdir(),
                                                      "prepost-participant-sim"))
    ap.add_argument("--work-dir", default=None, help="run folder (default: a new temporary one)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--target", action="append", default=[], help="snakemake target (default all)")
    ap.add_argument("extra", nargs="*", help="extra snakemake arguments (after --)")
    args = ap.parse_args(argv)
    print(f"cores (os.cpu_count()): {os.cpu_count()}; snakemake --cores {args.cores}", flush=True)
    sim = simulate(args.sim_dir)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="prepost-participant-"))
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores",
           str(args.cores), "--config", f"bids_dir={sim / 'bids'}",
           f"participants={sim / 'bids' / 'participants.tsv'}", f"results_dir={work / 'results'}",
           *args.extra, *args.target]
    t0 = time.perf_counter()
    with open(work / "snakemake.out", "w") as log:
        rc = subprocess.run(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        print((work / "snakemake.out").read_text()[-4000:])
        raise SystemExit(f"snakemake failed (exit {rc}); see {work / 'snakemake.out'}")
    figs = rule_figures(work / "results")
    print(f"\n{'benchmark folder':32s} {'jobs':>4s} {'wall s (sum)':>12s} {'max wall s':>10s}"
          f" {'peak MB':>8s}")
    for rule, jobs in sorted(figs.items(), key=lambda kv: -sum(j[1] for j in kv[1])):
        rss = [j[2] for j in jobs if j[2] is not None]
        print(f"{rule:32s} {len(jobs):4d} {sum(j[1] for j in jobs):12.1f}"
              f" {max(j[1] for j in jobs):10.1f} {max(rss) if rss else float('nan'):8.0f}")
        for name, s, mb in sorted(jobs, key=lambda j: -j[1]):
            print(f"    {name:60s} {s:7.1f} s {mb if mb is not None else float('nan'):7.0f} MB")
    peak = max((j[2] for jobs in figs.values() for j in jobs if j[2] is not None), default=None)
    print(f"\ntotal wall (simulation excluded): {wall:.0f} s = {wall / 60:.1f} min (goal <= 4 min);"
          f" sum of rule walls {sum(j[1] for jobs in figs.values() for j in jobs):.0f} s;"
          f" peak memory of a job {peak or float('nan'):.0f} MB (goal <= 4096)")
    print(f"run folder: {work}")


if __name__ == "__main__":
    main()

"""The demo end to end: wall time, CPU-seconds in rules and CPU of Snakemake's own process.

Runs the workflow (default config: the simulated study of config/participants.tsv) in a fresh
temporary folder with `python -m snakemake --cores 2` and the workflow profile, and reports

- wall time of the whole run (simulation included, as a user sees it);
- CPU-seconds in rules: the sum of the per-rule benchmark files' cpu_time, and the CPU of every
  process Snakemake started (its reaped children, from psutil);
- CPU-seconds of Snakemake's own main process (not its children), sampled with psutil until it
  exits, and as a percentage of one core over the wall time.

    python benchmarks/demo.py                              # the demo, 11 participants
    python benchmarks/demo.py --participants 2             # a smaller study (first 2 rows)
    python benchmarks/demo.py --participants 2 --repeats 3 \\
        --variant ilp="--scheduler ilp" --variant greedy="--scheduler greedy"

Variants run interleaved (ABAB...) so that the machine's load hits each alike; the summary gives
medians and each variant's ratio to the first.
"""

import argparse
import csv
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def rule_cpu(results):
    """Sum of cpu_time and the count of the per-rule benchmark files under results/benchmarks."""
    total, n = 0.0, 0
    for tsv in Path(results, "benchmarks").rglob("*.tsv"):
        with open(tsv) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                try:
                    total += float(row.get("cpu_time") or 0)
                except ValueError:
                    pass
                n += 1
    return total, n


def run_once(workdir, extra, participants=None, targets=(), cores=2, quiet=True):
    """Run the workflow once in `workdir`; return the figures of the run."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
           "--cores", str(cores), *extra, *targets]
    if participants:
        rows = (ROOT / "config" / "participants.tsv").read_text().splitlines()
        tsv = workdir / "participants.tsv"
        tsv.write_text("\n".join(rows[: participants + 1]) + "\n")
        cmd += ["--config", f"participants={tsv}"]
    log = open(workdir / "snakemake.out", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    ps = psutil.Process(proc.pid)
    own = children = 0.0
    # the main process's own CPU (user + system), sampled until it exits; its reaped children's
    # CPU comes with the same sample (children_user/children_system)
    while proc.poll() is None:
        try:
            t = ps.cpu_times()
            own = t.user + t.system
            children = t.children_user + t.children_system
        except psutil.Error:
            break
        time.sleep(0.2)
    rc = proc.wait()
    wall = time.perf_counter() - t0
    log.close()
    if rc != 0:
        print((workdir / "snakemake.out").read_text()[-4000:])
        raise SystemExit(f"snakemake failed (exit {rc}) in {workdir}")
    bench_cpu, n_bench = rule_cpu(workdir / "results")
    text = (workdir / "snakemake.out").read_text()
    jobs = text.count("\nrule ") + text.count("\nlocalrule ") + text.startswith("rule ")
    return {"wall": wall, "own_cpu": own, "children_cpu": children, "bench_cpu": bench_cpu,
            "bench_files": n_bench, "jobs": jobs}


def show(name, r):
    print(f"{name}: wall {r['wall']:.1f} s, jobs {r['jobs']}, CPU in rules {r['bench_cpu']:.0f} s"
          f" (benchmark files: {r['bench_files']}) / {r['children_cpu']:.0f} s (child processes),"
          f" Snakemake's own process {r['own_cpu']:.1f} CPU-s"
          f" = {100 * r['own_cpu'] / r['wall']:.1f} % of one core", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=None,
                    help="run a smaller study: the first N rows of config/participants.tsv")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                    help="extra snakemake arguments of a variant, e.g. greedy='--scheduler greedy'"
                    " (repeatable; default: one variant with no extra arguments)")
    ap.add_argument("--keep", default=None, help="keep the run folders below this folder")
    ap.add_argument("targets", nargs="*", help="snakemake targets (default: all)")
    args = ap.parse_args(argv)
    variants = [(v.split("=", 1)[0], shlex.split(v.split("=", 1)[1])) for v in args.variant]
    variants = variants or [("default", [])]
    print(f"cores (os.cpu_count()): {os.cpu_count()}; snakemake --cores {args.cores};"
          f" participants: {args.participants or 'all (config/participants.tsv)'}", flush=True)
    res = {name: [] for name, _ in variants}
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="prepost-demo-"))
    try:
        for rep in range(args.repeats):
            for name, extra in variants:
                wd = base / f"{name}-{rep}"
                r = run_once(wd, extra, args.participants, args.targets, args.cores)
                res[name].append(r)
                show(f"[{rep + 1}/{args.repeats}] {name} {' '.join(extra)}", r)
                if not args.keep:
                    subprocess.run(["rm", "-rf", str(wd)])
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(base)])
    print("\nmedians:")
    ref = None
    for name, runs in res.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        pct = statistics.median(100 * r["own_cpu"] / r["wall"] for r in runs)
        ref = ref or med
        print(f"{name}: wall {med['wall']:.1f} s ({med['wall'] / ref['wall']:.2f}x),"
              f" CPU in rules {med['bench_cpu']:.0f} s, child processes {med['children_cpu']:.0f} s,"
              f" Snakemake's own {med['own_cpu']:.1f} CPU-s ({med['own_cpu'] / ref['own_cpu']:.2f}x)"
              f" = {pct:.1f} % of one core (goal <= 10 %)")


if __name__ == "__main__":
    main()

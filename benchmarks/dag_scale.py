"""Dry-run DAG build time for a large study: 1,000 participants x 2 sessions (goal <= 30 s).

The BIDS tree holds empty images with real sidecars, and `bids.check_images: false` keeps NIfTI headers unread at DAG
time, so the figure is Snakemake's and the input layer's own cost.

    python benchmarks/dag_scale.py [--participants 1000] [--repeats 1]
"""

import argparse
import os
import resource
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _sidecars():
    """The BOLD and PET sidecars of the fake study (the simulated protocol's frames)."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    durs = [float(d) for count, d in cfg["simulate"]["pet"]["frames"] for _ in range(count)]
    starts = [float(sum(durs[:i])) for i in range(len(durs))]
    pet = {"FrameTimesStart": starts, "FrameDuration": durs, "Units": "kBq/mL",
           "TracerName": "UCB-J", "InjectedRadioactivity": 550.0,
           "InjectedRadioactivityUnits": "MBq", "ImageDecayCorrected": True,
           "ImageDecayCorrectionTime": 0, "TimeZero": "10:00:00", "ScanStart": 0,
           "InjectionStart": 0}
    return json.dumps({"TaskName": "rest", "RepetitionTime": 2.0}), json.dumps(pet)


def fake_study(root, n, sessions=("pre", "post")):
    """A BIDS tree of `n` participants: empty images, real sidecars (read at DAG time)."""
    bold_json, pet_json = _sidecars()
    bids = root / "bids"
    (bids).mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "fake", "BIDSVersion": "1.9.0"}')
    rows = ["participant_id\tage\tfollowup_days"]
    for i in range(1, n + 1):
        sub = f"{i:04d}"
        rows.append(f"sub-{sub}\t{20 + i % 30}\t{1 if i % 3 else 7}")
        for ses in sessions:
            base = bids / f"sub-{sub}" / f"ses-{ses}"
            stem = f"sub-{sub}_ses-{ses}"
            for rel in (f"anat/{stem}_T1w.nii.gz", f"func/{stem}_task-rest_bold.nii.gz",
                        f"func/{stem}_task-rest_bold.json", f"pet/{stem}_trc-UCBJ_pet.nii.gz",
                        f"pet/{stem}_trc-UCBJ_pet.json"):
                (base / rel).parent.mkdir(parents=True, exist_ok=True)
                if rel.endswith("_bold.json"):
                    (base / rel).write_text(bold_json)
                elif rel.endswith("_pet.json"):
                    (base / rel).write_text(pet_json)
                else:
                    (base / rel).touch()
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    cfg = {"bids_dir": str(bids), "participants": str(root / "participants.tsv"),
           "results_dir": str(root / "results"), "bids": {"check_images": False}}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root / "config.yaml"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = fake_study(Path(tmp), args.participants)
        times, cpus = [], []
        for _ in range(args.repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                                  "-n", "--quiet", "rules", "--cores", "2", "--configfile",
                                  str(cfg)], cwd=tmp, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            if res.returncode != 0:
                print(res.stdout[-2000:], res.stderr[-4000:])
                sys.exit(1)
        jobs = res.stdout.strip().splitlines()
        print(f"cores (os.cpu_count()): {os.cpu_count()}")
        print(f"participants: {args.participants} x 2 sessions")
        print(f"dry-run DAG build: median {statistics.median(times):.1f} s over {len(times)} run(s)"
              f" (goal <= 30 s); CPU {statistics.median(cpus):.1f} s (near the idle wall time when"
              " the machine is loaded)")
        print("jobs per rule:\n" + "\n".join(jobs[-40:]))


if __name__ == "__main__":
    main()

"""One simulated participant (both sessions): the template source maps shared by every voxel size
against computed anew for each size, as before.

Each run is a fresh process (the maps are cached per process, as in a Snakemake job), the two
variants interleaved so that the machine's load hits both alike. Sizes: the default protocol
(2 mm T1w, 3 mm BOLD and PET, 300 volumes) or the tests' coarse one (``--small``: 4 mm T1w, 6 mm
BOLD and PET, 60 volumes).

    python benchmarks/simulate.py [--small] [--repeats 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

# Run in the child: the variant "per-size" recomputes the unfiltered sources for every voxel
# size the participant needs (the behaviour before they were shared).
CHILD = """
import sys, yaml
from prepost import simulate
if sys.argv[2] == "per-size":
    maps = simulate.mni_maps.__wrapped__
    def per_size(voxel_mm, _seen={}):
        if voxel_mm not in _seen:
            simulate._mni_sources.cache_clear()
            _seen[voxel_mm] = maps(voxel_mm)
        return _seen[voxel_mm]
    simulate.mni_maps = per_size
sim = simulate.merge_params(yaml.safe_load(sys.argv[3]))
simulate.simulate_subject(sys.argv[1] + "/bids", sys.argv[1] + "/truth", "01", ("pre", "post"),
                          sim, planted=["post"])
"""

SMALL = ('{"anat": {"voxel_mm": 4.0}, "bold": {"n_volumes": 60, "voxel_mm": 6.0}, '
         '"pet": {"voxel_mm": 6.0}}')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="the tests' coarse sizes")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    over = SMALL if args.small else "{}"
    times = {"shared": [], "per-size": []}
    for _ in range(args.repeats):
        for variant in times:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", CHILD, tmp, variant, over], check=True)
                times[variant].append(time.perf_counter() - t0)
    print(f"cores (os.cpu_count()): {os.cpu_count()}; sizes: {'small' if args.small else 'default'}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:9s} median {med[k]:.1f} s  ({', '.join(f'{x:.1f}' for x in v)})")
    print(f"shared / per-size: {med['shared'] / med['per-size']:.2f}x")


if __name__ == "__main__":
    main()

"""Benchmark: per-volume reads of a gzipped 4D BOLD, file-backed proxy vs the in-memory image of
``prepost.image.load_img``.

Slicing a volume out of a nibabel proxy of a ``.nii.gz`` decompresses the stream from its start,
so reading every volume in turn (as the one-shot resampling does) costs time quadratic in the
number of volumes. ``load_img`` checks the image and keeps the voxels in memory, once.

    python benchmarks/image_io.py [--volumes 150] [--repeats 3]

The run is a random int16 series on the demo's BOLD grid (55 x 68 x 56, 3 mm).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from prepost.image import load_img


def _read_all(img):
    return sum(float(np.asarray(img.dataobj[..., t]).sum()) for t in range(img.shape[3]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 2000, size=(55, 68, 56, args.volumes)).astype(np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bold.nii.gz"
        nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0])).to_filename(path)
        proxy_t, memory_t = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = _read_all(nib.load(path))
            proxy_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = _read_all(load_img(path, ndim=4))  # load and check included
            memory_t.append(time.perf_counter() - t0)
            assert a == b
    p, m = statistics.median(proxy_t), statistics.median(memory_t)
    print(f"{args.volumes} volumes, every volume read once (median of {args.repeats}):")
    print(f"  file-backed proxy:              {p:7.2f} s")
    print(f"  load_img (in memory, checked): {m:7.2f} s")
    print(f"  ratio: {p / m:.1f}x")


if __name__ == "__main__":
    main()

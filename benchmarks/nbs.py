"""Speed and agreement of :func:`prepost.stats.nbs.nbs_paired` against bctpy's ``nbs_bct``.

Simulates paired connectivity matrices (default 200 nodes, 11 subjects) with an increase planted
in a subnetwork, then

1. runs ``bct.nbs_bct(post, pre, thresh, k, tail, paired=True, seed)`` and ``nbs_paired`` with
   the same sign patterns (:func:`prepost.stats.nbs.bct_sign_flips`) and checks that the
   components, null distributions and p-values are identical;
2. times both: bctpy's seconds per permutation over ``k`` permutations (its run time divided
   by ``k + 1``, the observed statistic costing about one permutation), and ``nbs_paired``'s
   (median over repeats) over all ``2**n`` sign patterns (the exact test used in practice) and
   over the same ``k`` patterns as bctpy.

Usage::

    python benchmarks/nbs.py [--nodes 200] [--subjects 11] [--bct-perms 20] [--repeats 5]

Requires bctpy (``pip install bctpy``). Exits with status 1 when the p-values differ.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

import numpy as np

from prepost.stats.nbs import bct_sign_flips, nbs_paired


def simulate(n_subjects=11, n_nodes=200, n_effect=12, effect=1.2, seed=0):
    """Pre/post Fisher-z-like matrices with an increase on the edges among ``n_effect`` nodes."""
    rng = np.random.default_rng(seed)
    pre = rng.normal(0.3, 0.3, (n_subjects, n_nodes, n_nodes))
    pre = (pre + pre.transpose(0, 2, 1)) / 2
    noise = rng.normal(0.0, 0.3, (n_subjects, n_nodes, n_nodes))
    post = pre + (noise + noise.transpose(0, 2, 1)) / 2
    eff = np.zeros((n_nodes, n_nodes))
    nodes = rng.choice(n_nodes, n_effect, replace=False)
    eff[np.ix_(nodes, nodes)] = effect * 0.3
    np.fill_diagonal(eff, 0.0)
    post = post + eff
    for x in (pre, post):
        x[:, np.arange(n_nodes), np.arange(n_nodes)] = 0.0
    return pre, post, np.sort(nodes)


def _edge_sets_bct(adj, n_comp):
    iu = np.triu_indices(adj.shape[0], 1)
    lab = adj[iu]
    return [frozenset(zip(iu[0][lab == k + 1].tolist(), iu[1][lab == k + 1].tolist()))
            for k in range(n_comp)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--subjects", type=int, default=11)
    ap.add_argument("--bct-perms", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--thresh", type=float, default=3.0)
    ap.add_argument("--tail", default="both", choices=["both", "right", "left"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--effect", type=float, default=1.2,
                    help="planted increase, in units of the noise SD of one matrix entry")
    args = ap.parse_args(argv)

    import bct

    pre, post, planted = simulate(args.subjects, args.nodes, effect=args.effect, seed=args.seed)
    n_edges = args.nodes * (args.nodes - 1) // 2
    k = args.bct_perms
    print(f"nodes={args.nodes} edges={n_edges} subjects={args.subjects} thresh={args.thresh} "
          f"tail={args.tail} planted nodes={planted.tolist()}")

    # bctpy: x - y must be post - pre; bctpy wants (nodes, nodes, subjects).
    x, y = post.transpose(1, 2, 0).copy(), pre.transpose(1, 2, 0).copy()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        p_bct, adj_bct, null_bct = bct.nbs_bct(x, y, args.thresh, k=k, tail=args.tail,
                                               paired=True, seed=args.seed)
    t_bct = time.perf_counter() - t0
    # The run also computes the observed statistic, which costs about one permutation.
    s_bct = t_bct / (k + 1)

    flips = bct_sign_flips(k, args.subjects, args.seed)
    res_same = nbs_paired(pre, post, thresh=args.thresh, tail=args.tail, flips=flips)

    # Agreement: same components, same null, same p-values.
    sets_bct = _edge_sets_bct(adj_bct, len(p_bct))
    p_by_set_bct = dict(zip(sets_bct, p_bct.tolist()))
    p_by_set_ours = {frozenset(map(tuple, e.tolist())): p
                     for e, p in zip(res_same.components, res_same.pvals.tolist())}
    same_components = set(p_by_set_bct) == set(p_by_set_ours)
    same_null = np.array_equal(np.asarray(null_bct, float), res_same.null)
    same_p = same_components and all(p_by_set_bct[s] == p_by_set_ours[s] for s in p_by_set_bct)

    # Timing of ours: exact enumeration (production setting) and bctpy's k patterns.
    times_exact, times_same = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res_exact = nbs_paired(pre, post, thresh=args.thresh, tail=args.tail)
        times_exact.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nbs_paired(pre, post, thresh=args.thresh, tail=args.tail, flips=flips)
        times_same.append(time.perf_counter() - t0)
    s_exact = float(np.median(times_exact)) / res_exact.n_perm
    s_same = float(np.median(times_same)) / k

    print(f"bctpy nbs_bct       : {k} permutations (+ observed) in {t_bct:.2f} s -> "
          f"{s_bct:.4f} s/perm")
    print(f"nbs_paired (same {k}): median {np.median(times_same):.3f} s -> {s_same:.2e} s/perm "
          f"(ratio {s_bct / s_same:.0f}x)")
    evaluated = res_exact.n_perm // 2 if args.tail == "both" else res_exact.n_perm
    print(f"nbs_paired exact    : {res_exact.n_perm} sign patterns ({evaluated} evaluated), median "
          f"{np.median(times_exact):.2f} s over {args.repeats} repeats -> {s_exact:.2e} s/perm "
          f"(ratio {s_bct / s_exact:.0f}x)")
    print(f"largest component: {res_same.sizes[:1].tolist()} edges; "
          f"bctpy p={sorted(float(v) for v in p_bct)[:3]} "
          f"ours p={sorted(res_same.pvals.tolist())[:3]}; exact p={res_exact.pvals[:1].tolist()}")
    print(f"null (largest component per permutation): bctpy max {float(np.max(null_bct)):.0f}, "
          f"mean {float(np.mean(null_bct)):.2f}; ours max {res_same.null.max():.0f}, "
          f"mean {res_same.null.mean():.2f}")
    print(f"components identical: {same_components}; null identical: {same_null}; "
          f"p-values identical: {same_p} ({len(p_bct)} components)")
    if not (same_p and same_null):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

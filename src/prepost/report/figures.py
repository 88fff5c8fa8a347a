"""Figures of the report. Each function returns a :class:`matplotlib.figure.Figure` (Agg);
:func:`to_png` turns it into PNG bytes and closes it."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ["to_png", "qc_motion", "fc_matrices", "paired_panels", "gradient_positions",
           "tac_curves", "change_scatter", "glass_brain", "parcel_centroids", "self_check"]

PRE_COLOR, POST_COLOR = "#4477AA", "#EE6677"


def to_png(fig, dpi=90):
    """PNG bytes of ``fig`` (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _grid(n, ncols=4, size=(3.0, 2.6)):
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows),
                             squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def qc_motion(table, baseline, followup, measure="mean_fd", threshold=None):
    """Per-participant QC value (e.g. mean FD) at both sessions, with the exclusion threshold."""
    sub = table[table["measure"] == measure]
    wide = sub.pivot_table(index="participant_id", columns="session", values="value",
                           aggfunc="first")
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(wide) + 2), 2.8))
    x = np.arange(len(wide))
    for k, (ses, c) in enumerate(((baseline, PRE_COLOR), (followup, POST_COLOR))):
        if ses in wide:
            ax.bar(x + (k - 0.5) * 0.38, wide[ses], width=0.38, color=c, label=ses)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"exclusion > {threshold:g}")
    ax.set_xticks(x, [s.removeprefix("sub-") for s in wide.index], rotation=90, fontsize=8)
    ax.set_ylabel(measure)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(f"{measure} per participant and session", fontsize=10)
    return fig


def _network_blocks(labels):
    """(network of each label, block boundaries) for Schaefer-like parcel names."""
    from prepost.connectivity.atlas import parse_schaefer_name

    nets = [parse_schaefer_name(n)[0] for n in labels]
    if all(n == "unknown" for n in nets):
        return None, []
    return nets, [i for i in range(1, len(nets)) if nets[i] != nets[i - 1]]


def fc_matrices(mean_pre, mean_post, t=None, baseline="pre", followup="post", title=""):
    """Group-mean Pearson r at baseline and follow-up, their difference, and the edge t map."""
    labels = [str(x) for x in mean_pre.index]
    A, B = mean_pre.to_numpy(float), mean_post.to_numpy(float)
    D = np.arctanh(np.clip(B, -0.999999, 0.999999)) - np.arctanh(np.clip(A, -0.999999,
                                                                          0.999999))
    mats = [(A, f"mean r, {baseline}", "RdBu_r", 1.0), (B, f"mean r, {followup}", "RdBu_r", 1.0),
            (D, f"change of mean z ({followup} - {baseline})", "PuOr_r",
             float(np.nanpercentile(np.abs(D[~np.eye(len(D), dtype=bool)]), 99)) or 0.1)]
    if t is not None:
        T = t.to_numpy(float)
        mats.append((T, "paired t of the change", "PuOr_r",
                     max(3.0, float(np.nanmax(np.abs(T))) if np.isfinite(T).any() else 3.0)))
    nets, bounds = _network_blocks(labels)
    fig, axes = plt.subplots(1, len(mats), figsize=(4.4 * len(mats), 4.0),
                             gridspec_kw={"wspace": 0.25})
    for k, (ax, (M, name, cmap, v)) in enumerate(zip(axes, mats)):
        M = M.copy()
        np.fill_diagonal(M, np.nan)
        im = ax.imshow(M, cmap=cmap, vmin=-v, vmax=v, interpolation="nearest")
        for b in bounds:
            ax.axhline(b - 0.5, color="k", lw=0.4)
            ax.axvline(b - 0.5, color="k", lw=0.4)
        if nets and k == 0:
            starts = [0, *bounds]
            ends = [*bounds, len(nets)]
            ax.set_yticks([(s + e - 1) / 2 for s, e in zip(starts, ends)],
                          [nets[s] for s in starts], fontsize=7)
            ax.set_xticks([])
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def paired_panels(table, measure, baseline, followup, max_panels=12, stats=None):
    """Spaghetti plots: one line per participant from baseline to follow-up, per region.

    ``stats`` (the paired table) adds the mean change and p to each panel title.
    """
    sub = table[table["measure"] == measure]
    regions = list(dict.fromkeys(sub["region"].astype(str)))[:max_panels]
    fig, axes = _grid(len(regions))
    for ax, region in zip(axes, regions):
        g = sub[sub["region"].astype(str) == region]
        wide = g.pivot_table(index="participant_id", columns="session", values="value",
                             aggfunc="first")
        if baseline not in wide or followup not in wide:
            ax.set_title(f"{region}: one session only", fontsize=8)
            continue
        for _, r in wide.iterrows():
            ax.plot([0, 1], [r[baseline], r[followup]], color="0.6", lw=0.8, marker="o", ms=3)
        pairs = wide[[baseline, followup]].dropna()
        if len(pairs):  # the mean of complete pairs, as tested
            ax.plot([0, 1], [pairs[baseline].mean(), pairs[followup].mean()], color="k",
                    lw=2.2, marker="s", ms=5)
        ax.set_xticks([0, 1], [baseline, followup])
        ax.set_xlim(-0.3, 1.3)
        title = region
        if stats is not None:
            s = stats[(stats["measure"] == measure) & (stats["region"].astype(str) == region)]
            if len(s):
                s = s.iloc[0]
                title += (f"\nΔ = {s['mean_diff']:.3g}, p_perm = {s['p_perm']:.3g}"
                          if np.isfinite(s["p_perm"]) else f"\n{int(s['n'])} complete pair(s)")
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(measure, fontsize=10)
    fig.tight_layout()
    return fig


def gradient_positions(table, baseline, followup, measure="gradient1_position"):
    """Mean (and SE) position of each network on the principal gradient, both sessions."""
    sub = table[table["measure"] == measure]
    agg = sub.groupby(["region", "session"])["value"].agg(["mean", "sem"]).reset_index()
    order = (agg[agg.session == baseline].sort_values("mean")["region"].tolist()
             or sorted(agg.region.unique()))
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(order) + 1.2))
    y = np.arange(len(order))
    for k, (ses, c) in enumerate(((baseline, PRE_COLOR), (followup, POST_COLOR))):
        a = agg[agg.session == ses].set_index("region").reindex(order)
        ax.errorbar(a["mean"], y + (k - 0.5) * 0.2, xerr=a["sem"], fmt="o", color=c, label=ses,
                    ms=5, capsize=2)
    ax.set_yticks(y, order, fontsize=8)
    ax.set_xlabel("principal gradient position (mean ± SE)")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Networks along the principal gradient", fontsize=10)
    return fig


def tac_curves(tacs, regions, baseline, followup, fits=None):
    """Group-mean time-activity curves per region and session (model fits dashed).

    Parameters
    ----------
    tacs : dict
        ``{(participant, session): DataFrame}`` with ``frame_start``, ``frame_end`` (s) and
        one column per region.
    fits : dict or None
        Same layout: model-predicted curves.
    """
    regions = [r for r in regions if any(r in t.columns for t in tacs.values())]
    if not regions:  # none of the configured regions: the first few of the tables
        first = next(iter(tacs.values()))
        regions = [c for c in first.columns if c not in ("frame_start", "frame_end")][:6]
    fig, axes = _grid(max(1, len(regions)), ncols=3, size=(3.6, 2.8))
    for ax, region in zip(axes, regions):
        for ses, c in ((baseline, PRE_COLOR), (followup, POST_COLOR)):
            for src, ls, lab in ((tacs, "-", ses), (fits or {}, "--", f"{ses} fit")):
                curves = [(t["frame_start"] + t["frame_end"]) / 2 / 60.0 for (s, e), t in
                          src.items() if e == ses and region in t.columns]
                vals = [t[region].to_numpy(float) for (s, e), t in src.items()
                        if e == ses and region in t.columns]
                if not vals or len({len(v) for v in vals}) != 1:
                    continue
                ax.plot(curves[0], np.nanmean(vals, axis=0), ls, color=c, lw=1.4,
                        marker="o" if ls == "-" else None, ms=2.5, label=f"{lab} (n={len(vals)})")
        ax.set_title(region, fontsize=9)
        ax.set_xlabel("time (min)", fontsize=8)
        ax.set_ylabel("activity", fontsize=8)
        ax.legend(fontsize=6, frameon=False)
        ax.tick_params(labelsize=7)
    fig.suptitle("Group-mean time-activity curves", fontsize=10)
    fig.tight_layout()
    return fig


def change_scatter(dx, dy, xlabel, ylabel, r=None, p=None, method="spearman"):
    """Scatter of two per-participant changes with a least-squares line."""
    dx, dy = np.asarray(dx, float), np.asarray(dy, float)
    ok = np.isfinite(dx) & np.isfinite(dy)
    fig, ax = plt.subplots(figsize=(3.8, 3.3))
    ax.scatter(dx[ok], dy[ok], color="k", s=22)
    if ok.sum() >= 3 and np.ptp(dx[ok]) > 0:
        b, a = np.polyfit(dx[ok], dy[ok], 1)
        xs = np.linspace(dx[ok].min(), dx[ok].max(), 2)
        ax.plot(xs, a + b * xs, color=POST_COLOR)
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.set_xlabel(f"Δ {xlabel}", fontsize=8)
    ax.set_ylabel(f"Δ {ylabel}", fontsize=8)
    if r is not None and np.isfinite(r):
        ax.set_title(f"{method} r = {r:.2f}, p_perm = {p:.3g} (n = {int(ok.sum())})", fontsize=8)
    ax.tick_params(labelsize=7)
    return fig


def parcel_centroids(atlas_name, labels):
    """MNI centroids (n, 3) of the parcels named ``labels`` in a built-in atlas, or None."""
    from prepost.connectivity.atlas import load_atlas

    atlas = load_atlas(atlas_name)
    names = atlas.table["name"].astype(str).tolist()
    if atlas.coords is not None:
        coords = np.asarray(atlas.coords, float)
    else:
        data = np.asarray(atlas.labels_img.dataobj).astype(np.int64)
        idx = atlas.table["index"].to_numpy(np.int64)
        ijk = np.argwhere(data > 0)
        lab = data[tuple(ijk.T)]
        counts = np.bincount(lab, minlength=idx.max() + 1).astype(float)
        sums = np.stack([np.bincount(lab, weights=ijk[:, k], minlength=idx.max() + 1)
                         for k in range(3)], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            vox = sums[idx] / counts[idx, None]
        coords = vox @ atlas.labels_img.affine[:3, :3].T + atlas.labels_img.affine[:3, 3]
    pos = {n: i for i, n in enumerate(names)}
    if all(str(lab) in pos for lab in labels):
        return coords[[pos[str(lab)] for lab in labels]]
    if len(labels) == len(names):
        return coords
    return None


def glass_brain(coords, node_values, edges=None, title="", max_edges=150):
    """Glass brain: parcels coloured by their change, and supra-threshold NBS edges.

    Parameters
    ----------
    coords : array of shape (n, 3)
        MNI centroids.
    node_values : array of shape (n,)
        Parcel-level change (NaN parcels are left out).
    edges : array of shape (n, n) or None
        Signed edge values to draw (0 elsewhere), e.g. t of the NBS components.
    max_edges : int
        Only the ``max_edges`` edges of largest absolute value are drawn.
    """
    from nilearn import plotting

    ok = np.isfinite(node_values)
    v = float(np.nanmax(np.abs(node_values))) if ok.any() else 1.0
    n_rows = 2 if edges is not None and np.any(edges) else 1
    fig = plt.figure(figsize=(10, 3.2 * n_rows))
    ax1 = fig.add_axes([0, 1 - 1 / n_rows, 1, 1 / n_rows])
    plotting.plot_markers(node_values[ok], coords[ok], node_cmap="RdBu_r", node_vmin=-v,
                          node_vmax=v, node_size=18, display_mode="lzry", axes=ax1, figure=fig,
                          title=title or None, colorbar=True)
    if n_rows == 2:
        ax2 = fig.add_axes([0, 0, 1, 0.5])
        E = np.where(np.isfinite(edges), edges, 0.0)
        iu = np.triu_indices_from(E, 1)
        vals = np.abs(E[iu])
        n_drawn = int(np.count_nonzero(vals))
        if n_drawn > max_edges:
            cut = np.sort(vals)[-max_edges]
            E = np.where(np.abs(E) >= cut, E, 0.0)
            n_drawn = max_edges
        plotting.plot_connectome(E, coords, node_size=4, node_color="0.4", edge_cmap="PuOr_r",
                                 display_mode="lzry", axes=ax2, figure=fig,
                                 title=f"NBS component edges, paired t ({n_drawn} strongest "
                                       "shown)", colorbar=True,
                                 edge_vmin=-np.abs(E).max(), edge_vmax=np.abs(E).max())
    return fig


def self_check(check):
    """One panel per hypothesis with a truth: the estimate and its interval against the planted
    and the realised change (``prepost.validate.self_check``'s table)."""
    rows = check[np.isfinite(check["planted"].astype(float))
                 | np.isfinite(check["realised"].astype(float))].reset_index(drop=True)
    if rows.empty:
        raise ValueError("no hypothesis has a planted or realised truth")
    fig, axes = _grid(len(rows), ncols=3, size=(3.6, 1.5))
    for ax, r in zip(axes, rows.itertuples()):
        ok = np.isfinite([r.ci_low, r.ci_high]).all()
        color = "#228833" if r.covered else "#CC3311"
        if ok:
            ax.plot([r.ci_low, r.ci_high], [0, 0], color=color, lw=3, solid_capstyle="butt",
                    label="interval")
        if np.isfinite(r.estimate):
            ax.plot(r.estimate, 0, "o", color=color, label="estimate")
        if np.isfinite(r.realised):
            ax.plot(r.realised, 0, "x", color="k", ms=9, mew=2, label="realised truth")
        if np.isfinite(r.planted):
            ax.axvline(r.planted, color="k", ls=":", lw=1.2, label="planted")
        ax.axvline(0, color="#999", lw=0.8)
        ax.set_yticks([])
        ax.set_ylim(-1, 1)
        ax.set_title(str(r.name), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(5))  # small ranges (a gradient's) crowd the labels
    axes[0].legend(fontsize=6, frameon=False, loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


def power_curves(curves, target=0.8):
    """One panel per hypothesis: Monte Carlo power against n per design, with the Wilson
    interval as a band and the target power as a line (``prepost.stats.power``'s curves)."""
    names = list(dict.fromkeys(curves["name"]))
    if not names:
        raise ValueError("no hypothesis was planned")
    colors = {"prepost": "#0077BB", "parallel": "#EE7733", "crossover": "#009988"}
    labels = {"prepost": "pre/post (n participants)", "parallel": "parallel (n per arm)",
              "crossover": "crossover (n participants)"}
    fig, axes = _grid(len(names), ncols=3, size=(3.6, 2.6))
    for ax, name in zip(axes, names):
        g = curves[curves["name"] == name]
        for design, d in g.groupby("design", sort=False):
            d = d.sort_values("n")
            c = colors.get(design, "#555555")
            ax.fill_between(d["n"], d["power_low"], d["power_high"], color=c, alpha=0.25, lw=0)
            ax.plot(d["n"], d["power"], "o-", color=c, ms=3, lw=1.4,
                    label=labels.get(design, design))
        ax.axhline(target, color="k", ls=":", lw=1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("n", fontsize=7)
        ax.set_ylabel("power", fontsize=7)
        ax.set_title(str(name), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, frameon=False, loc="lower right")
    fig.tight_layout()
    return fig

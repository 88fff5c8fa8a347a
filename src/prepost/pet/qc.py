"""QC figures of the PET stage: frame-motion trace, coregistration overlay, TACs with model fits."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_motion", "plot_coregistration", "plot_tac_fits"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_motion(params, path, title=""):
    """Per-frame translations (mm), rotations (degrees) and FD against frame mid-time (min)."""
    plt = _plt()
    mid = (params["frame_start"] + 0.5 * params["frame_duration"]).to_numpy() / 60.0
    fig, ax = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    for c in ("trans_x", "trans_y", "trans_z"):
        ax[0].plot(mid, params[c], marker=".", label=c)
    for c in ("rot_x", "rot_y", "rot_z"):
        ax[1].plot(mid, np.degrees(params[c]), marker=".", label=c)
    ax[2].plot(mid, params["fd_mm"], marker=".", color="k")
    if "corrected" in params:
        first = params.loc[params["corrected"] == 1, "frame_start"]
        if len(first):
            for a in ax:
                a.axvline(first.iloc[0] / 60.0, color="grey", ls=":", lw=1)
    ax[0].set_ylabel("translation (mm)")
    ax[1].set_ylabel("rotation (deg)")
    ax[2].set_ylabel("FD (mm)")
    ax[2].set_xlabel("frame mid-time (min)")
    ax[0].legend(fontsize=7, ncol=3)
    ax[1].legend(fontsize=7, ncol=3)
    ax[0].set_title(title or "PET frame motion")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_coregistration(t1w_img, pet_in_t1w_img, path, title=""):
    """Three orthogonal T1w slices with the PET (in T1w space) as a colour overlay and contour."""
    plt = _plt()
    t1 = np.asarray(t1w_img.dataobj, dtype=np.float32)
    pet = np.asarray(pet_in_t1w_img.dataobj, dtype=np.float32)
    c = [int(np.argmax(pet.sum(axis=tuple(j for j in range(3) if j != i)))) for i in range(3)]
    c = [s // 2 if not 0 < ci < s - 1 else ci for ci, s in zip(c, t1.shape)]
    thr = np.percentile(pet[pet > 0], 70) if np.any(pet > 0) else 0
    fig, ax = plt.subplots(1, 3, figsize=(10, 3.6))
    for i, a in enumerate(ax):
        sl = [slice(None)] * 3
        sl[i] = c[i]
        a.imshow(np.rot90(t1[tuple(sl)]), cmap="gray")
        p = np.rot90(pet[tuple(sl)])
        a.imshow(np.ma.masked_less(p, thr), cmap="hot", alpha=0.45)
        if np.any(p > thr):
            a.contour(p, levels=[thr], colors="c", linewidths=0.6)
        a.set_axis_off()
    fig.suptitle(title or "PET on T1w")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_tac_fits(tacs, fits, path, regions=None, title=""):
    """Measured TACs (points) and model curves (lines) against frame mid-time (min).

    ``fits``: dict model -> DataFrame laid out like ``tacs``.
    """
    plt = _plt()
    cols = [c for c in tacs.columns if c not in ("frame_start", "frame_end")]
    if regions:
        cols = [c for c in cols if c in regions] or cols
    mid = 0.5 * (tacs["frame_start"] + tacs["frame_end"]).to_numpy() / 60.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for k, roi in enumerate(cols):
        col = colors[k % len(colors)]
        ax.plot(mid, tacs[roi], "o", ms=3, color=col, label=roi)
        for m, (model, df) in enumerate(fits.items()):
            if roi in df.columns and np.any(np.isfinite(df[roi])):
                ax.plot(mid, df[roi], styles[m % len(styles)], color=col, lw=1,
                        label=f"{roi} {model}" if k == 0 or len(cols) == 1 else None)
    ax.set_xlabel("time (min)")
    ax.set_ylabel("activity concentration")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "TACs and model fits")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

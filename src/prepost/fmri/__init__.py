"""Functional MRI (BOLD) stage: preprocessing into MNI space, fMRIPrep-style confounds and
denoising, one run at a time.

Modules
-------
:mod:`prepost.fmri.stage`
    What the workflow's rules call: :func:`~prepost.fmri.stage.output_paths` (every derivative
    name of a BOLD run, from its BIDS entities), :func:`~prepost.fmri.stage.preprocess_bold`
    (built-in chain), :func:`~prepost.fmri.stage.import_fmriprep` (fMRIPrep derivatives instead),
    :func:`~prepost.fmri.stage.denoise_run` and :func:`~prepost.fmri.stage.plot_fd`.
:mod:`prepost.fmri.preproc`
    Steps around motion correction: non-steady-state volumes, slice timing, BOLD reference,
    BOLD-to-T1w coregistration, one-shot resampling to MNI.
:mod:`prepost.fmri.motion`
    BOLD realignment to a steady-state reference (on the shared engine of
    :mod:`prepost.registration`) and framewise displacement.
:mod:`prepost.fmri.confounds`
    fMRIPrep-style confounds table and sidecar (motion, FD, DVARS, tissue signals, CompCor,
    cosine basis, outlier columns).
:mod:`prepost.fmri.denoise`
    Confound strategies, censoring (scrubbing), regression and band-pass filtering.

Images are loaded through :func:`prepost.image.load_img`; the T1w, its tissues and the MNI
transforms come from :mod:`prepost.anat`.
"""

__all__ = ["confounds", "denoise", "motion", "preproc", "stage"]

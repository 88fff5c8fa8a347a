"""Dynamic PET: preprocessing, ROIs, time-activity curves, arterial input and kinetic models.

Modules, in the order the workflow's PET rules use them
-------------------------------------------------------
frames
    The frames of a dynamic PET defined once: checks (count, increasing starts, positive
    durations, no overlap, no negative time), window weights by overlap seconds and window
    means, mid-times. Every module below averages over time windows through it, so a regional
    value and the voxel map averaged over the region agree.
preproc
    Frame motion correction (PETPrep's recipe over :mod:`prepost.registration`), summed images,
    rigid PET -> T1w coregistration (ANTs, Mattes mutual information), resampling.
roi
    Declarative ROIs (atlas parcels, spheres, tissue classes, the centrum semiovale reference) on
    the T1w grid and as fractions on the PET grid.
tacs
    Regional TAC tables (BIDS-PET derivatives ``*_tacs.tsv`` + JSON) and vectorised voxel-wise
    maps (SUVR, plasma Logan VT, basis-function SRTM BPND).
pvc
    Region-based partial-volume correction (geometric transfer matrix, Rousset 1998).
blood
    BIDS-PET blood recordings, their checks and merging, parent-fraction fits, the
    metabolite-corrected arterial input and the blood-to-tissue delay.
kinetics
    Compartmental (1TCM, 2TCM), graphical (Logan, Ichise MA1), reference-tissue (SRTM, Logan
    reference) and static (SUV, SUVR) models, and :func:`~prepost.pet.kinetics.fit_models`
    returning a tidy table.
stage
    The workflow's steps as plain functions (``motion_step`` ... ``maps_step``) and
    :func:`~prepost.pet.stage.output_paths`, which names every file the stage writes from its
    BIDS entities.
qc, evaluate
    QC figures; scoring of the regional VT against the simulator's truth.

Units
-----
Times in files and in every public argument are seconds (BIDS), spelled with ``_s``: frame arrays
``frame_start_s`` / ``frame_duration_s``, windows ``window_s`` / ``suvr_window_s``, ``tstar_s``.
Models work in minutes internally, so rate constants are reported per minute, K1 in mL/cm3/min
and distribution volumes in mL/cm3. Activity concentrations are decay corrected and share one unit
(e.g. kBq/mL) between input function and TACs.
"""

__all__ = ["blood", "evaluate", "frames", "kinetics", "preproc", "pvc", "qc", "roi", "stage",
           "tacs"]

"""prepost: pre/post multimodal brain imaging (resting fMRI + dynamic PET) analysis.

The package holds the science; the Snakemake workflow under ``workflow/`` only wires it. Functions
take and return nibabel images, numpy arrays or pandas DataFrames with explicit keyword
parameters, so every step is usable from plain Python.

Layout
------
Shared foundations

paths
    :func:`~prepost.paths.derivative` builds every derivative path from BIDS entities (``sub``,
    ``ses``, ``task``, ``trc``, ``space``, ``res``, ``atlas``, ``meas``, ``desc`` ...) in one
    canonical order.
image
    The one image gate (:func:`~prepost.image.load_img`: dimensionality, NaN/inf named by file,
    voxels in memory) and the one nibabel <-> ANTs bridge.
registration
    Modality-neutral rigid registration: motion parameters, within-series realignment (BOLD
    volumes, PET frames) and ANTs rigid coregistration.
bids, simulate
    The inputs: the BIDS checks and inventory, and the simulated study with its ground truth.
errors, io, logs, provenance
    Error types that name file and field, atomic writers and readers, log set-up, software
    versions of a derivative.

Stages, in pipeline order (one module or subpackage each, named as its rule file)

anat
    T1w bias correction, normalisation to MNI, brain mask and tissue probabilities.
fmri
    BOLD preprocessing, confounds and denoising (``fmri.stage`` for the workflow).
connectivity
    Atlases, parcel time series, FC, network measures, ALFF, graphs and gradients.
pet
    Frame motion, coregistration, ROIs, TACs, blood input and kinetic models; ``pet.frames``
    holds the frame checks and window weights every PET module uses.
stats
    Group table, QC exclusions, paired tests, parallel-arm tests, mixed models, NBS,
    multimodal correlations, hypotheses and power planning (``stats.stage`` for the workflow).
report
    The self-contained HTML report.

Each stage has one path builder, ``output_paths(results, **entities)`` (in ``anat``,
``fmri.stage``, ``connectivity.stage``, ``pet.stage``, ``stats.stage``, ``report.stage`` and
``bids``; the simulator's ``bids_paths``/``truth_paths``), which calls
:func:`prepost.paths.derivative` for all of its outputs. Rules, scripts, the report and the tests
take names from these builders, so a new entity in a stage's names is a change in one place.
"""

__version__ = "0.1.0"

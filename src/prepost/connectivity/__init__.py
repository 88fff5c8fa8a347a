"""Resting-state functional connectivity: atlases, parcel time series, FC matrices, network
summaries, ALFF/fALFF, graph measures and connectivity gradients.

Modules
-------
atlas
    :func:`~prepost.connectivity.atlas.load_atlas` (Schaefer 100/200/400 from the shipped files,
    Seitzman 300 spheres, custom label images, nilearn fetchers) and the lower/higher network
    hierarchy. The shipped Schaefer files are package data (``prepost.resources``), found by
    :func:`~prepost.connectivity.atlas.schaefer_files` in editable and regular installs alike;
    every stage (PET ROIs, the simulator) reads them through it.
timeseries
    :func:`~prepost.connectivity.timeseries.extract_parcel_timeseries`: one column per atlas
    label, always in atlas order; poorly covered parcels are all-NaN columns.
fc
    Pearson, partial correlation, tangent (group fit) and the package's one Fisher z
    (:func:`~prepost.connectivity.fc.fisher_z`, diagonal NaN, 0 or kept), NaN-parcel aware.
networks
    Within/between-network FC, segregation (Chan et al. 2014), lower-higher integration, global
    FC, global-signal amplitude and the tidy per subject/session table
    (:func:`~prepost.connectivity.networks.tidy_fmri_measures`).
alff
    ALFF and fALFF per parcel or per voxel (periodogram, Lomb-Scargle when volumes are censored).
graph
    Proportional thresholding, strength, eigenvector centrality, participation coefficient,
    modularity.
gradients
    Diffusion-map FC gradients (BrainSpace defaults) and Procrustes alignment.
stage
    The workflow's connectivity stage: file names from BIDS entities
    (:func:`~prepost.connectivity.stage.output_paths`,
    :func:`~prepost.connectivity.stage.group_output_paths`), the fMRI QC record
    (:func:`~prepost.connectivity.stage.read_qc`, repetition time ``t_r``), the relationship
    matrix writer and reader (:func:`~prepost.connectivity.stage.read_relmat`) and one session's
    measures.

Conventions: parcel time series are ``(n_volumes, n_parcels)`` arrays; FC matrices are
``(n_parcels, n_parcels)`` arrays whose rows/columns of missing parcels are NaN; ``networks`` are
per-parcel network labels (the atlas table's ``network`` column).
"""

__all__ = ["alff", "atlas", "fc", "gradients", "graph", "networks", "stage", "timeseries"]

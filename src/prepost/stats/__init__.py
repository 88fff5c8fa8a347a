"""Statistics for pre/post (baseline vs follow-up) designs.

Modules
-------
group
    The group table from the stages' tidy tables (covariates joined, QC exclusions listed), paired
    tests per measure and region with corrections within families, mixed models, NBS on
    connectivity matrices and correlations of changes between modalities.
paired
    Paired tests on one measure at a time (t, Wilcoxon, exact sign-flip permutation), effect
    sizes, confidence intervals, tidy per-group tables with multiple-comparison correction
    within families, and a random-intercept mixed model.
nbs
    Paired edge-wise Network-Based Statistic with exact sign-flip enumeration for small samples.
multimodal
    Correlation of changes between modalities with exact or Monte Carlo permutation p-values.
hypotheses
    Configured hypotheses (measure, region, predicted direction) checked against the paired
    tests, with verdicts and reasons.
parallel
    Parallel-arm designs: the session x arm interaction as a two-sample test of change scores.
power
    Power planning: the power of each hypothesis for a replication (pre/post or parallel) at
    each n, by Monte Carlo with the workflow's own tests, from the study's changes.
stage
    The workflow's statistics stage: file names (:func:`~prepost.stats.stage.output_paths`,
    :func:`~prepost.stats.stage.nbs_output_paths`), the group-table reader and NBS on the
    connectivity stage's Pearson matrices (:func:`~prepost.stats.stage.nbs_stage`).

Every difference is follow-up minus baseline. Correlation matrices are Fisher-transformed with
:func:`prepost.connectivity.fc.fisher_z` and read with
:func:`prepost.connectivity.stage.read_relmat`.
"""

__all__ = ["group", "hypotheses", "multimodal", "nbs", "paired", "parallel", "power", "stage"]

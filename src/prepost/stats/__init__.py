"""Statistics for pre/post (baseline vs follow-up) designs.

Modules
-------
paired
    Paired tests on one measure at a time (t, Wilcoxon, exact sign-flip permutation), effect
    sizes, confidence intervals, tidy per-group tables with multiple-comparison correction
    within families, and a random-intercept mixed model.
nbs
    Paired edge-wise Network-Based Statistic with exact sign-flip enumeration for small samples.
multimodal
    Correlation of changes between modalities with exact or Monte Carlo permutation p-values.
"""

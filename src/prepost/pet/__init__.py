"""Dynamic PET quantification: arterial blood input and kinetic models.

Modules
-------
blood
    Reading BIDS-PET blood recordings (``_recording-<label>_blood.tsv/.json``), merging
    autosampler and manual samples, parent-fraction fits, the metabolite-corrected arterial
    input function on a fine uniform grid, and input checks (time units, coverage, TimeZero).
kinetics
    Compartmental (1TCM, 2TCM), graphical (Logan, Ichise MA1), reference-tissue (SRTM,
    Logan reference) and static (SUV, SUVR) models on regional time-activity curves, and a
    batch helper returning a tidy table.

Units
-----
Times in files and in every public argument are seconds (BIDS). Models work in minutes
internally, so rate constants are reported per minute, K1 in mL/cm3/min and distribution
volumes in mL/cm3. Activity concentrations are decay corrected and share one unit (e.g. Bq/mL)
between input function and TACs.
"""

"""prepost: pre/post multimodal brain imaging (resting fMRI + dynamic PET) analysis.

The package holds the science; the Snakemake workflow under ``workflow/`` only wires it.
Functions take and return nibabel images, numpy arrays or pandas DataFrames.
"""

__version__ = "0.1.0"

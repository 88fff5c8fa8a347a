"""Data files shipped with prepost, installed as the package ``prepost.resources``.

``atlases/schaefer_2018``: the Schaefer 2018 parcellations (see ``atlases/README.md``), read by
:func:`prepost.connectivity.atlas.schaefer_files`.
"""

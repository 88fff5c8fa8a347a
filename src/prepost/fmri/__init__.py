"""Functional MRI (BOLD) preprocessing: head-motion estimation and correction."""

"""Tensor-name mappings and quantization policies, kept as data files.

This package holds no code: one TOML table per family and format, and
``policies/`` with the named quantization policies. Find it at run time with
``vqtool.resources.mappings_dir()`` so it works from a checkout and from a
non-editable install alike.
"""

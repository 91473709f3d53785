"""Experiments: the training loop, the LSTM-versus-relational-memory comparison, trained
ablations, figures, report.

`training` is library code (silent, logs through a callback); `compare` and `ablate` are the
scripts, and `sweep` runs their jobs on any concurrent.futures executor (local processes or
a Dask cluster):

    python -m experiments.compare --help
    python -m experiments.ablate --help

This package file imports nothing heavy, so the scripts can set thread counts before NumPy
loads.
"""

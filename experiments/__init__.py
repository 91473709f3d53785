"""Experiments: the training loop, the LSTM-versus-relational-memory comparison, figures, report.

`training` is library code (silent, logs through a callback); `compare` is the main script:

    python -m experiments.compare --help

This package file imports nothing heavy, so `compare` can set thread counts before NumPy loads.
"""

"""OpenMP defaults for tracking with the torch backend: set before torch loads.

PyTorch's CPU build runs its parallel regions on GNU OpenMP (libgomp), whose worker threads spin
for ``GOMP_SPINCOUNT`` iterations (300,000 by default) after each region before they sleep. A
tracked frame is the encoder (PyTorch's threads) followed by the fused memory read (the kernel's own
threads): the spinning workers took the cores from the read. ``GOMP_SPINCOUNT=10000`` against
libgomp's 300000 (AMD EPYC, 2 cores, 240x427, shipped weights, ``mast-bench --backend torch
--threads 2 --size 240x427 --frames 40 --warmup 20``, four alternated pairs): read 38.1 / 42.6 /
43.8 / 35.3 against 49.8 / 48.2 / 50.2 / 43.3 ms a frame, 17.7 / 17.0 / 16.5 / 20.5 against
14.8 / 15.1 / 15.0 / 17.7 fps; ``OMP_WAIT_POLICY=PASSIVE`` freed the read as well but slowed the
encoder by as much.

libgomp reads the variable once, when torch is first imported: a value already in the environment
is kept, and a program that imported torch before keeps libgomp's default (set the variable
yourself: docs/USAGE.md). The tracking tools' ``main`` (``mast-run``, ``mast-serve``, ``mast-eval``,
``mast-bench``, whose modules import no torch) and :func:`mast.open_tracker` call
:func:`openmp_defaults` first.
"""
from __future__ import annotations

import os

OPENMP_DEFAULTS = {"GOMP_SPINCOUNT": "10000"}


def openmp_defaults() -> None:
    """Put :data:`OPENMP_DEFAULTS` into the environment where it has no value (before torch loads)."""
    for name, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(name, value)

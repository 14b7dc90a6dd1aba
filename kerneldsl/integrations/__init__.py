"""Kernel-language kernels inside other optimisation libraries.

Each integration is its own module with its own extra, imported explicitly so that
``import kerneldsl`` never needs the other library:

- ``kerneldsl.integrations.ax`` (``pip install -e '.[ax]' in a clone of kerneldsl``): a kernel-language kernel as
  the GP kernel of Ax's Bayesian optimisation (``ax.Client``).
- ``kerneldsl.integrations.optuna`` (``pip install -e '.[optuna]' in a clone of kerneldsl``): ``HandsOnSampler``, an
  Optuna sampler whose model-based trials are kerneldsl's tick-tock proposals with your kernels.
"""

"""Compile options shared by every backend: priors and constraints on the hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from gpytorch.constraints import Interval, Positive
from gpytorch.priors import GammaPrior, Prior

from .backends.tiling import AUTO
from .errors import KernelError, did_you_mean
from .priors import DimensionScaledLogNormal


def _default_lengthscale_prior() -> Prior:
    return GammaPrior(3.0, 6.0)


def _default_outputscale_prior() -> Prior:
    return GammaPrior(2.0, 0.15)


@dataclass
class KernelOptions:
    """Options of ``kd.compile(..., **options)``.

    Defaults follow botorch's classic Matern set-up for inputs scaled to about
    [0, 1]: Gamma(3, 6) on every lengthscale, Gamma(2, 0.15) on the output scale,
    and a Dirichlet(``weight_concentration``) on the weights of each learned sum
    (2.0: a mild pull towards equal weights; 1.0 is flat). ``None`` for a prior
    means no prior. ``lengthscale_prior`` may also be a rule that makes a prior per base
    term, ``DimensionScaledLogNormal`` (see ``lengthscale_prior_for``).

    ``tile_size`` and ``tile_threshold`` steer the ``torch`` backend (and ``auto`` where it
    runs the torch path: on the CPU without a C compiler, or below the fused kernels'
    threshold): a K with more than ``tile_threshold`` entries (n * m times batch
    elements) is evaluated in tiles of ``tile_size`` entries with memory
    ``O(n*m + terms * tile_size)``; ``tile_size=None`` never tiles. ``"auto"`` (the
    default of both) takes the defaults of the inputs' device: on the CPU tiles of
    32768 entries above about 600 x 600 (cache-sized), on a GPU tiles of 2**24 entries
    above 4096 x 4096 (memory-sized). They are read at every evaluation, so
    ``kernel.options.tile_size = ...`` changes a built kernel.

    ``fused_threshold`` steers the ``auto`` backend on the CPU: a K with at least this many entries
    runs the fused C kernels (``"auto"``: ``FUSED_CPU_THRESHOLD``, about 256 x 256; ``0``: every
    size, for a kernel that is evaluated often enough to repay its first compilation).
    """

    lengthscale_prior: Prior | DimensionScaledLogNormal | None = field(default_factory=_default_lengthscale_prior)
    outputscale_prior: Prior | None = field(default_factory=_default_outputscale_prior)
    weight_concentration: float | None = 2.0
    lengthscale_constraint: Interval = field(default_factory=Positive)
    outputscale_constraint: Interval = field(default_factory=Positive)
    tile_size: int | str | None = AUTO
    """``torch`` backend: kernel entries (pairs x batch elements) per tile; ``None``: never tile."""
    tile_threshold: int | str = AUTO
    """``torch`` backend: a K with at most this many entries is evaluated in one piece (faster there)."""
    fused_threshold: int | str = AUTO
    """``auto`` backend: a K with at least this many entries runs the fused C kernels on the CPU."""

    def lengthscale_prior_for(self, ir, term: int | None = None) -> Prior | None:
        """The lengthscale prior of one term of ``ir`` (its ``[d]`` lengthscales), or of all ``[P]`` slots."""
        if isinstance(self.lengthscale_prior, DimensionScaledLogNormal):
            return self.lengthscale_prior.prior(ir, term)
        return self.lengthscale_prior

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> "KernelOptions":
        """Build from keyword options, with a clear error for unknown ones."""
        known = {f.name for f in fields(cls)}
        for name in options:
            if name not in known:
                raise KernelError(f"unknown compile option '{name}'",
                                  hint=did_you_mean(name, known) or f"known options: {', '.join(sorted(known))}")
        opts = cls(**options)
        if opts.weight_concentration is not None and not opts.weight_concentration > 0:
            raise KernelError(f"weight_concentration must be positive, got {opts.weight_concentration!r}")
        if opts.tile_size not in (None, AUTO) and not (_is_int(opts.tile_size) and opts.tile_size > 0):
            raise KernelError(f"tile_size must be a positive integer, None or {AUTO!r}, got {opts.tile_size!r}")
        if opts.tile_threshold != AUTO and not (_is_int(opts.tile_threshold) and opts.tile_threshold >= 0):
            raise KernelError(f"tile_threshold must be a non-negative integer or {AUTO!r}, "
                              f"got {opts.tile_threshold!r}")
        if opts.fused_threshold != AUTO and not (_is_int(opts.fused_threshold) and opts.fused_threshold >= 0):
            raise KernelError(f"fused_threshold must be a non-negative integer or {AUTO!r}, "
                              f"got {opts.fused_threshold!r}")
        return opts


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

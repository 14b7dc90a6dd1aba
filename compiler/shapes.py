"""Shape arithmetic in plain Python for the per-evaluation paths."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["broadcast_shapes"]


def broadcast_shapes(*shapes: Sequence[int]) -> torch.Size:
    """``torch.broadcast_shapes(*shapes)``, computed on tuples: torch 2.13 routes that function through
    ``torch._refs`` (about 0.04 ms a call), and a kernel evaluation called it several times (profile of issue 23:
    a tenth of an acquisition evaluation). Raises ``RuntimeError`` for shapes that do not broadcast, as torch."""
    width = max((len(s) for s in shapes), default=0)
    result = [1] * width
    for shape in shapes:
        for i, size in enumerate(shape, start=width - len(shape)):
            if size != 1:
                if result[i] not in (1, size):
                    raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
                result[i] = size
    return torch.Size(result)

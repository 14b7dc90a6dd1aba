"""`kerneldsl.compiler.shapes.broadcast_shapes` is ``torch.broadcast_shapes``: same result, same error."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kerneldsl.compiler.shapes import broadcast_shapes

shapes = st.lists(st.integers(min_value=0, max_value=3), max_size=4).map(tuple)


@settings(deadline=None)
@given(st.lists(shapes, min_size=1, max_size=4))
def test_same_as_torch(many):
    try:
        expected = torch.broadcast_shapes(*many)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            broadcast_shapes(*many)
        return
    assert broadcast_shapes(*many) == expected
    assert isinstance(broadcast_shapes(*many), torch.Size)

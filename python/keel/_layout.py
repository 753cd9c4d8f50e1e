"""Shapes and strides: how a tensor of any leading shape becomes keel's rows x dim batch.

keel takes `rows` rows of `dim` features, row r starting `r * stride` elements after the first.
A tensor of shape (*lead, *normalized_shape) fits that without a copy when its trailing
normalized dims are contiguous and its leading dims step through memory evenly (one row stride
>= dim). These helpers work on shapes and strides counted in elements, so NumPy arrays and torch
tensors share them.
"""

import operator
from math import prod

from ._errors import EINVAL, KeelTypeError, KeelValueError


def normalized_tuple(normalized_shape, who):
    """normalized_shape (an int or a sequence of ints; bools are not ints here) as a tuple of ints."""
    if isinstance(normalized_shape, bool) or (isinstance(normalized_shape, (tuple, list))
                                               and any(isinstance(d, bool) for d in normalized_shape)):
        raise KeelTypeError(f"{who}: normalized_shape ({normalized_shape!r}) must be an int or a sequence of ints, "
                            "not a bool", EINVAL)
    try:
        dims = (operator.index(normalized_shape),)
    except TypeError:
        try:
            dims = tuple(operator.index(d) for d in normalized_shape)
        except TypeError:
            raise KeelTypeError(
                f"{who}: normalized_shape ({normalized_shape!r}) must be an int or a sequence of ints", EINVAL
            ) from None
    if not dims:
        raise KeelValueError(f"{who}: normalized_shape is empty (it needs at least one dimension)", EINVAL)
    if any(d < 0 for d in dims):
        raise KeelValueError(f"{who}: normalized_shape {dims} has a negative dimension", EINVAL)
    return dims


def split_shape(shape, dims, who, name="x"):
    """(lead_shape, rows, dim) of a tensor of `shape` normalized over its trailing `dims`."""
    shape = tuple(shape)
    k = len(dims)
    if len(shape) < k or shape[len(shape) - k:] != dims:
        raise KeelValueError(
            f"{who}: normalized_shape {dims} does not match the trailing dimensions of {name}.shape {shape}", EINVAL
        )
    lead = shape[: len(shape) - k]
    return lead, prod(lead), prod(dims)


def row_stride(shape, strides, k, dim):
    """The row stride (elements) of a tensor whose last k dims are normalized, or None when its
    rows are not evenly strided with contiguous trailing dims (the caller then copies)."""
    expect = 1
    for size, step in zip(reversed(shape[len(shape) - k:]), reversed(strides[len(strides) - k:])):
        if size != 1 and step != expect:
            return None
        expect *= size
    stride = None
    for size, step in zip(reversed(shape[: len(shape) - k]), reversed(strides[: len(strides) - k])):
        if size == 1:
            continue
        if stride is None:
            stride, expect = step, step * size
        elif step != expect:
            return None
        else:
            expect *= size
    if stride is None:  # at most one row
        return dim
    return stride if stride >= dim and stride > 0 else None

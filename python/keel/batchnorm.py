"""BatchNorm for NumPy, with PyTorch's conventions (docs/blocks.md): statistics per feature over
the rows of a batch, the running statistics updated in place, forward and backward.

x has its features last: shape (..., C), every leading index a row (an NCHW image batch is
x.transpose(0, 2, 3, 1): rows N*H*W of C features). All arrays are float32.

    batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, num_batches_tracked=None, return_stats=False)
        -> y, or (y, save_mean, save_rstd)
    batch_norm_backward(dy, x, mean=None, rstd=None, weight=None, eps=1e-5, training=True,
                        need_dx=True, need_dweight=True, need_dbias=True) -> (dx, dweight, dbias)

training=True normalizes by the batch's mean and biased variance and, when running_mean and
running_var are given (float32 arrays of shape (C,), updated in place: dense and writeable),
updates them as torch.nn.BatchNorm does: running = (1 - momentum) * running + momentum * batch,
with the unbiased variance; momentum=None is the cumulative average, which needs
num_batches_tracked (an int64 array of one element, incremented in place). A batch of one row
is a ValueError. training=False normalizes by the running statistics (required) and updates
nothing. save_mean / save_rstd (shape (C,)) are the statistics used: the backward's mean and
rstd (required for training=False; for training=True None recomputes them from x).
"""

import numpy as np

from . import _lib
from ._arrays import (address_or_none, as_float, grad, inout, optional_output, output, param_address,
                      require_array, rows_in, rows_like, run, stat)
from ._errors import EINVAL, KeelValueError

__all__ = ["batch_norm", "batch_norm_backward"]

_lib_ = _lib.lib
_INT64 = np.dtype(np.int64)


def _features(x, who, name="x"):
    require_array(x, name, who)
    if x.ndim == 0:
        raise KeelValueError(f"{who}: {name} is 0-dimensional (BatchNorm needs (..., C))", EINVAL)
    return x.shape[-1]


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               *, num_batches_tracked=None, return_stats=False):
    """y = (x - mean) * rstd * weight + bias per feature (the last dim of x); the batch's
    statistics in training (updating running_mean/var in place), the running ones otherwise.
    With return_stats: (y, save_mean, save_rstd)."""
    who = "keel.batch_norm"
    tx, x, lay = rows_in(x, _features(x, who), who)
    if training and lay.rows == 0:  # keel's rows == 0 no-op would leave the statistics silently as they are
        raise KeelValueError(f"{who}: rows (0): training needs more than one value per feature (an empty batch "
                             "has no statistics)", EINVAL)
    rmean = inout(running_mean, lay, "running_mean", who)
    rvar = inout(running_var, lay, "running_var", who)
    tracked = inout(num_batches_tracked, lay, "num_batches_tracked", who, size=1, dtype=_INT64)
    p_weight, p_bias = param_address(weight, lay, "weight", who), param_address(bias, lay, "bias", who)
    ty, y = output(lay, x.shape)
    save_mean, save_rstd = stat(return_stats, lay.dims), stat(return_stats, lay.dims)
    m = float("nan") if momentum is None else as_float(momentum, "momentum", who)
    run(_lib_.keel_batchnorm_fwd, lay.rows, lay.dim, tx, ty, p_weight, p_bias,
        as_float(eps, "eps", who), 1 if training else 0, m, address_or_none(rmean), address_or_none(rvar),
        address_or_none(tracked), address_or_none(save_mean), address_or_none(save_rstd), 0)
    return (y, save_mean, save_rstd) if return_stats else y


def batch_norm_backward(dy, x, mean=None, rstd=None, weight=None, eps=1e-5, training=True, need_dx=True,
                        need_dweight=True, need_dbias=True):
    """Gradients of batch_norm: (dx, dweight, dbias), None for the ones not asked for.
    mean, rstd: the forward's save_mean, save_rstd (training: both or neither; inference:
    required). training=False treats the statistics as constants: dx = rstd * dy * weight."""
    who = "keel.batch_norm_backward"
    tx, x, lay = rows_in(x, _features(x, who), who)
    tdy, dy = rows_like(dy, lay, x.shape, "dy", who)
    p_mean, p_rstd = param_address(mean, lay, "mean", who), param_address(rstd, lay, "rstd", who)
    p_weight = param_address(weight, lay, "weight", who)
    tdx, dx = optional_output(need_dx, lay, x.shape)
    dw, db = grad(need_dweight, lay.dims), grad(need_dbias, lay.dims)
    run(_lib_.keel_batchnorm_bwd, lay.rows, lay.dim, tdy, tx, p_mean, p_rstd,
        p_weight, as_float(eps, "eps", who), 1 if training else 0, tdx, address_or_none(dw),
        address_or_none(db), 0)
    return dx, dw, db

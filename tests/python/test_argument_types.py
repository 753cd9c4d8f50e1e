"""Arguments Python would quietly reinterpret: a bool where keel takes an int or a float (True is
1 to Python), and BatchNorm training on an empty batch (keel's rows == 0 no-op would leave the
running statistics as they are). Each is refused with a clear error, through NumPy and torch,
and nothing is computed."""

import numpy as np
import pytest

import keel


def _x():
    return np.arange(6, dtype=np.float32).reshape(2, 3)


@pytest.mark.parametrize("shape", [True, False, (True,), [3, False]])
def test_numpy_normalized_shape_refuses_bools(shape):
    with pytest.raises(TypeError, match="not a bool"):
        keel.layer_norm(_x(), shape)


@pytest.mark.parametrize("call", ["layer_norm", "rms_norm", "batch_norm"])
def test_numpy_eps_refuses_bools(call):
    x = _x()
    with pytest.raises(TypeError, match="eps .*not a bool"):
        if call == "batch_norm":
            keel.batch_norm(x, None, None, training=True, eps=True)
        else:
            getattr(keel, call)(x, 3, eps=True)


def test_numpy_batch_norm_training_refuses_an_empty_batch():
    mean, var = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="empty batch"):
        keel.batch_norm(np.ones((0, 3), np.float32), mean, var, training=True)
    assert np.array_equal(mean, np.zeros(3)) and np.array_equal(var, np.ones(3))
    assert keel.batch_norm(np.ones((0, 3), np.float32), mean, var).shape == (0, 3)  # inference: nothing to do


def test_torch_refuses_bools():
    torch = pytest.importorskip("torch")
    import keel.torch as kt
    import keel.torch_layers as kl

    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match="not a bool"):
        kt.layer_norm(x, True)
    with pytest.raises(TypeError, match="not a bool"):
        kt.rms_norm(x, (3,), eps=True)
    with pytest.raises(TypeError, match="not a bool"):
        kt.add_layer_norm(x, x, 3, eps=True)
    with pytest.raises(TypeError, match="not a bool"):
        kl.dyt(x, True, torch.tensor([0.5]))
    with pytest.raises(TypeError, match="not a bool"):
        kl.batch_norm(x, None, None, training=True, eps=True)
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        kl.batch_norm(torch.randn(0, 3), None, None, training=True)

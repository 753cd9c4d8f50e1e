"""What keel.torch hands to torch: a call keel does not compute (a dtype, a device, an option)
runs torch's own computation, and keel says so once per operation and reason with a
KeelFallbackWarning; fallbacks() lists every (operation, reason) seen in this process. Shared by
keel.torch and keel.torch_layers."""

import warnings


class KeelFallbackWarning(UserWarning):
    """A keel.torch call computed by torch's own computation instead of keel's (a dtype or device
    keel does not compute, or an option it does not take). Issued once per operation and reason."""


_SEEN = set()


def fall_back(op, reason, stacklevel=4):
    """Records, and warns the first time, that this call of `op` runs torch's computation."""
    if (op, reason) not in _SEEN:
        _SEEN.add((op, reason))
        warnings.warn(f"keel.torch.{op}: {reason}: this call runs torch's own computation, not keel's "
                      "(said once per operation and reason)", KeelFallbackWarning, stacklevel=stacklevel)


def fallbacks():
    """The (operation, reason) pairs of the calls that ran torch's computation in this process."""
    return sorted(_SEEN)

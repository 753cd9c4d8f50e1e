"""Which of keel's torch operators ran, and with what: a TorchDispatchMode that records every
torch.ops.keel.* call below autograd (the forwards that the autograd kernels run, and the
backwards their nodes run), with its arguments by name."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class KeelCall:
    """One call: `name` (e.g. "layer_norm_backward") and `args` by the schema's names."""

    def __init__(self, func, args, kwargs):
        self.name = func._schema.name.split("::", 1)[1]
        names = [a.name for a in func._schema.arguments]
        self.args = dict(zip(names, args))
        self.args.update(kwargs)

    def __getitem__(self, key):
        return self.args[key]

    @property
    def mask(self):
        """A backward's output_mask as a tuple of bools."""
        return tuple(bool(m) for m in self.args["output_mask"])

    def __repr__(self):
        return f"KeelCall({self.name})"


class KeelCalls(TorchDispatchMode):
    """`with KeelCalls() as calls:` ... `calls` lists the keel operators that ran."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __enter__(self):
        super().__enter__()
        return self.calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "keel":
            self.calls.append(KeelCall(func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def names(calls):
    return [c.name for c in calls]

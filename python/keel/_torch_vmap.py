"""torch.func.vmap rules for keel's torch operators (keel.torch and keel.torch_layers).

keel's row ops treat rows independently, so a vmapped dimension carried by the row tensors alone
(x; the fused ops' branch; LayerScale's f) becomes one more leading dimension of one call.
Anything else (batched weights; the backwards, whose parameter gradients sum over rows) runs
one call per batch element and stacks the results. An output the op was not asked for (an empty
placeholder of shape (0,)) carries no batch dimension."""

import torch


def _batched(dim):
    """Whether an in_dims entry says batched (an int; None, or a list of Nones for a list
    argument such as normalized_shape, says not)."""
    return isinstance(dim, int)


def _is_absent(t):
    return t.shape == (0,)


def _stacked(calls):
    """One output from the per-element results: a tensor, a tuple or a list of them."""
    if isinstance(calls[0], torch.Tensor):
        return torch.stack(calls), 0
    outs = type(calls[0])(parts[0] if _is_absent(parts[0]) else torch.stack(parts) for parts in zip(*calls))
    return outs, _out_dims(outs)


def _out_dims(outs):
    """out_dims with the structure of the outputs: 0 for each batched one, None for placeholders."""
    if isinstance(outs, torch.Tensor):
        return 0
    return type(outs)(None if _is_absent(o) else 0 for o in outs)


def rule(op, row_args=()):
    """The vmap rule of op: the arguments at positions row_args are its row tensors."""

    def vmap_rule(info, in_dims, *args):
        if any(_batched(d) and i not in row_args for i, d in enumerate(in_dims)):
            calls = [op(*(a.select(d, i) if _batched(d) else a for a, d in zip(args, in_dims)))
                     for i in range(info.batch_size)]
            return _stacked(calls)
        args = list(args)
        for i in row_args:
            d = in_dims[i]
            args[i] = args[i].movedim(d, 0) if _batched(d) else args[i].expand(info.batch_size, *args[i].shape)
        outs = op(*args)
        return outs, _out_dims(outs)

    return vmap_rule


def register(name, row_args=()):
    """Registers the rule of torch.ops.keel.<name>."""
    torch.library.register_vmap("keel::" + name, rule(getattr(torch.ops.keel, name).default, row_args))

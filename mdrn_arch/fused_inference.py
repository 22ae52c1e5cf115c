"""MDRN's CPU inference fast path, applied to a built network from outside (``enable_fused_inference(net)``): each MSAG
runs through oneDNN ops with the ReLUs and residual adds fused into its convs (``onednn_fused``); same state_dict, same
outputs. What it changes and when it steps aside: docs/architecture.md#cpu-inference-fast-path-beside-the-network.
"""
import copy
import functools
import itertools
import logging

import torch
from torch.nn.modules import module as nn_module

from . import onednn_fused
from .mdrn_arch import MSAB, MSAG

logger = logging.getLogger('basicsr')
CHECK_SIZE = 8  # side of the random input each MSAG is checked on when the fast path is enabled


class FusedMSAG(MSAG):
    """An MSAG that runs ``fused_msag`` where the fused ops may replace ``MSAG.forward`` (``compute_dtype``)."""

    def forward(self, *inputs):
        dtype = onednn_fused.compute_dtype(inputs[0])
        if dtype is None or _hooked_inside(self):
            return super().forward(*inputs)
        return fused_msag(self, inputs, dtype)


def fused_msag(msag, inputs, dtype):
    """``MSAG.forward(*inputs)`` through oneDNN's fused ops, in ``dtype``."""
    inputs = [t.to(dtype) for t in inputs]  # under autocast to bf16 the inputs may still be fp32
    # fusion(cat(inputs)) == sum_k conv(input_k, W[:, channels of k]): no cat; terms added in place
    ends = list(itertools.accumulate(t.shape[1] for t in inputs))
    x = None
    for t, start, end in zip(inputs, [0, *ends], ends):
        w = msag.fusion.weight[:, start:end].contiguous()
        b = msag.fusion.bias if end == ends[-1] else None
        x = onednn_fused.conv(t, w, b) if x is None else onednn_fused.add_conv1x1(x, t, w, b, inplace=True)
    y = x
    for k, block in enumerate(msag.body):
        y = fused_msab(block, y, inplace=k > 0)  # from block 1 on, y is a buffer of this loop's own
    return y.add_(x)


def fused_msab(msab, x, inplace):
    """``MSAB.forward(x)`` through oneDNN's fused ops, written into ``x`` when ``inplace``."""
    n = len(msab.branches)
    step = msab.conv_in.out_channels // n
    slices = [slice(i * step, (i + 1) * step) for i in range(n)]
    w_in, b_in = msab.conv_in.weight, msab.conv_in.bias
    ys = [onednn_fused.conv(onednn_fused.conv(x, w_in[s], b_in[s]), branch.weight, branch.bias, branch.padding[0],
                            branch.dilation[0], relu=True)
          for s, branch in zip(slices, msab.branches)]
    # fusion(shuffle(cat(y_0..y_n))) == sum_i conv(y_i, W[:, unshuffle][:, slice_i]): no cat, no shuffle copy; each
    # term is added onto x in place
    w_fus, out = msab.fusion.weight[:, _unshuffle(msab.fusion.in_channels, n).to(x.device)], x
    for i, (s, y) in enumerate(zip(slices, ys)):
        bias = msab.fusion.bias if i == n - 1 else None
        out = onednn_fused.add_conv1x1(out, y, w_fus[:, s].contiguous(), bias, inplace=inplace or i > 0)
    return out


@functools.lru_cache(maxsize=None)
def _unshuffle(channels, groups):
    """Column order with ``conv(y, W[:, order]) == conv(channel_shuffle(y, groups), W)`` (computed once per shape:
    every MSAB of every forward asks for it)."""
    source = torch.arange(channels).view(groups, channels // groups).t().reshape(-1)  # shuffle(y)[:, k] = y[:, src[k]]
    return torch.argsort(source)


def _hooked_inside(module):
    """Whether a forward hook sits on a submodule of ``module`` (e.g. a distillation tap) or globally (as
    ``torch.utils.flop_counter``'s, which thus counts the plain path): the fused path would skip it."""
    return bool(nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks) or any(
        m._forward_hooks or m._forward_pre_hooks for m in module.modules() if m is not module)


def _structure_problem(msag):
    """Why the fused ops cannot stand for this MSAG's forward (None when they can)."""
    def plain_conv(conv, k):
        return (type(conv) is torch.nn.Conv2d and conv.kernel_size == (k, k) and conv.stride == (1, 1)
                and conv.groups == 1 and conv.bias is not None and conv.padding_mode == 'zeros')
    if type(msag) not in (MSAG, FusedMSAG) or not plain_conv(msag.fusion, 1):
        return f'{type(msag).__name__} is not the MSAG the fast path implements'
    for block in msag.body:
        if type(block) is not MSAB or not (plain_conv(block.conv_in, 1) and plain_conv(block.fusion, 1)
                                           and all(plain_conv(b, 3) and b.padding[0] == b.dilation[0]
                                                   for b in block.branches)
                                           and type(block.act) is torch.nn.ReLU):
            return f'{type(block).__name__} in {type(msag).__name__}.body is not the MSAB the fast path implements'
    return None


def _output_problem(msag):
    """How far the fused forward is from ``MSAG.forward`` on a random input (None when within fp32 rounding)."""
    p = msag.fusion.weight
    x = torch.rand(1, msag.fusion.in_channels, CHECK_SIZE, CHECK_SIZE, device=p.device, dtype=p.dtype,
                   generator=torch.Generator(p.device).manual_seed(0))
    with torch.no_grad(), torch.autocast('cpu', enabled=False):  # the check is in fp32 whatever the caller runs
        ref = MSAG.forward(msag, x)
        out = fused_msag(msag, [x.clone()], torch.float32)
    err = (out - ref).abs().max().item()
    tol = 1e-4 * max(ref.abs().max().item(), 1.0)
    return None if err <= tol else f'the fused forward differs from MSAG.forward by {err:.3g} (> {tol:.3g})'


def enable_fused_inference(net):
    """Put every MSAG of ``net`` on the fast path (as a ``FusedMSAG``), after checking that the fast path still
    computes what MSAG/MSAB compute; where it does not (or this CPU has no fused fp32 convs), nothing changes and one
    line is logged. Returns whether the fast path is on. Idempotent; ``disable_fused_inference`` undoes it."""
    msags = [m for m in net.modules() if isinstance(m, MSAG)]
    if not msags:
        return False
    if not onednn_fused.supported(torch.float32):
        logger.info('MDRN fast path off: this CPU/torch build runs no fused oneDNN convolutions; the plain forward '
                    'runs (same results).')
        return False
    for m in msags:
        problem = _structure_problem(m) or _output_problem(copy.deepcopy(m).cpu().float())
        if problem:
            logger.warning(f'MDRN fast path off: {problem}; the plain forward runs. Update mdrn_arch/'
                           'fused_inference.py to the changed network to get the fast path back.')
            return False
    for m in msags:
        m.__class__ = FusedMSAG
    return True


def disable_fused_inference(net):
    """Put every MSAG of ``net`` back on the plain forward."""
    for m in net.modules():
        if type(m) is FusedMSAG:
            m.__class__ = MSAG

"""Memory-format handling shared by the archs: features run channels_last on the CPU, outputs keep the caller's format.

A 1-channel input is NCHW and channels_last at once (torch then keeps NCHW), so the archs convert the features after
their first conv; why and how much it gains: docs/benchmarks.md#how-the-cpu-forward-is-made-fast.
"""
import torch


def caller_format(x):
    """The memory format to hand the output back in: channels_last only if ``x`` is unambiguously so."""
    if x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def cpu_channels_last(feat):
    """``feat`` in channels_last on the CPU; unchanged elsewhere."""
    return feat.contiguous(memory_format=torch.channels_last) if feat.device.type == 'cpu' else feat

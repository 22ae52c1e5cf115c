"""Memory-format handling shared by the archs: features run channels_last on the CPU, outputs keep the caller's format.

oneDNN's convs are faster channels_last on the CPU (measured here: MDRN's 1x1 convs ~6x, DnCNN's 3x3 convs 1.5x at
512x512). Converting the input does nothing for gray images: a 1-channel tensor is NCHW and channels_last at once,
torch then keeps NCHW, and the whole network ran in NCHW. So the archs convert the features after their first conv.
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

"""What can be told about any registered arch from the module itself."""
import torch


def in_channels(net):
    """Image channels a network takes: what it states (``num_in_ch``: this project's archs), else, for an arch that
    states nothing (BasicSR's), the input channels of its first layer when that is a conv; None when it cannot be
    told."""
    stated = getattr(net, 'num_in_ch', None)
    if isinstance(stated, int) and not isinstance(stated, bool):
        return stated
    first = next((m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))), None)
    return first.in_channels if isinstance(first, torch.nn.Conv2d) else None

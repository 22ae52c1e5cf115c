"""What can be told about any registered arch from the module itself (BasicSR's archs share no such attribute)."""
import torch

from .ffdnet_arch import FFDNet


def in_channels(net):
    """Image channels a network takes (None when it cannot be told)."""
    if isinstance(net, FFDNet):
        return (net.body[0].in_channels - 1) // 4  # 4*C pixel-unshuffled image channels + the noise map
    first = next((m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))), None)
    return first.in_channels if isinstance(first, torch.nn.Conv2d) else None

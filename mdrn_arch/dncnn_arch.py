"""DnCNN (Zhang et al., TIP 2017) for BasicSR: the published DnCNN-S layout with batch norm folded into the conv
biases, predicting the noise (``forward(x) = x - body(x)``). ``basicsr peers`` imports the published MatConvNet
weights (docs/comparing.md).
"""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .memory_format import caller_format, cpu_channels_last


def conv_relu_stack(in_ch, num_feat, out_ch, num_conv):
    """``num_conv`` 3x3 convs, a ReLU after each but the last: the body of DnCNN and of FFDNet."""
    layers = [nn.Conv2d(in_ch, num_feat, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(num_conv - 2):
        layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(num_feat, out_ch, 3, padding=1))
    return nn.Sequential(*layers)


@ARCH_REGISTRY.register()
class DnCNN(nn.Module):
    """DnCNN with folded batch norm.

    Args:
        num_in_ch (int): Input channels (1 gray, 3 color).
        num_out_ch (int): Output channels; must equal ``num_in_ch`` (the net predicts the noise of its input).
        num_feat (int): Features of the hidden convs (published: 64).
        num_conv (int): Number of 3x3 convs (published DnCNN-S: 17).
    """

    def __init__(self, num_in_ch=1, num_out_ch=1, num_feat=64, num_conv=17):
        super().__init__()
        if num_in_ch != num_out_ch:
            raise ValueError(f'DnCNN predicts the noise of its input: num_out_ch ({num_out_ch}) must equal '
                             f'num_in_ch ({num_in_ch}).')
        self.num_in_ch = num_in_ch  # the image channels it takes (read by the tools: arch_util.in_channels)
        if num_conv < 2:
            raise ValueError(f'DnCNN needs num_conv >= 2 (first and last conv), got {num_conv}.')
        self.body = conv_relu_stack(num_in_ch, num_feat, num_out_ch, num_conv)

    def forward(self, x):
        feat = x
        for i, layer in enumerate(self.body):
            feat = layer(feat)
            if i == 0:
                feat = cpu_channels_last(feat)  # see memory_format
        return (x - feat).contiguous(memory_format=caller_format(x))

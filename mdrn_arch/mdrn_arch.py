"""MDRN: Multiple Degradation and Reconstruction Network (Li et al., paper §3.1, Fig. 3-4, §4.2).

Module names (a stable API: checkpoints and distillation configs use them):

* ``head``            3x3 conv, image -> ``num_feat`` features.
* ``msag_{i}_{j}``    the MSAG at level ``i`` (0 = full resolution, ``i`` = downsampled ``i`` times) and column
                      ``j`` of the nested (Unet++-like) inverted pyramid. Level 0 holds the paper's MSAG-1..4:
                      ``msag_0_0`` = MSAG-1, ``msag_0_1`` = MSAG-2, ``msag_0_2`` = MSAG-3, ``msag_0_3`` = MSAG-4.
* ``down_{i}``        learned degradation: conv k=2 s=2 from level ``i-1`` to level ``i``.
* ``up_{i}_{j}``      learned reconstruction: deconv k=2 s=2 bringing ``msag_{i+1}_{j-1}`` up to level ``i``.
* ``tail``            3x3 conv back to image space, added to the input (global residual).

Every MSAG ``(i, j>0)`` fuses the outputs of all preceding MSAGs of its level (dense connection, eq. 1) and the
upsampled output of the MSAG below-left. Only the network, through ordinary module calls (hooks and FLOP counters see
every conv); the choices the paper leaves open are constructor arguments, and the CPU fast path lives beside it
(``fused_inference``): docs/architecture.md.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .memory_format import caller_format, cpu_channels_last


def channel_shuffle(x, groups):
    """ShuffleNet channel shuffle: interleave the channels of ``groups`` equal groups."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def pad_to_multiple(x, m):
    """Pad the bottom/right of ``x`` (reflect; replicate for sides too small to reflect) to a multiple of ``m``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % m, -w % m
    if not (pad_h or pad_w):
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode='reflect' if pad_h < h and pad_w < w else 'replicate')


class MSAB(nn.Module):
    """Multi-scale Aggregation Block (Fig. 4).

    1x1 conv -> split the channels into one group per dilation -> a 3x3 conv with that dilation (+ReLU) on each group
    (several receptive fields for the price of one 3x3 conv) -> concat -> channel shuffle (so the next fusion mixes
    the scales) -> 1x1 fusion conv -> residual add.
    """

    def __init__(self, num_feat=64, dilations=(1, 2)):
        super().__init__()
        n = len(dilations)
        if n < 1:
            raise ValueError('MSAB needs at least one dilation (one 3x3 branch per dilation), got dilations=().')
        if num_feat % n:
            need = 'even' if n == 2 else f'a multiple of {n} (one group per dilation)'
            raise ValueError(f'MSAB splits its channels into {n} equal groups, one per dilation {tuple(dilations)}: '
                             f'num_feat must be {need}, got {num_feat}.')
        group = num_feat // n
        self.conv_in = nn.Conv2d(num_feat, num_feat, 1)
        self.branches = nn.ModuleList(nn.Conv2d(group, group, 3, padding=d, dilation=d) for d in dilations)
        self.act = nn.ReLU(inplace=True)
        self.fusion = nn.Conv2d(num_feat, num_feat, 1)

    def forward(self, x):
        groups = self.conv_in(x).chunk(len(self.branches), dim=1)
        y = torch.cat([self.act(conv(g)) for conv, g in zip(self.branches, groups)], dim=1)
        return x + self.fusion(channel_shuffle(y, len(self.branches)))


class MSAG(nn.Module):
    """Multi-scale Aggregation Group (Fig. 4): 1x1 fusion of its concatenated inputs, ``num_block`` MSABs, and a
    long skip from the fused input to the output (global residual learning, as in RCAN's residual groups)."""

    def __init__(self, in_ch, num_feat=64, num_block=8, dilations=(1, 2)):
        super().__init__()
        self.fusion = nn.Conv2d(in_ch, num_feat, 1)
        self.body = nn.Sequential(*(MSAB(num_feat, dilations) for _ in range(num_block)))

    def forward(self, *inputs):
        x = self.fusion(torch.cat(inputs, dim=1))
        return x + self.body(x)


@ARCH_REGISTRY.register()
class MDRN(nn.Module):
    """Multiple Degradation and Reconstruction Network.

    Args:
        num_in_ch (int): Input channels (1 gray, 3 color).
        num_out_ch (int): Output channels. The input is added to the output when they match.
        num_feat (int): Features of every MSAB/MSAG (paper: 64).
        num_block (int): MSABs per MSAG (paper: 8; MDRN-2B: 2).
        num_level (int): Learned down/up-sampling steps (paper: 3).
        dilations (sequence of int): One 3x3 branch per dilation in every MSAB (not in the paper's text; default
            (1, 2)); ``num_feat`` must be divisible by their count.

    Inputs of any height and width are padded (reflect) to a multiple of ``2**num_level`` and cropped back.
    """

    def __init__(self, num_in_ch=1, num_out_ch=1, num_feat=64, num_block=8, num_level=3, dilations=(1, 2)):
        super().__init__()
        if num_level < 1 or num_block < 1:
            raise ValueError(f'MDRN needs num_level >= 1 and num_block >= 1, got {num_level} and {num_block}.')
        self.num_in_ch = num_in_ch  # the image channels it takes (read by the tools: arch_util.in_channels)
        self.num_level = num_level
        self.residual = num_in_ch == num_out_ch
        self.head = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        for i in range(num_level + 1):
            for j in range(num_level + 1 - i):
                # column j > 0 fuses the j earlier MSAGs of its level plus one upsampled input; column 0 one input
                self.add_module(f'msag_{i}_{j}', MSAG(num_feat * (j + 1), num_feat, num_block, tuple(dilations)))
                if j:
                    self.add_module(f'up_{i}_{j}', nn.ConvTranspose2d(num_feat, num_feat, 2, stride=2))
            if i:
                self.add_module(f'down_{i}', nn.Conv2d(num_feat, num_feat, 2, stride=2))
        self.tail = nn.Conv2d(num_feat, num_out_ch, 3, padding=1)

    def paper_kd_taps(self):
        """Module names of the full-resolution reconstructed features the paper distills (MSAG-2, -3, -4)."""
        return [f'msag_0_{j}' for j in range(1, self.num_level + 1)]

    def forward(self, x):
        h, w = x.shape[-2:]
        feat = cpu_channels_last(self.head(pad_to_multiple(x, 2**self.num_level)))  # see memory_format
        nodes = {(0, 0): self.msag_0_0(feat)}
        # Unet++ order: each new downsampling (k, 0) is restored immediately, climbing the diagonal back to level 0.
        for k in range(1, self.num_level + 1):
            nodes[k, 0] = getattr(self, f'msag_{k}_0')(getattr(self, f'down_{k}')(nodes[k - 1, 0]))
            for j in range(1, k + 1):
                i = k - j
                up = getattr(self, f'up_{i}_{j}')(nodes[i + 1, j - 1])
                nodes[i, j] = getattr(self, f'msag_{i}_{j}')(*(nodes[i, c] for c in range(j)), up)
        out = self.tail(nodes[0, self.num_level])[..., :h, :w]
        out = out + x if self.residual else out
        return out.contiguous(memory_format=caller_format(x))

"""MDRN: Multiple Degradation and Reconstruction Network (Li et al., paper §3.1, Fig. 3-4, §4.2).

Structure (names are the module names used by checkpoints and distillation configs; they are a stable API):

* ``head``            3x3 conv, image -> ``num_feat`` features.
* ``msag_{i}_{j}``    the MSAG at level ``i`` (0 = full resolution, ``i`` = downsampled ``i`` times) and column
                      ``j`` of the nested (Unet++-like) inverted pyramid. Level 0 holds the paper's MSAG-1..4:
                      ``msag_0_0`` = MSAG-1, ``msag_0_1`` = MSAG-2, ``msag_0_2`` = MSAG-3, ``msag_0_3`` = MSAG-4.
* ``down_{i}``        learned degradation: conv k=2 s=2 from level ``i-1`` to level ``i`` (``num_level`` of them).
* ``up_{i}_{j}``      learned reconstruction: deconv k=2 s=2 bringing ``msag_{i+1}_{j-1}`` up to level ``i``.
* ``tail``            3x3 conv back to image space, added to the input (global residual).

Every MSAG ``(i, j>0)`` fuses the outputs of all preceding MSAGs of its level (dense connection, eq. 1) and the
upsampled output of the MSAG below-left; each downsampling is restored immediately, so every level produces
"reconstructed" features. With 64 features and 3 levels this gives 10 MSAGs: 2.38M parameters for ``num_block=8``
and 0.77M for ``num_block=2`` (MDRN-2B), the paper's counts.

Speed (same function, same state_dict): on CPU the forward runs in ``channels_last`` memory format (oneDNN's 1x1
convs on 64 channels are ~6x faster there than in NCHW), MSAB's ``conv_in`` is applied per half (weight slices, so
each branch gets a contiguous input instead of a strided ``chunk`` view), and the channel shuffle is folded into the
columns of the next 1x1 fusion conv (``fusion(shuffle(y)) == conv(y, W[:, unshuffle])``), which removes the shuffle
copy. Without autograd (inference, a distillation teacher) on the CPU, each MSAG runs through oneDNN ops with the ReLU
and the residual adds fused into the convs (``onednn_fused``): the 1x1 fusions over concatenated inputs become sums of
per-input convs added in place (no ``cat``), and each block writes its result into its input buffer; in fp32, and in
bf16 under ``torch.autocast('cpu', dtype=torch.bfloat16)``. Same outputs (bf16: up to rounding);
``python -m mdrn_models.benchmark`` measures it (``MDRN-unfused`` is the same network without this path).
"""
import itertools

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn.modules import module as nn_module

from . import onednn_fused
from .memory_format import caller_format, cpu_channels_last


def channel_shuffle(x, groups):
    """ShuffleNet channel shuffle: interleave the channels of ``groups`` equal groups."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def shuffle_source(channels, groups):
    """``src`` with ``channel_shuffle(y, groups)[:, k] == y[:, src[k]]``."""
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)


def pad_to_multiple(x, m):
    """Pad the bottom/right of ``x`` (reflect; replicate for sides too small to reflect) to a multiple of ``m``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % m, -w % m
    if not (pad_h or pad_w):
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode='reflect' if pad_h < h and pad_w < w else 'replicate')


class MSAB(nn.Module):
    """Multi-scale Aggregation Block (Fig. 4).

    1x1 conv -> split channels in two halves -> a 3x3 conv with a different dilation on each half (two receptive
    fields for the price of one 3x3 conv on half the channels) -> concat -> channel shuffle (so the next fusion mixes
    both scales) -> 1x1 fusion conv -> residual add.
    """

    def __init__(self, num_feat=64, dilations=(1, 2)):
        super().__init__()
        if num_feat % 2:
            raise ValueError(f'MSAB splits its channels in two halves: num_feat must be even, got {num_feat}.')
        half = num_feat // 2
        self.conv_in = nn.Conv2d(num_feat, num_feat, 1)
        self.branches = nn.ModuleList(nn.Conv2d(half, half, 3, padding=d, dilation=d) for d in dilations)
        self.act = nn.ReLU(inplace=True)
        self.fusion = nn.Conv2d(num_feat, num_feat, 1)
        self.register_buffer('unshuffle', torch.argsort(shuffle_source(num_feat, len(dilations))), persistent=False)

    def fusion_weight(self):
        """fusion(shuffle(y)) == conv(y, fusion.weight[:, unshuffle]): the shuffle folded into the fusion weights."""
        return self.fusion.weight[:, self.unshuffle]

    def _conv_in_slices(self):
        step = self.conv_in.out_channels // len(self.branches)
        return [slice(i * step, (i + 1) * step) for i in range(len(self.branches))]

    def forward(self, x):
        w_in, b_in = self.conv_in.weight, self.conv_in.bias
        # conv_in per half (same as conv_in(x).chunk(n)), so each branch reads a contiguous tensor
        y = torch.cat([self.act(conv(F.conv2d(x, w_in[s], b_in[s])))
                       for s, conv in zip(self._conv_in_slices(), self.branches)], dim=1)
        return x + F.conv2d(y, self.fusion_weight(), self.fusion.bias)

    def forward_fused(self, x, inplace):
        """``forward`` through oneDNN's fused ops (no autograd; see ``onednn_fused``), into ``x`` when ``inplace``."""
        slices = self._conv_in_slices()
        ys = [onednn_fused.conv(onednn_fused.conv(x, self.conv_in.weight[s], self.conv_in.bias[s]), branch.weight,
                                branch.bias, branch.padding[0], branch.dilation[0], relu=True)
              for s, branch in zip(slices, self.branches)]
        # fusion(cat(y_0, y_1)) == sum_i conv(y_i, W[:, slice_i]): no cat; each term is added onto x in place
        w_fus, out = self.fusion_weight(), x
        for i, (s, y) in enumerate(zip(slices, ys)):
            bias = self.fusion.bias if i == len(ys) - 1 else None
            out = onednn_fused.add_conv1x1(out, y, w_fus[:, s].contiguous(), bias, inplace=inplace or i > 0)
        return out


class MSAG(nn.Module):
    """Multi-scale Aggregation Group (Fig. 4): 1x1 fusion of its concatenated inputs, ``num_block`` MSABs, and a
    long skip from the fused input to the output (global residual learning, as in RCAN's residual groups).

    Set ``fused_inference = False`` on an instance (``set_fused_inference`` for a whole net) to keep it off the oneDNN
    fast path, for comparisons.
    """
    fused_inference = True

    def __init__(self, in_ch, num_feat=64, num_block=8):
        super().__init__()
        self.fusion = nn.Conv2d(in_ch, num_feat, 1)
        self.body = nn.Sequential(*(MSAB(num_feat) for _ in range(num_block)))

    def forward(self, *inputs):
        dtype = onednn_fused.compute_dtype(inputs[0]) if self.fused_inference else None
        if dtype is None or _hooked_inside(self):
            x = self.fusion(torch.cat(inputs, dim=1))
            return x + self.body(x)
        inputs = [t.to(dtype) for t in inputs]  # under autocast to bf16 the inputs may still be fp32
        # fusion(cat(inputs)) == sum_k conv(input_k, W[:, channels of k]): no cat; terms added in place
        ends = list(itertools.accumulate(t.shape[1] for t in inputs))
        x = None
        for t, start, end in zip(inputs, [0, *ends], ends):
            w = self.fusion.weight[:, start:end].contiguous()
            b = self.fusion.bias if end == ends[-1] else None
            x = onednn_fused.conv(t, w, b) if x is None else onednn_fused.add_conv1x1(x, t, w, b, inplace=True)
        y = x
        for k, block in enumerate(self.body):
            y = block.forward_fused(y, inplace=k > 0)  # from block 1 on, y is a buffer of this loop's own
        return y.add_(x)


def set_fused_inference(net, enabled):
    """Put every MSAG of ``net`` on (``True``, the default) or off the oneDNN fused inference path."""
    for m in net.modules():
        if isinstance(m, MSAG):
            m.fused_inference = enabled


def _hooked_inside(module):
    """Whether a forward hook (e.g. a distillation tap) sits on a submodule of ``module``, or a global one: the fused
    path calls the submodules' convs directly, which would skip it."""
    return bool(nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks) or any(
        m._forward_hooks or m._forward_pre_hooks for m in module.modules() if m is not module)


@ARCH_REGISTRY.register()
class MDRN(nn.Module):
    """Multiple Degradation and Reconstruction Network.

    Args:
        num_in_ch (int): Input channels (1 gray, 3 color).
        num_out_ch (int): Output channels. The input is added to the output when they match.
        num_feat (int): Features of every MSAB/MSAG (paper: 64).
        num_block (int): MSABs per MSAG (paper: 8; MDRN-2B: 2).
        num_level (int): Learned down/up-sampling steps (paper: 3).

    Inputs of any height and width are padded (reflect) to a multiple of ``2**num_level`` and cropped back.
    """

    def __init__(self, num_in_ch=1, num_out_ch=1, num_feat=64, num_block=8, num_level=3):
        super().__init__()
        if num_level < 1 or num_block < 1:
            raise ValueError(f'MDRN needs num_level >= 1 and num_block >= 1, got {num_level} and {num_block}.')
        self.num_level = num_level
        self.residual = num_in_ch == num_out_ch
        self.head = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        for i in range(num_level + 1):
            for j in range(num_level + 1 - i):
                # column j > 0 fuses the j earlier MSAGs of its level plus one upsampled input; column 0 one input
                self.add_module(f'msag_{i}_{j}', MSAG(num_feat * (j + 1), num_feat, num_block))
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

"""FFDNet (Zhang et al., TIP 2018) for BasicSR. ``basicsr peers`` imports the published MatConvNet weights, reordering
the first and last conv's channels from MATLAB's sub-image order to ``F.pixel_unshuffle``'s (docs/comparing.md).
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .dncnn_arch import conv_relu_stack


@ARCH_REGISTRY.register()
class FFDNet(nn.Module):
    """FFDNet: the image pixel-unshuffled x2 (channel ``c*4 + 2*row_offset + col_offset``) plus a uniform noise-level
    map ``sigma/255``, ``num_conv`` 3x3 convs, pixel-shuffled back: the clean image itself (not residual). Odd sides
    are padded by repeating the last row/column and cropped back, as in the published MATLAB code.

    Args:
        num_in_ch (int): Image channels (1 gray, 3 color).
        num_out_ch (int): Output image channels.
        num_feat (int): Hidden features (published: 64 gray, 96 color).
        num_conv (int): Number of 3x3 convs (published: 15 gray, 12 color).
        sigma (float): Noise level on the 0..255 scale fed as the noise map (published models: 0..75). An arch
            option because BasicSR calls ``net_g(lq)`` with one argument; ``net.sigma = 50`` changes it (compare does,
            per tested sigma), ``net(x, sigma=...)`` overrides it per call (a number or a ``(B,)`` tensor).
    """

    def __init__(self, num_in_ch=1, num_out_ch=1, num_feat=64, num_conv=15, sigma=25):
        super().__init__()
        if num_conv < 2:
            raise ValueError(f'FFDNet needs num_conv >= 2, got {num_conv}.')
        self.num_in_ch = num_in_ch  # the image channels (its first conv sees 4x them + the noise map)
        self.sigma = float(sigma)
        if not 0 <= self.sigma <= 255:
            raise ValueError(f'FFDNet sigma is the noise level on the 0..255 scale (e.g. 25), got {sigma!r}.')
        if 0 < self.sigma < 1:  # as the dataset's sigma: almost surely a level on the 0..1 scale (25/255 = 0.098)
            raise ValueError(f'FFDNet sigma {sigma!r} is below 1 on the 0..255 pixel scale: give it in grey levels, '
                             f'e.g. 25 for 0.098 on the 0..1 scale ({self.sigma:g} x 255 = {self.sigma * 255:g}).')
        self.body = conv_relu_stack(4 * num_in_ch + 1, num_feat, 4 * num_out_ch, num_conv)

    def forward(self, x, sigma=None):
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2), mode='replicate')  # repeat the last row / column
        x = F.pixel_unshuffle(x, 2)
        sigma = self.sigma if sigma is None else sigma
        level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1) / 255.
        noise_map = level.expand(x.shape[0], 1, x.shape[2], x.shape[3])
        out = self.body(torch.cat([x, noise_map], dim=1))
        return F.pixel_shuffle(out, 2)[..., :h, :w]

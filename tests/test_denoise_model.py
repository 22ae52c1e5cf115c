"""DenoiseModel's tiled inference (``val.tile``): same result as the whole image, bounded memory."""
import pytest
import torch

from mdrn_arch import MDRN
from mdrn_models.denoise_model import tile_options, tiled_forward


def test_tiled_inference_equals_whole_image():
    torch.manual_seed(0)
    net = MDRN(num_feat=8, num_block=1, num_level=2).eval()
    x = torch.rand(1, 1, 75, 101)  # odd sizes: edge tiles are partial
    with torch.no_grad():
        whole, tiled = net(x), tiled_forward(net, x, 32, 24)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-4
    with torch.no_grad():  # no overlap: tiles see no context, so the test above can fail
        assert (tiled_forward(net, x, 32, 0) - whole).abs().max() > 1e-3


@pytest.mark.parametrize('tile, message', [({'size': 30}, 'val.tile.size must be a positive multiple of 8'),
                                           ({'size': 64, 'overlap': 4}, 'val.tile.overlap must be a multiple of 8')])
def test_bad_tile_options_are_refused(tile, message):
    with pytest.raises(ValueError, match=message):
        tile_options({'val': {'tile': tile}})

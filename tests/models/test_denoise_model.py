"""DenoiseModel's tiled inference (``val.tile``): same result as the whole image, bounded memory."""
import pytest
import torch

from mdrn_arch import MDRN
from mdrn_models.models.denoise_model import self_ensemble, eval_forward, tile_options, tiled_forward


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


@pytest.mark.bad_input
@pytest.mark.parametrize('tile, message', [({'size': 30}, 'val.tile.size must be a positive multiple of 8'),
                                           ({'size': 64, 'overlap': 4}, 'val.tile.overlap must be a multiple of 8'),
                                           (512, r'val.tile must be a mapping such as \{size: 512, overlap: 32\}'),
                                           ({'size': 64, 'overlpa': 8}, "val.tile has no option 'overlpa'")])
def test_bad_tile_options_are_refused(tile, message):
    with pytest.raises(ValueError, match=message):
        tile_options({'val': {'tile': tile}})


def test_eval_forward_is_what_the_model_type_tests():
    """``eval_forward``: the plain net under SRModel (val.tile / self_ensemble are DenoiseModel's), the x8 ensemble
    and tiles under DenoiseModel, an explicit tile for any model, and SwinIR padded to its window (any size runs)."""
    from basicsr.archs.swinir_arch import SwinIR
    torch.manual_seed(0)
    net = MDRN(num_feat=8, num_block=1, num_level=2).eval()
    x = torch.rand(1, 1, 40, 48)
    val = {'self_ensemble': True, 'tile': {'size': 16, 'overlap': 16}}
    with torch.no_grad():
        assert torch.equal(eval_forward(net, {'model_type': 'SRModel', 'val': val})(x), net(x))
        got = eval_forward(net, {'model_type': 'DenoiseModel', 'val': val})(x)
        assert (got - self_ensemble(net, x)).abs().max() < 1e-4  # tiles with full context: the same
        assert (got - net(x)).abs().max() > 1e-3
        assert torch.equal(eval_forward(net, {}, tile=(16, 0))(x), tiled_forward(net, x, 16, 0))
        swin = SwinIR(upscale=1, in_chans=1, img_size=16, window_size=8, img_range=1., depths=[1], embed_dim=8,
                      num_heads=[2], mlp_ratio=1, upsampler='', resi_connection='1conv').eval()
        odd = torch.rand(1, 1, 21, 30)
        with pytest.raises(RuntimeError):
            swin(odd)
        assert eval_forward(swin, {'network_g': {'type': 'SwinIR', 'window_size': 8}})(odd).shape == odd.shape


def test_the_model_type_puts_mdrn_on_its_cpu_fast_path_not_the_device_move():
    """DenoiseModel decides (CPU inference fast path for its network); BaseModel.model_to_device only moves and wraps,
    so another model type's MDRN keeps the plain forward."""
    from basicsr.models import build_model
    from mdrn_arch import onednn_fused
    from mdrn_arch.fused_inference import FusedMSAG
    from mdrn_models.integration import pipeline_fixes
    pipeline_fixes.install()
    opt = {'model_type': 'DenoiseModel', 'num_gpu': 0, 'is_train': False, 'dist': False, 'path': {}, 'val': {},
           'network_g': {'type': 'MDRN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 8, 'num_block': 1,
                         'num_level': 2}}
    fused = onednn_fused.supported(torch.float32)
    assert any(type(m) is FusedMSAG for m in build_model(opt).net_g.modules()) == fused
    assert not any(type(m) is FusedMSAG for m in build_model({**opt, 'model_type': 'SRModel'}).net_g.modules())

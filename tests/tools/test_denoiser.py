"""``Denoiser``, the Python object ``basicsr denoise`` is built on: on gray and colour images, tiled and not, it gives
what the command writes; it takes option files, ``.pth`` and ``.safetensors`` weights; bad inputs are one line."""
import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from mdrn_arch import MDRN
from mdrn_models import Denoiser
from mdrn_models.tools.export_weights import export
from mdrn_models.utils.checkpoints import safetensors_metadata


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    """A tiny gray and a tiny colour MDRN, each as an option file, a .pth and a .safetensors; and odd-sized images."""
    root = tmp_path_factory.mktemp('denoiser')
    rng = np.random.default_rng(3)
    out = {}
    for channels in (1, 3):
        net_opt = {'type': 'MDRN', 'num_in_ch': channels, 'num_out_ch': channels, 'num_feat': 8, 'num_block': 1,
                   'num_level': 2}
        torch.manual_seed(channels)
        net = MDRN(**{k: v for k, v in net_opt.items() if k != 'type'})
        pth = root / f'c{channels}.pth'
        torch.save({'params': net.state_dict()}, pth)
        yml = root / f'c{channels}.yml'
        yml.write_text(yaml.safe_dump({'name': f'c{channels}', 'model_type': 'DenoiseModel', 'network_g': net_opt,
                                       'path': {'pretrain_network_g': str(pth)}}))
        st = root / f'c{channels}.safetensors'
        export(str(pth), str(st), dtype='fp32', opt_path=str(yml))
        shape = (45, 37) if channels == 1 else (45, 37, 3)
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        cv2.imwrite(str(root / f'c{channels}.png'), img if channels == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        out[channels] = {'net': net.eval(), 'yml': yml, 'pth': pth, 'st': st, 'img': img, 'png': root / f'c{channels}.png'}
    return out


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('tile', [None, 16])
def test_denoiser_gives_what_basicsr_denoise_writes(nets, channels, tile, basicsr_cli, tmp_path):
    n = nets[channels]
    out = tmp_path / 'out.png'
    basicsr_cli('denoise', '-opt', n['yml'], '-i', n['png'], '-o', out, *(['--tile', tile] if tile else []),
                cwd=tmp_path)
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    written = written if channels == 1 else cv2.cvtColor(written, cv2.COLOR_BGR2RGB)
    got = Denoiser(n['yml'], device='cpu', tile=tile)(n['img'])
    assert got.shape == n['img'].shape and got.dtype == np.uint8
    assert np.array_equal(got, written)


@pytest.mark.parametrize('channels', [1, 3])
def test_tensors_option_files_pth_and_safetensors_give_the_network_itself(nets, channels):
    n = nets[channels]
    x = torch.rand(2, channels, 21, 30, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = n['net'](x)
    for weights in (n['yml'], n['pth'], n['st']):
        denoiser = Denoiser(weights, device='cpu')
        assert torch.allclose(denoiser(x), expected, atol=1e-6), weights
        assert torch.allclose(denoiser(x[0]), expected[0], atol=1e-6)  # [C, H, W] in, [C, H, W] out


def test_self_ensemble_and_half_run(nets):
    n = nets[1]
    plain = Denoiser(n['pth'], device='cpu')(n['img'])
    ensemble = Denoiser(n['pth'], device='cpu', self_ensemble=True)(n['img'])
    assert ensemble.shape == plain.shape and not np.array_equal(ensemble, plain)  # 8 passes averaged
    half = Denoiser(n['pth'], device='cpu', half=True)(n['img'])  # bf16 autocast on the CPU
    assert np.abs(half.astype(int) - plain.astype(int)).mean() < 3


def test_export_weights_safetensors_header_says_what_the_network_is(nets, tmp_path):
    n = nets[1]
    meta = safetensors_metadata(n['st'])
    assert json.loads(meta['network_g']) == yaml.safe_load(n['yml'].read_text())['network_g']
    assert meta['channels'] == 'gray' and meta['source'] == 'c1.pth[params]' and meta['version'].startswith('mdrn')
    bare = tmp_path / 'bare.safetensors'  # no -opt: the network read from the tensors
    export(str(n['pth']), str(bare))
    assert json.loads(safetensors_metadata(bare)['network_g']) == json.loads(meta['network_g'])


@pytest.mark.bad_input
@pytest.mark.parametrize('call, message', [
    (lambda d: d(np.zeros((8, 8), np.float32)), 'an image must be uint8 HxW or HxWx1, got float32 [8, 8]'),
    (lambda d: d(np.zeros((8, 8, 3), np.uint8)), 'an image must be uint8 HxW or HxWx1, got uint8 [8, 8, 3]'),
    (lambda d: d(torch.zeros(1, 3, 8, 8)), 'a tensor input must be float [C, H, W] or [N, C, H, W] with C=1'),
])
def test_bad_images_are_one_line(nets, call, message):
    with pytest.raises(ValueError) as err:
        call(Denoiser(nets[1]['pth'], device='cpu'))
    assert message in str(err.value) and '\n' not in str(err.value)


@pytest.mark.bad_input
@pytest.mark.parametrize('kwargs, message', [
    ({'tile': 30}, '--tile must be a positive multiple of 8, got 30'),
    ({'sigma': 25}, '--sigma is for networks with a noise-level input (FFDNet); MDRN has none'),
    ({'device': 'gpu'}, "'gpu' is not a device: use 'auto', 'cpu' or 'cuda' (--device)"),
    ({'device': 'cuda:0'}, 'cuda:0 asked for but CUDA is not available: use cpu (--device cpu)'),
])
def test_bad_settings_are_one_line(nets, kwargs, message):
    if kwargs.get('device', '').startswith('cuda') and torch.cuda.is_available():
        pytest.skip('CUDA is available here: asking for it is no mistake')
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        Denoiser(nets[1]['pth'], **{'device': 'cpu', **kwargs})

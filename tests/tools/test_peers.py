"""DnCNN / FFDNet archs and the MatConvNet importer: layouts, channel orders, CLI safety, and the published BSD68
numbers reproduced through ``basicsr test`` (needs ../shared; skips without it)."""
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

from mdrn_arch import DnCNN, FFDNet
from mdrn_models.tools import peer_weights
from conftest import REPO


def test_registered_and_layer_counts():
    assert ARCH_REGISTRY.get('DnCNN') is DnCNN and ARCH_REGISTRY.get('FFDNet') is FFDNet
    dncnn = build_network({'type': 'DnCNN', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 64, 'num_conv': 17})
    ffdnet = build_network({'type': 'FFDNet', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 64, 'num_conv': 15})
    assert sum(isinstance(m, torch.nn.Conv2d) for m in dncnn.modules()) == 17
    assert sum(isinstance(m, torch.nn.Conv2d) for m in ffdnet.modules()) == 15
    assert ffdnet.body[0].in_channels == 5 and ffdnet.body[-1].out_channels == 4
    # published DnCNN-S: 556,032 weights + biases
    assert sum(p.numel() for p in dncnn.parameters()) == 64 * 9 + 64 + 15 * (64 * 64 * 9 + 64) + 64 * 9 + 1


def test_dncnn_is_residual():
    net = DnCNN(num_feat=8, num_conv=3)
    torch.nn.init.zeros_(net.body[-1].weight)
    torch.nn.init.zeros_(net.body[-1].bias)
    x = torch.rand(1, 1, 9, 7)
    assert torch.equal(net(x), x)
    with pytest.raises(ValueError, match='num_out_ch'):
        DnCNN(num_in_ch=1, num_out_ch=3)


@pytest.mark.parametrize('channels', [1, 3])
def test_dncnn_runs_channels_last_on_cpu_and_returns_the_callers_format(channels):
    # gray inputs are NCHW and channels_last at once; the features after the first conv must be channels_last anyway
    net = DnCNN(channels, channels, num_feat=8, num_conv=4)
    seen = []
    net.body[2].register_forward_pre_hook(
        lambda m, i: seen.append(i[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.rand(2, channels, 9, 7)
    y = net(x)
    assert seen == [True] and y.is_contiguous() and torch.allclose(y, x - net.body(x), atol=1e-6)
    xc = x.contiguous(memory_format=torch.channels_last)
    assert net(xc).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('size', [(8, 8), (9, 7), (1, 1), (16, 5)])
def test_ffdnet_any_size_and_sigma_override(size):
    net = FFDNet(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3, sigma=25).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y25 = net(x)
        y50 = net(x, sigma=50)
        net.sigma = 50
        y50_attr = net(x)
        y_batch = net(x, sigma=torch.tensor([25., 50.]))
    assert y25.shape == x.shape and torch.isfinite(y25).all()
    assert torch.equal(y50, y50_attr) and not torch.equal(y25, y50)
    assert torch.allclose(y_batch[0], y25[0]) and torch.allclose(y_batch[1], y50[1])


@pytest.mark.parametrize('sigma, message', [(0.098, 'below 1 on the 0..255 pixel scale'), (-1, '0..255 scale'),
                                            (300, '0..255 scale')])
def test_ffdnet_refuses_a_sigma_off_the_pixel_scale(sigma, message):
    with pytest.raises(ValueError, match=message):
        FFDNet(sigma=sigma)
    assert FFDNet(sigma=0).sigma == 0  # the published models take a noise map of 0 too


def test_ffdnet_pads_odd_sizes_by_repeating_last_row_and_column():
    net = FFDNet(num_feat=8, num_conv=3).eval()
    x = torch.rand(1, 1, 7, 5)
    x_rep = torch.cat([x, x[..., -1:, :]], dim=-2)
    x_rep = torch.cat([x_rep, x_rep[..., -1:]], dim=-1)
    with torch.no_grad():
        assert torch.equal(net(x), net(x_rep)[..., :7, :5])


@pytest.mark.parametrize('channels', [1, 3])
def test_ffdnet_channel_order_maps_matlab_subimages_to_pixel_unshuffle(channels):
    # MATLAB SubP (column-major): sub-image k = dy + 2*dx, channel c*4 + k. Build that tensor independently.
    x = torch.rand(1, channels, 6, 8)
    matlab = torch.stack([x[0, c, dy::2, dx::2] for c in range(channels) for dx in range(2) for dy in range(2)])
    order = peer_weights.ffdnet_channel_order(channels)
    assert torch.equal(F.pixel_unshuffle(x, 2)[0], matlab[order])


def test_conv_to_torch_restores_matlab_layout():
    # MATLAB (H, W, Cin, Cout) with Cout = 1 dropped; filter value encodes its MATLAB index
    import numpy as np
    w = np.arange(3 * 3 * 2, dtype=np.float32).reshape(3, 3, 2)
    weight, bias = peer_weights.conv_to_torch({'name': 'l', 'weights': [w, np.zeros((1, 1), np.float32)],
                                               'pad': [1], 'stride': [1]})
    assert weight.shape == (1, 2, 3, 3)
    assert weight[0, 1, 2, 0] == w[2, 0, 1]  # (out, in, row, col) <- MATLAB (row, col, in)


def test_importer_refuses_a_mat_that_is_not_a_simplenn_net_in_one_line(tmp_path, capsys):
    import h5py
    import numpy as np
    with h5py.File(tmp_path / 'dagnn.mat', 'w') as f:  # DagNN: net.layers is a struct array (a group of fields)
        f.create_group('net/layers')['name'] = np.zeros((1, 3))
    with h5py.File(tmp_path / 'numbers.mat', 'w') as f:  # net.layers is a numeric matrix
        f['net/layers'] = np.zeros((3, 1))
    for name in ('dagnn.mat', 'numbers.mat'):
        with pytest.raises(SystemExit) as err:
            peer_weights.main(['--mat', str(tmp_path / name), '--arch', 'DnCNN', '--out', str(tmp_path / 'w.pth')])
        lines = capsys.readouterr().err.strip().splitlines()
        assert err.value.code == 2 and len(lines) == 1 and 'not a MatConvNet SimpleNN model file' in lines[0], lines
    assert not (tmp_path / 'w.pth').exists()


@pytest.fixture
def peers(shared_dir):
    folder = shared_dir / 'weights' / 'peers'
    if not (folder / 'DnCNN_gray_sigma25.mat').is_file():
        pytest.skip(f'published peer weights not found in {folder}')
    return folder


@pytest.mark.parametrize('mat, arch, n_conv, feat, ch', [
    ('DnCNN_gray_sigma25.mat', 'DnCNN', 17, 64, 1),
    ('FFDNet_gray.mat', 'FFDNet', 15, 64, 1),
    ('FFDNet_color.mat', 'FFDNet', 12, 96, 3),
])
def test_importer_reads_published_files(peers, mat, arch, n_conv, feat, ch):
    net, opt, state = peer_weights.import_mat(str(peers / mat), arch)
    assert (opt['num_conv'], opt['num_feat'], opt['num_in_ch']) == (n_conv, feat, ch)
    assert len(state) == 2 * n_conv
    assert all(torch.isfinite(v).all() for v in state.values())


def test_importer_cli_refuses_wrong_arch_and_overwrite(peers, tmp_path, capsys):
    out = tmp_path / 'w.pth'
    with pytest.raises(SystemExit) as err:
        peer_weights.main(['--mat', str(peers / 'DnCNN_gray_sigma25.mat'), '--arch', 'FFDNet', '--out', str(out)])
    assert err.value.code == 2 and '--arch DnCNN' in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit):
        peer_weights.main(['--mat', str(tmp_path / 'missing.mat'), '--arch', 'DnCNN', '--out', str(out)])
    assert 'does not exist' in capsys.readouterr().err
    assert peer_weights.main(['--mat', str(peers / 'DnCNN_gray_sigma25.mat'), '--arch', 'DnCNN',
                              '--out', str(out)]) == 0
    stamp = out.stat().st_mtime_ns
    with pytest.raises(SystemExit):
        peer_weights.main(['--mat', str(peers / 'DnCNN_gray_sigma25.mat'), '--arch', 'DnCNN', '--out', str(out)])
    assert '--force' in capsys.readouterr().err and out.stat().st_mtime_ns == stamp
    ckpt = torch.load(out, weights_only=True)
    assert set(ckpt) == {'params'}
    DnCNN().load_state_dict(ckpt['params'], strict=True)


BSD68_SCORES = REPO / 'docs' / 'peer_results' / 'bsd68_s25' / 'per_image.csv'  # the full-set run (comparing.md)
PUBLISHED_BSD68 = {'DnCNN': 29.23, 'FFDNet': 29.19}  # sigma 25, gray (the papers' tables)
RECHECKED_IMAGES = 4  # the slow test's basicsr test runs BSD68's first four images


def bsd68_scores(model):
    """{image: PSNR} of ``model`` in the committed per-image scores of the full BSD68 run at sigma 25."""
    import csv
    with open(BSD68_SCORES, newline='') as f:
        return {r['image']: float(r['psnr']) for r in csv.DictReader(f) if r['model'] == model}


@pytest.mark.parametrize('model', PUBLISHED_BSD68)
def test_the_committed_bsd68_scores_average_to_the_published_numbers(model):
    """The imported weights reproduce the published BSD68 PSNR: the mean of the committed per-image scores of the
    full-set run (its command: docs/comparing.md), whose values the slow test below recomputes in part."""
    scores = bsd68_scores(model)
    assert len(scores) == 68 and abs(sum(scores.values()) / 68 - PUBLISHED_BSD68[model]) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize('mat, arch, option', [('DnCNN_gray_sigma25.mat', 'DnCNN', 'test_dncnn_gray_sigma25.yml'),
                                               ('FFDNet_gray.mat', 'FFDNet', 'test_ffdnet_gray_sigma25.yml')])
def test_imported_weights_reproduce_the_bsd68_scores_through_basicsr_test(shared_dir, peers, tmp_path, basicsr_cli,
                                                                         mat, arch, option):
    """Import the published .mat, run the shipped option file through ``basicsr test`` on BSD68's first images (the
    same noise as in the full set: the noise of image k depends on k) and match the committed per-image scores."""
    pth = tmp_path / 'peer.pth'
    assert peer_weights.main(['--mat', str(peers / mat), '--arch', arch, '--out', str(pth)]) == 0
    images = sorted((shared_dir / 'datasets' / 'test' / 'BSD68').glob('*.png'))[:RECHECKED_IMAGES]
    (tmp_path / 'bsd68').mkdir()
    for image in images:
        shutil.copy(image, tmp_path / 'bsd68' / image.name)
    opt = yaml.safe_load((REPO / 'options' / option).read_text())
    opt['datasets']['test_1']['dataroot_gt'] = str(tmp_path / 'bsd68')
    opt['path']['pretrain_network_g'] = str(pth)
    opt['val']['metrics'].pop('ssim')  # the published check is PSNR
    yml = tmp_path / option
    yml.write_text(yaml.safe_dump(opt))
    log = basicsr_cli('test', '-opt', yml, '--root', tmp_path, cwd=tmp_path).stdout
    found = re.findall(r'# psnr: ([0-9.]+)', log)
    assert found, log[-3000:]
    expected = bsd68_scores(arch)
    assert abs(float(found[-1]) - sum(expected[i.name] for i in images) / len(images)) <= 1e-3, (found, expected)


def test_basicsr_test_warns_when_ffdnet_is_told_another_sigma_than_the_data_has(pairs, tmp_path, basicsr_cli):
    """A noise level told to FFDNet other than the one the dataset adds is allowed (it can be the experiment) but
    warned about; equal levels are not."""
    from mdrn_models.integration.option_checks import noise_level_mismatches
    pth = tmp_path / 'ffdnet.pth'
    torch.save({'params': FFDNet().state_dict()}, pth)
    opt = yaml.safe_load((REPO / 'options' / 'test_ffdnet_gray_sigma25.yml').read_text())
    opt['datasets']['test_1'].update(dataroot_gt=str(pairs / 'gt'), sigma=50)
    opt['path']['pretrain_network_g'] = str(pth)
    yml = tmp_path / 'ffdnet.yml'
    yml.write_text(yaml.safe_dump(opt))
    log = basicsr_cli('test', '-opt', yml, '--root', tmp_path, cwd=tmp_path).stdout
    assert 'warning: datasets.test_1.sigma 50 differs from network_g.sigma 25' in log and '# psnr:' in log
    opt['datasets']['test_1']['sigma'] = 25
    assert noise_level_mismatches(opt) == []

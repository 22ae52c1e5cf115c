"""``basicsr denoise`` on a tiny MDRN: the real command in a subprocess, its outputs, and its one-line errors."""
import textwrap

import cv2
import numpy as np
import pytest
import torch

from conftest import declared_png
from mdrn_arch import FFDNet, MDRN
from basicsr.utils import tensor2img
from mdrn_models.tools.denoise import read_image


def denoise(net, img, add_noise=None, seed=0):
    """The reference: ``net`` on a uint8 HxWx1 image (plus the AWGN ``basicsr denoise --add_noise`` draws, not
    clipped) -> (noisy input, 8-bit output), written out here rather than taken from the tool."""
    x = torch.from_numpy(img.astype(np.float32) / 255.).permute(2, 0, 1)[None]
    if add_noise:
        x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * add_noise / 255.
    with torch.no_grad():
        y = net(x)
    return tensor2img(x.clamp(0, 1)), tensor2img(y)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A gray and a color image, and a tiny gray MDRN and FFDNet (option file + params-only checkpoint)."""
    root = tmp_path_factory.mktemp('denoise')
    (root / 'imgs').mkdir()
    yy, xx = np.mgrid[:37, :29]
    gray = (127 + 90 * np.sin(xx / 3) * np.cos(yy / 4)).astype(np.uint8)
    cv2.imwrite(str(root / 'imgs' / 'a.png'), gray)
    cv2.imwrite(str(root / 'imgs' / 'b.jpg'), np.dstack([gray, gray[::-1], gray[:, ::-1]]))
    torch.manual_seed(0)
    torch.save({'params': MDRN(num_feat=8, num_block=1, num_level=2).state_dict()}, root / 'mdrn.pth')
    (root / 'mdrn.yml').write_text(textwrap.dedent(f"""
        network_g: {{type: MDRN, num_in_ch: 1, num_out_ch: 1, num_feat: 8, num_block: 1, num_level: 2}}
        path: {{pretrain_network_g: {root / 'mdrn.pth'}, param_key_g: params, strict_load_g: true}}
        """))
    torch.save({'params': FFDNet(num_feat=8, num_conv=3).state_dict()}, root / 'ffdnet.pth')
    (root / 'ffdnet15.yml').write_text(textwrap.dedent(f"""
        network_g: {{type: FFDNet, num_in_ch: 1, num_out_ch: 1, num_feat: 8, num_conv: 3, sigma: 15}}
        path: {{pretrain_network_g: {root / 'ffdnet.pth'}}}
        """))
    return root


def test_denoises_one_image_and_matches_the_network(tiny, basicsr_cli, tmp_path):
    out = tmp_path / 'out.png'
    basicsr_cli('denoise', '-opt', tiny / 'mdrn.yml', '-i', tiny / 'imgs' / 'a.png', '-o', out, cwd=tmp_path)
    got = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    net = MDRN(num_feat=8, num_block=1, num_level=2)
    net.load_state_dict(torch.load(tiny / 'mdrn.pth')['params'])
    _, expected = denoise(net.eval(), read_image(str(tiny / 'imgs' / 'a.png'), 1))
    assert got.shape == (37, 29) and np.array_equal(got, expected)


def test_folder_add_noise_and_tiles(tiny, basicsr_cli, tmp_path):
    basicsr_cli('denoise', '-opt', tiny / 'mdrn.yml', '-i', tiny / 'imgs', '-o', tmp_path / 'full', '--add_noise',
                25, cwd=tmp_path)
    basicsr_cli('denoise', '-opt', tiny / 'mdrn.yml', '-i', tiny / 'imgs', '-o', tmp_path / 'tiled', '--add_noise',
                25, '--tile', 16, cwd=tmp_path)
    names = sorted(p.name for p in (tmp_path / 'full').iterdir())
    assert names == ['a.png', 'a_noisy.png', 'b.png', 'b_noisy.png']  # color input read as gray for a gray model
    noisy = cv2.imread(str(tmp_path / 'full' / 'a_noisy.png'), 0).astype(float)
    clean = cv2.imread(str(tiny / 'imgs' / 'a.png'), 0).astype(float)
    assert 15 < np.std(noisy - clean) < 30  # sigma 25, clipped to [0, 255] for the saved copy
    for name in names:  # tiles with 32 px of context reproduce the whole-image result (8-bit rounding aside)
        a = cv2.imread(str(tmp_path / 'full' / name), 0).astype(int)
        b = cv2.imread(str(tmp_path / 'tiled' / name), 0).astype(int)
        assert np.abs(a - b).max() <= 1


@pytest.mark.bad_input
@pytest.mark.parametrize('args, message', [
    (['-i', 'missing.png', '-o', 'o.png'], 'input not found: missing.png'),
    (['-i', '{imgs}/a.png', '-o', 'o.txt'], 'cannot write o.txt: use an image extension such as .png, or end -o'),
    (['-i', '{imgs}/a.png', '-o', 'o.png', '--tile', '30'], '--tile must be a positive multiple of 8'),
    (['-i', '{imgs}/a.png', '-o', 'o.png', '--add_noise', '0'], '--add_noise must lie in [1, 255]'),
    (['-i', '{imgs}/a.png', '-o', 'o.png', '--add_noise', 'nan'], '--add_noise must lie in [1, 255]'),  # black
    (['-i', '{imgs}/a.png', '-o', 'o.png', '--add_noise', 'inf'], '--add_noise must lie in [1, 255]'),
    (['-i', '{imgs}/a.png', '-o', 'o.png', '--add_noise', '300'], '--add_noise must lie in [1, 255]'),
    (['-i', '{imgs}/a.png', '-o', 'o.png', '--add_noise', '0.1'], 'is below 1 on the 0..255 pixel scale'),
    (['-i', '{imgs}/a.png', '-o', 'o.png', '--sigma', '25'], '--sigma is for networks with a noise-level input'),
    (['-i', 'mixed/a.png', '-o', 'mixed/a.png', '--force'], 'output mixed/a.png is the input mixed/a.png itself'),
    (['-i', 'mixed', '-o', 'o.png/'], 'cannot read mixed/z.png as an image: remove or fix it'),  # nothing written
    (['-i', '{imgs}', '-o', 'o.png'], 'so -o must be a folder, but o.png names an image file: give a folder, e.g. o/'),
    (['-i', '{imgs}/a.png', '-o', 'exists.png'], 'exists.png exists (1 output(s) in all); pass --force'),
    (['-i', '{imgs}', '-o', 'exists.png'], 'so -o must be a folder'),
])
def test_bad_input_is_one_line_before_compute(tiny, basicsr_cli, tmp_path, args, message):
    (tmp_path / 'exists.png').write_bytes(b'mine')
    (tmp_path / 'mixed').mkdir()  # a good image, then an undecodable one
    (tmp_path / 'mixed' / 'a.png').write_bytes((tiny / 'imgs' / 'a.png').read_bytes())
    (tmp_path / 'mixed' / 'z.png').write_bytes(b'not an image')
    proc = basicsr_cli('denoise', '-opt', tiny / 'mdrn.yml', *[a.format(imgs=tiny / 'imgs') for a in args],
                       cwd=tmp_path, check=False)
    assert proc.returncode != 0
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('basicsr denoise: error: ') and message in lines[0], lines
    assert (tmp_path / 'exists.png').read_bytes() == b'mine'
    assert (tmp_path / 'mixed' / 'a.png').read_bytes() == (tiny / 'imgs' / 'a.png').read_bytes()
    assert not (tmp_path / 'o.png').exists()


def test_folder_with_upper_case_extensions_and_clashing_names(tiny, basicsr_cli, tmp_path):
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'IMG.PNG').write_bytes((tiny / 'imgs' / 'a.png').read_bytes())
    basicsr_cli('denoise', '-opt', tiny / 'mdrn.yml', '-i', tmp_path / 'in', '-o', tmp_path / 'out', cwd=tmp_path)
    assert cv2.imread(str(tmp_path / 'out' / 'IMG.png'), 0).shape == (37, 29)
    (tmp_path / 'in' / 'IMG.jpg').write_bytes((tiny / 'imgs' / 'b.jpg').read_bytes())  # would also be IMG.png
    proc = basicsr_cli('denoise', '-opt', tiny / 'mdrn.yml', '-i', tmp_path / 'in', '-o', tmp_path / 'out2',
                       cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'would both be written to' in proc.stdout and not (tmp_path / 'out2').exists()


@pytest.mark.bad_input
def test_add_noise_copy_and_another_input_never_share_an_output(tiny, basicsr_cli, tmp_path):
    # x.png's noisy copy is out/x_noisy.png, the result of the input x_noisy.png too: one would replace the other
    (tmp_path / 'in').mkdir()
    for name in ('x.png', 'x_noisy.png'):
        (tmp_path / 'in' / name).write_bytes((tiny / 'imgs' / 'a.png').read_bytes())
    proc = basicsr_cli('denoise', '-opt', tiny / 'mdrn.yml', '-i', tmp_path / 'in', '-o', tmp_path / 'out',
                       '--add_noise', 25, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and not (tmp_path / 'out').exists()
    assert proc.stdout.strip().endswith('x.png and ' + str(tmp_path / 'in' / 'x_noisy.png') + ' would both be '
                                        'written to ' + str(tmp_path / 'out' / 'x_noisy.png') + ': rename one of them')


@pytest.mark.bad_input
def test_refuses_an_option_file_without_weights(tiny, basicsr_cli, tmp_path):
    yml = tmp_path / 'noweights.yml'
    yml.write_text((tiny / 'mdrn.yml').read_text().split('path:')[0])
    proc = basicsr_cli('denoise', '-opt', yml, '-i', tiny / 'imgs' / 'a.png', '-o', tmp_path / 'o.png', cwd=tmp_path,
                       check=False)
    assert proc.returncode != 0 and 'has no path.pretrain_network_g: a randomly initialised network does not ' \
        'denoise' in proc.stdout and not (tmp_path / 'o.png').exists()


def test_force_overwrites(tiny, basicsr_cli, tmp_path):
    (tmp_path / 'o.png').write_bytes(b'mine')
    basicsr_cli('denoise', '-opt', tiny / 'mdrn.yml', '-i', tiny / 'imgs' / 'a.png', '-o', tmp_path / 'o.png',
                '--force', cwd=tmp_path)
    assert cv2.imread(str(tmp_path / 'o.png'), 0).shape == (37, 29)


def test_trailing_slash_names_a_new_folder(tiny, basicsr_cli, tmp_path):
    basicsr_cli('denoise', '-opt', tiny / 'mdrn.yml', '-i', tiny / 'imgs' / 'a.png', '-o', 'new/dir/', cwd=tmp_path)
    assert cv2.imread(str(tmp_path / 'new' / 'dir' / 'a.png'), 0).shape == (37, 29)


def _ffdnet_output(tiny, sigma, add_noise=None):
    net = FFDNet(num_feat=8, num_conv=3, sigma=sigma)
    net.load_state_dict(torch.load(tiny / 'ffdnet.pth')['params'])
    return denoise(net.eval(), read_image(str(tiny / 'imgs' / 'a.png'), 1), add_noise)[1]


def test_ffdnet_is_told_sigma_then_add_noise_then_its_option_file(tiny, basicsr_cli, tmp_path):
    a = tiny / 'imgs' / 'a.png'
    proc = basicsr_cli('denoise', '-opt', tiny / 'ffdnet.pth', '-i', a, '-o', 'o.png', cwd=tmp_path, check=False)
    assert proc.returncode != 0 and not (tmp_path / 'o.png').exists()
    assert proc.stdout.strip().endswith('bare FFDNet checkpoint with a noise-level input: pass --sigma SIGMA, '
                                        'the noise level of your images (0-255 scale, e.g. 25)'), proc.stdout
    basicsr_cli('denoise', '-opt', tiny / 'ffdnet.pth', '-i', a, '-o', 'bare50.png', '--sigma', 50, cwd=tmp_path)
    assert np.array_equal(cv2.imread(str(tmp_path / 'bare50.png'), 0), _ffdnet_output(tiny, 50))
    basicsr_cli('denoise', '-opt', tiny / 'ffdnet15.yml', '-i', a, '-o', 'yml.png', '--add_noise', 50, cwd=tmp_path)
    assert np.array_equal(cv2.imread(str(tmp_path / 'yml.png'), 0), _ffdnet_output(tiny, 50, add_noise=50))
    assert not np.array_equal(_ffdnet_output(tiny, 15, add_noise=50), _ffdnet_output(tiny, 50, add_noise=50))


@pytest.mark.bad_input
def test_an_image_declaring_enormous_dimensions_is_refused_from_its_header(tiny, tmp_path, capsys):
    """A 30000x30000 PNG in a small file: one line before anything is decoded or written; --max-megapixels raises
    the bound (the same file is then decoded, and is refused as cut short)."""
    from mdrn_models.tools import denoise as tool
    (tmp_path / 'in').mkdir()
    declared_png(tmp_path / 'in' / 'bomb.png', 30000, 30000)
    argv = ['-opt', str(tiny / 'mdrn.yml'), '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out') + '/']
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert str(exc.value) == (f'basicsr denoise: error: {tmp_path / "in" / "bomb.png"} declares 30000x30000 pixels '
                              '(900 MP), more than the 100 MP one image may have here (about 13 GB as a float colour '
                              'tensor): pass --max-megapixels N if this machine has the memory, or split the image '
                              '(nothing was written)')
    with pytest.raises(SystemExit, match=r'cannot read .*bomb.png as an image'):
        tool.main([*argv, '--max-megapixels', '1000'])
    assert not (tmp_path / 'out').exists()


@pytest.mark.bad_input
def test_a_val_folder_with_an_enormous_image_is_one_line(tmp_path):
    from mdrn_models.data.awgn_dataset import AWGNDenoisingDataset
    cv2.imwrite(str(tmp_path / 'a.png'), np.zeros((16, 16), np.uint8))
    declared_png(tmp_path / 'b.png', 20000, 10000)
    opt = {'phase': 'val', 'dataroot_gt': str(tmp_path), 'sigma': 25, 'channels': 1, 'io_backend': {'type': 'disk'}}
    with pytest.raises(ValueError, match=r'b.png declares 20000x10000 pixels \(200 MP\), more than the 100 MP one '
                                         r'image may have here .*: raise max_pixels \(the dataset option; '
                                         r'--max-megapixels of basicsr compare\) if'):
        AWGNDenoisingDataset(opt)
    assert len(AWGNDenoisingDataset({**opt, 'max_pixels': 3e8})) == 2  # raised: the header passes (PIL's own 179 MP
    # limit too), and the image is read, and found cut short, when the validation reaches it


@pytest.mark.bad_input
def test_a_full_disk_while_writing_is_one_line(tiny, tmp_path):
    """The file-size limit of the process stands in for a full disk (the same OSError path): one line naming the
    file and the cause, no partial file, the count of images written before it."""
    import os
    import resource
    import subprocess
    import sys
    from conftest import REPO
    (tmp_path / 'in').mkdir()
    big = (np.arange(300 * 300) % 251).reshape(300, 300).astype(np.uint8)  # a PNG of tens of kB
    cv2.imwrite(str(tmp_path / 'in' / 'big.png'), big)
    proc = subprocess.run(
        [sys.executable, '-m', 'mdrn_cli', 'denoise', '-opt', str(tiny / 'mdrn.yml'), '-i',
         str(tmp_path / 'in'), '-o', str(tmp_path / 'out') + '/'],
        env={**os.environ, 'PYTHONPATH': str(REPO), 'CUDA_VISIBLE_DEVICES': ''}, cwd=tmp_path, capture_output=True,
        text=True, timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f'basicsr denoise: error: cannot write {tmp_path / "out" / "big.png"}: File too large; 0 of 1 image(s) '
        'written before it (free space or choose another -o, then rerun with --force)')
    assert os.listdir(tmp_path / 'out') == []


@pytest.mark.bad_input
@pytest.mark.parametrize('signame', ['SIGINT', 'SIGTERM'])
def test_ctrl_c_or_sigterm_in_a_tool_is_one_line(tiny, tmp_path, monkeypatch, capsys, signame):
    import os
    import signal
    import mdrn_cli
    from mdrn_models.tools.denoiser import Denoiser

    def stopped(*args, **kwargs):
        if signame == 'SIGINT':
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(Denoiser, 'run', stopped)  # the network's run on the first image
    with pytest.raises(SystemExit) as exc:
        mdrn_cli.main(['denoise', '-opt', str(tiny / 'mdrn.yml'), '-i', str(tiny / 'imgs'), '-o', str(tmp_path / 'o')])
    assert exc.value.code == 128 + signal.Signals[signame]
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f'basicsr denoise: stopped by {signame}; run the command again to finish (outputs it wrote before may need '
        '--force)')
    assert signal.getsignal(signal.SIGTERM) is not mdrn_cli.sigterm_as_interrupt

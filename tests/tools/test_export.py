"""``basicsr export`` (``mdrn_models.tools.export``) and the benchmark's onnxruntime mode, on tiny networks: the exported
files match PyTorch at other sizes than the traced one, FFDNet's noise level stays an input, and every refusal is one
line that leaves no file behind."""
import re
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch

from mdrn_arch import MDRN, DnCNN, FFDNet
from mdrn_models.tools import export

NETS = {  # name -> (network, its network_g options)
    'MDRN': (MDRN, dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_level=2)),
    'MDRN-2B': (MDRN, dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=2, num_level=3)),  # MDRN-2B's shape
    'DnCNN': (DnCNN, dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=4)),
    'FFDNet': (FFDNet, dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=4, sigma=15)),
}


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """name -> option file of each tiny net (random weights in a checkpoint beside it), plus 'color' (a 3-channel
    MDRN) and 'dataset' (the MDRN with a test set on disk: one 120x140 gray image, sigma 30, noise_seed 3)."""
    root = tmp_path_factory.mktemp('export')
    files = {}
    torch.manual_seed(0)
    for name, (cls, net_opt) in {**NETS, 'color': (MDRN, dict(NETS['MDRN'][1], num_in_ch=3, num_out_ch=3))}.items():
        ckpt = root / f'{name}.pth'
        torch.save({'params': cls(**net_opt).state_dict()}, ckpt)
        opts = ', '.join(f'{k}: {v}' for k, v in net_opt.items())
        files[name] = root / f'{name}.yml'
        files[name].write_text(f'network_g: {{type: {cls.__name__}, {opts}}}\n'
                               f'path: {{pretrain_network_g: {ckpt}, strict_load_g: true}}\n')
    (root / 'set').mkdir()
    yy, xx = np.mgrid[:120, :140]
    cv2.imwrite(str(root / 'set' / 'a.png'), (127 + 90 * np.sin(xx / 5) * np.cos(yy / 7)).astype(np.uint8))
    files['dataset'] = root / 'dataset.yml'
    files['dataset'].write_text(files['MDRN'].read_text() + textwrap.dedent(f"""
        datasets:
          test_1: {{name: set, type: AWGNDenoisingDataset, dataroot_gt: {root / 'set'}, io_backend: {{type: disk}},
                   channels: 1, sigma: 30, noise_seed: 3}}
        """))
    return files


def build(option_file):
    net, _, _ = export.build_model(str(option_file))
    return net


def reported(text):
    """[(size, max abs diff, PSNR difference)] of the check lines the command printed."""
    return [(size, float(diff), float(delta)) for size, diff, delta in
            re.findall(r'(\d+x\d+): max \|[\w.]+ - PyTorch\| = (\S+);.*difference (\S+) dB', text)]


@pytest.mark.parametrize('name', list(NETS))
def test_onnx_round_trip_matches_pytorch_at_other_sizes(models, tmp_path, capsys, name):
    """The ONNX file passes the command's own check, then runs at two more sizes and batch 2 (dynamic axes) as the
    PyTorch network does; FFDNet's noise level is an input of the file (here another level than network_g's)."""
    ort = pytest.importorskip('onnxruntime')
    out = tmp_path / 'model.onnx'
    assert export.main(['-opt', str(models[name]), '-o', str(out)]) == 0
    text = capsys.readouterr().out
    checks = reported(text)
    assert [size for size, _, _ in checks] == ['250x190', '96x128']  # the camera crops
    assert all(diff <= export.MAX_ABS_DIFF and abs(delta) <= export.MAX_PSNR_DIFF for _, diff, delta in checks)
    assert 'scikit-image camera' in text and f'wrote {out}' in text
    net = build(models[name])
    sess = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert [i.name for i in sess.get_inputs()] == (['input', 'sigma'] if name == 'FFDNet' else ['input'])
    for shape in ((2, 1, 33, 47), (1, 1, 64, 40)):
        x = torch.rand(shape)
        feed = {'input': x.numpy()}
        with torch.no_grad():
            if name == 'FFDNet':
                feed['sigma'] = np.array([40.], np.float32)
                ref = net(x, sigma=40.)
            else:
                ref = net(x)
        got = sess.run(None, feed)[0]
        assert got.shape == tuple(shape) and np.abs(got - ref.numpy()).max() < 1e-5


@pytest.mark.parametrize('name, suffix', [('MDRN', '.pt'), ('FFDNet', '.ts')])
def test_torchscript_round_trip(models, tmp_path, capsys, name, suffix):
    """.pt / .ts mean TorchScript; the traced file holds for sizes other than the traced one (odd ones included)."""
    out = tmp_path / f'model{suffix}'
    assert export.main(['-opt', str(models[name]), '-o', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'TorchScript' in text and len(reported(text)) == 2
    with export.quiet():  # torch.jit.load's deprecation notice
        net, loaded = build(models[name]), torch.jit.load(str(out))
    for shape in ((1, 1, 31, 29), (2, 1, 48, 64)):
        x = torch.rand(shape)
        with torch.no_grad():
            if name == 'FFDNet':
                ref, got = net(x, sigma=50.), loaded(x, torch.tensor([50.]))
            else:
                ref, got = net(x), loaded(x)
        assert got.shape == x.shape and (got - ref).abs().max() < 1e-5


def test_check_uses_the_option_files_test_set_and_noise(models, tmp_path, capsys):
    """No --image: the first image of the first test set, its sigma and noise_seed; the image is smaller than the
    250x190 crop, so the check runs on the whole image and a 96x128 crop. --image and --sigma override them; a
    3-channel network gets scikit-image's astronaut."""
    pytest.importorskip('onnxruntime')
    assert export.main(['-opt', str(models['dataset']), '-o', str(tmp_path / 'a.onnx')]) == 0
    text = capsys.readouterr().out
    assert 'set/a.png' in text and 'AWGN sigma 30 (noise seed 3)' in text
    assert [size for size, _, _ in reported(text)] == ['120x140', '96x128']
    image = tmp_path / 'photo.png'
    cv2.imwrite(str(image), np.full((80, 70, 3), 100, np.uint8))
    assert export.main(['-opt', str(models['dataset']), '-o', str(tmp_path / 'b.onnx'), '--image', str(image),
                        '--sigma', '10']) == 0
    text = capsys.readouterr().out
    assert f'check: {image}' in text and 'AWGN sigma 10' in text
    assert [size for size, _, _ in reported(text)] == ['80x70', '60x52']
    assert export.main(['-opt', str(models['color']), '-o', str(tmp_path / 'c.onnx')]) == 0
    text = capsys.readouterr().out
    assert 'scikit-image astronaut' in text and '[batch, 3, height, width], 0..1 RGB' in text


def one_line_error(capsys, argv):
    with pytest.raises(SystemExit) as err:
        export.main(argv)
    msg = str(err.value.code)
    assert err.value.code != 0 and msg.startswith('basicsr export: error: ') and '\n' not in msg
    return msg


def test_refusals_are_one_line_and_write_nothing(models, tmp_path, capsys, monkeypatch):
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'earlier')
    assert '--force' in one_line_error(capsys, ['-opt', str(models['DnCNN']), '-o', str(out)])
    assert out.read_bytes() == b'earlier'
    assert 'end -o with .onnx' in one_line_error(capsys, ['-opt', str(models['DnCNN']), '-o', str(tmp_path / 'm.x')])
    assert 'is a folder' in one_line_error(capsys, ['-opt', str(models['DnCNN']), '-o', str(tmp_path)])
    assert 'does not exist' in one_line_error(capsys, ['-opt', str(models['DnCNN']), '-o',
                                                       str(tmp_path / 'missing' / 'm.onnx')])
    assert 'missing.yml' in one_line_error(capsys, ['-opt', str(tmp_path / 'missing.yml'), '-o',
                                                    str(tmp_path / 'm.pt')])
    assert '--image' in one_line_error(capsys, ['-opt', str(models['DnCNN']), '-o', str(tmp_path / 'm.pt'),
                                                '--image', str(tmp_path / 'nope.png')])
    assert '--sigma' in one_line_error(capsys, ['-opt', str(models['DnCNN']), '-o', str(tmp_path / 'm.pt'),
                                                '--sigma', '0.1'])
    assert 'between 11 and 20' in one_line_error(capsys, ['-opt', str(models['DnCNN']), '-o', str(tmp_path / 'm.onnx'),
                                                         '--opset', '21'])
    # onnxruntime missing (None in sys.modules makes its import fail): the install command, before the model is built
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    monkeypatch.setattr(export, 'build_model', lambda *a: pytest.fail('built the model before refusing'))
    msg = one_line_error(capsys, ['-opt', str(models['DnCNN']), '-o', str(tmp_path / 'new.onnx')])
    assert 'pip install -e ".[export]"' in msg and 'onnxruntime is not installed' in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.onnx']


@pytest.mark.parametrize('fmt', ['onnx', 'torchscript'])
def test_a_file_that_does_not_match_pytorch_is_not_left(models, tmp_path, capsys, monkeypatch, fmt):
    """An exported model whose outputs are 1e-3 off fails the check: non-zero exit, one line, no file (nor temporary
    file) left, and the earlier file that --force would have replaced is kept."""
    if fmt == 'onnx':
        pytest.importorskip('onnxruntime')
    load = export.load_exported

    def off(path, fmt, threads=None):
        run = load(path, fmt, threads)
        return lambda x, sigma=None: run(x, sigma) + 1e-3
    monkeypatch.setattr(export, 'load_exported', off)
    new, old = tmp_path / 'new.bin', tmp_path / 'old.bin'
    old.write_bytes(b'earlier')
    for out, extra in ((new, []), (old, ['--force'])):
        msg = one_line_error(capsys, ['-opt', str(models['MDRN']), '-o', str(out), '--format', fmt] + extra)
        assert 'does not match PyTorch at 250x190' in msg and 'nothing was written' in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ['old.bin'] and old.read_bytes() == b'earlier'
    monkeypatch.setattr(export, 'load_exported', load)
    assert export.main(['-opt', str(models['MDRN']), '-o', str(old), '--format', fmt, '--force']) == 0  # replaced
    assert old.read_bytes() != b'earlier' and sorted(p.name for p in tmp_path.iterdir()) == ['old.bin']


def test_benchmark_onnxruntime_mode(models, capsys, monkeypatch):
    """Mode onnxruntime times each model's ONNX export in onnxruntime next to the PyTorch modes (FFDNet fed its
    sigma, an option file's network as loaded); without onnxruntime it is refused in one line before any compute."""
    pytest.importorskip('onnxruntime')
    from mdrn_models.tools import benchmark
    measured, bench_inference = [], benchmark.bench_inference
    monkeypatch.setattr(benchmark, 'bench_inference',
                        lambda *a, **kw: measured.extend(bench_inference(*a, **kw)) or measured)
    assert benchmark.main(['--sizes', '24', '32', '--models', 'FFDNet', f'Tiny={models["MDRN-2B"]}', '--modes',
                           'fp32', 'onnxruntime', '--repeats', '1']) == 0
    text = capsys.readouterr().out
    rows = {(r['model'], r['mode'], r['size']): r for r in measured}
    assert len(rows) == 8
    for (name, mode, size), r in rows.items():
        assert r['lat'] > 0 and (r['peak'] is None) == (mode == 'onnxruntime')
    assert rows['Tiny', 'onnxruntime', 32]['macs'] == rows['Tiny', 'fp32', 32]['macs'] > 0
    assert re.search(r'\| Tiny \| 0\.\d+ \| \d+ \| onnxruntime \| 32² \| .* \| — \|', text)
    assert 'onnxruntime: the ONNX export (opset 17) in onnxruntime' in text

    def never(*args):
        raise AssertionError('measured before refusing the options')
    monkeypatch.setattr(benchmark, 'bench_inference', never)
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(SystemExit) as err:
        benchmark.main(['--sizes', '32', '--models', 'DnCNN', '--modes', 'fp32', 'onnxruntime'])
    msg = capsys.readouterr().err.strip()
    assert err.value.code == 2 and 'pip install -e ".[export]"' in msg and '\n' not in msg

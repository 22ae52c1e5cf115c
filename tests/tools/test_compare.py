"""The compare command on tiny models and images: outputs, consistency with the noisy input and with ``basicsr test``."""
import csv
import math
import re
import textwrap

import cv2
import numpy as np
import pytest
import torch

from mdrn_arch import MDRN, DnCNN
from mdrn_models.tools import compare, compare_figures, model_loading
from mdrn_models.models.denoise_model import eval_forward


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """Two small gray images, an identity DnCNN checkpoint, a tiny MDRN checkpoint + option file, a tiny FFDNet yml."""
    root = tmp_path_factory.mktemp('cmp')
    (root / 'imgs').mkdir()
    yy, xx = np.mgrid[:24, :20]
    cv2.imwrite(str(root / 'imgs' / 'a.png'), (127 + 90 * np.sin(xx / 3) * np.cos(yy / 4)).astype(np.uint8))
    cv2.imwrite(str(root / 'imgs' / 'b.png'), (40 + 8 * xx + 2 * yy).clip(0, 255).astype(np.uint8)[:17])
    torch.manual_seed(0)
    ident = DnCNN(num_feat=4, num_conv=3)
    torch.nn.init.zeros_(ident.body[-1].weight)
    torch.nn.init.zeros_(ident.body[-1].bias)
    torch.save({'params': ident.state_dict()}, root / 'identity.pth')
    mdrn = MDRN(num_feat=4, num_block=1, num_level=2)
    torch.save({'params': mdrn.state_dict()}, root / 'mdrn.pth')
    (root / 'mdrn.yml').write_text(textwrap.dedent(f"""
        name: tiny_mdrn
        model_type: SRModel
        scale: 1
        num_gpu: 0
        manual_seed: 0
        datasets:
          test_1:
            name: tiny
            type: AWGNDenoisingDataset
            dataroot_gt: {root / 'imgs'}
            io_backend: {{type: disk}}
            channels: 1
            sigma: 25
            noise_seed: 0
        network_g: {{type: MDRN, num_in_ch: 1, num_out_ch: 1, num_feat: 4, num_block: 1, num_level: 2}}
        path:
          pretrain_network_g: {root / 'mdrn.pth'}
          param_key_g: params
          strict_load_g: true
        val:
          save_img: false
          suffix: ~
          metrics:
            psnr: {{type: calculate_psnr, crop_border: 0, test_y_channel: false}}
        """))
    (root / 'ffdnet.yml').write_text('network_g: {type: FFDNet, num_in_ch: 1, num_out_ch: 1, num_feat: 4, '
                                     'num_conv: 3, sigma: 5}\n')
    (root / 'typo.yml').write_text('network_g: {type: MDRN, num_blocks: 1}\n')
    (root / 'typo_type.yml').write_text('network_g: {type: MDRNN, num_block: 1}\n')
    # RIDNet's mean shift is RGB only: its constructor fails on a gray mean, its forward on a gray image
    (root / 'ridnet_gray.yml').write_text('network_g: {type: RIDNet, in_channels: 1, mid_channels: 4, '
                                          'out_channels: 1, num_block: 1, rgb_mean: [0.5], rgb_std: [1.0]}\n')
    (root / 'ridnet_gray_default.yml').write_text('network_g: {type: RIDNet, in_channels: 1, mid_channels: 4, '
                                                  'out_channels: 1, num_block: 1}\n')
    # weights of another network, strictly and non-strictly loaded (BasicSR: a traceback / a random net, silently)
    wrong = (root / 'mdrn.yml').read_text().replace(str(root / 'mdrn.pth'), str(root / 'identity.pth'))
    (root / 'wrong.yml').write_text(wrong)
    (root / 'nonstrict.yml').write_text(wrong.replace('strict_load_g: true', 'strict_load_g: false'))
    # param_key_g: ~ makes BasicSR read the whole file as the state dict (here {'params': ...}: a traceback)
    (root / 'nokey.yml').write_text((root / 'mdrn.yml').read_text().replace('param_key_g: params', 'param_key_g: ~'))
    (root / 'badset').mkdir()
    cv2.imwrite(str(root / 'badset' / 'a.png'), np.zeros((16, 16), np.uint8))
    (root / 'badset' / 'bad.png').write_bytes(b'not a png at all')
    (root / 'empty').mkdir()
    swin = 'network_g: {type: SwinIR, in_chans: 1, embed_dim: 6, depths: [1], num_heads: [1], upscale: 1, ' \
           'upsampler: "", img_range: %s}\n'
    (root / 'swin1.yml').write_text(swin % 1.0)
    (root / 'swin255.yml').write_text(swin % 255.0)
    return root


def _run(tiny, out, *extra):
    return compare.main(['--models', f'Ident={tiny / "identity.pth"}', f'MDRN-tiny@25={tiny / "mdrn.yml"}',
                         f'FFDNet-tiny={tiny / "ffdnet.yml"}', '--sets', f'tiny={tiny / "imgs"}',
                         '--sigmas', '15', '25', '--out', str(out), '--crop-size', '12', '--zoom', '2', *extra])


def test_compare_outputs_and_consistency(tiny, tmp_path, capsys):
    out = tmp_path / 'cmp'
    assert _run(tiny, out) == 0
    assert 'tiny σ=25' in capsys.readouterr().out
    rows = {(r['model'], r['sigma']): r for r in csv.DictReader(open(out / 'compare.csv'))}
    assert set(rows) == {(m, s) for m in ('noisy', 'Ident', 'MDRN-tiny', 'FFDNet-tiny') for s in ('15', '25')}
    for (model, sigma), r in rows.items():
        if model == 'MDRN-tiny' and sigma == '15':  # restricted to sigma 25 by '@25'
            assert r['psnr'] == '' and r['images'] == '0'
            continue
        assert r['images'] == '2' and math.isfinite(float(r['psnr'])) and 0 < float(r['ssim']) <= 1
    # the identity model returns its (unclipped) input: after tensor2img it is exactly the noisy image
    for sigma in ('15', '25'):
        assert rows['Ident', sigma]['psnr'] == rows['noisy', sigma]['psnr']
        assert rows['Ident', sigma]['ssim'] == rows['noisy', sigma]['ssim']
    # noisy PSNR follows sigma (20log10(255/sigma), a bit higher from clipping to [0, 255])
    for sigma in (15, 25):
        noisy = float(rows['noisy', str(sigma)]['psnr'])
        assert abs(noisy - 20 * math.log10(255 / sigma)) < 0.8
    ident, ffd = rows['Ident', '25'], rows['FFDNet-tiny', '25']
    assert float(ident['params_M']) * 1e6 == sum(p.numel() for p in DnCNN(num_feat=4, num_conv=3).parameters())
    # FLOPs of a 3-conv DnCNN (1->4->4->1) at 256^2: 2 * MACs
    assert float(ident['gflops_256']) == pytest.approx(2 * 256 * 256 * 9 * (4 + 16 + 4) / 1e9, rel=1e-4)
    assert float(ffd['ms_per_MP']) > 0 and ffd['weights'] == 'random init'
    # each row names the weights that produced it, none where the model did not run
    assert rows['MDRN-tiny', '25']['weights'] == str(tiny / 'mdrn.pth') and rows['MDRN-tiny', '15']['weights'] == ''
    md = (out / 'compare.md').read_text()
    assert '| Ident |' in md and '| MDRN-tiny | — /' not in md and '| MDRN-tiny | — |' in md
    assert '| FFDNet-tiny (random init) |' in md
    figs = sorted((out / 'figures').glob('*.png'))
    assert [f.name for f in figs] == ['tiny_sigma15_a.png', 'tiny_sigma25_a.png']
    fig = cv2.imread(str(figs[1]))
    # noisy | Ident | MDRN-tiny | FFDNet-tiny | clean, 12 px crops zoomed x2 (panels widened to show the whole PSNR),
    # 4 px gaps, under two label lines
    panel = max(24, compare_figures.text_width('000.00 dB') + 2 * compare_figures.MARGIN)
    assert fig.shape[1] == 5 * panel + 4 * 4 and fig.shape[0] == 2 * compare_figures.LINE_H + 4 + 24
    # refuses to overwrite without --force, a previous run's figure too; --force deletes stale figures only
    with pytest.raises(SystemExit) as err:
        _run(tiny, out)
    assert err.value.code == 2 and '--force' in capsys.readouterr().err
    for name in compare.OUTPUT_FILES:
        (out / name).unlink()
    (out / 'figures' / 'tiny_sigma50_old.png').write_bytes(b'stale')
    (out / 'figures' / 'notes.txt').write_text('mine')
    with pytest.raises(SystemExit) as err:
        _run(tiny, out)
    assert err.value.code == 2 and '3 figure(s) of an earlier run' in capsys.readouterr().err
    assert _run(tiny, out, '--force') == 0
    assert sorted(f.name for f in (out / 'figures').iterdir()) == ['notes.txt', 'tiny_sigma15_a.png',
                                                                   'tiny_sigma25_a.png']


def test_per_sigma_models_of_one_name_share_a_row_with_their_own_weights(tiny, tmp_path):
    (tmp_path / 'copy.pth').write_bytes((tiny / 'identity.pth').read_bytes())
    assert compare.main(['--models', f'D@15={tiny / "identity.pth"}', f'D@25={tmp_path / "copy.pth"}', '--sets',
                         f'tiny={tiny / "imgs"}', '--sigmas', '15', '25', '--out', str(tmp_path / 'o'),
                         '--max-images', '1', '--figures-per-set', '0']) == 0
    rows = {(r['model'], r['sigma']): r for r in csv.DictReader(open(tmp_path / 'o' / 'compare.csv'))}
    assert rows['D', '15']['images'] == rows['D', '25']['images'] == '1'  # --max-images
    assert rows['D', '15']['weights'] == str(tiny / 'identity.pth')
    assert rows['D', '25']['weights'] == str(tmp_path / 'copy.pth')


def test_figure_names_are_safe_and_write_failures_are_reported(tiny, tmp_path, capsys, monkeypatch):
    argv = ['--models', f'I={tiny / "identity.pth"}', '--sets', f'my/set={tiny / "imgs"}', f'my_set={tiny / "imgs"}',
            '--max-images', '1', '--crop-size', '8']
    assert compare.main(argv + ['--out', str(tmp_path / 'o')]) == 0
    # 'my/set' and 'my_set' give one name: the second figure gets a suffix instead of overwriting the first
    assert sorted(f.name for f in (tmp_path / 'o' / 'figures').iterdir()) == ['my_set_sigma25_a.png',
                                                                               'my_set_sigma25_a_1.png']
    assert '](figures/my_set_sigma25_a.png)' in (tmp_path / 'o' / 'compare.md').read_text()
    # cv2.imwrite says only by returning False that it wrote nothing
    monkeypatch.setattr(cv2, 'imwrite', lambda *a: False)
    with pytest.raises(SystemExit) as err:
        compare.main(argv + ['--out', str(tmp_path / 'p')])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, which stderr shows too
    assert err.value.code == 2 and last.startswith('error: could not write figure')


def test_figure_label_keeps_the_psnr_of_a_long_name():
    width = 60
    name, psnr = compare_figures.label_lines('MDRN-2B-HMDS-distilled-from-sigma15-teacher', 29.87, width)
    assert psnr == '29.87 dB' and name.endswith('..') and compare_figures.text_width(name) + 2 * compare_figures.MARGIN <= width
    assert compare_figures.label_lines('noisy', 20.1, width) == ['noisy', '20.10 dB']


def test_compare_amp_runs_under_bf16_autocast_on_cpu(tiny, tmp_path, capsys, monkeypatch):
    seen = []
    real = torch.autocast
    monkeypatch.setattr(compare.torch, 'autocast', lambda *a, **k: seen.append((a, k)) or real(*a, **k))
    fp32, amp = tmp_path / 'fp32', tmp_path / 'amp'
    assert _run(tiny, fp32) == 0 and not any(k['enabled'] for _, k in seen)
    assert _run(tiny, amp, '--amp') == 0 and seen[-1] == (('cpu',), {'dtype': torch.bfloat16, 'enabled': True})
    assert 'autocast to bfloat16 (--amp)' in (amp / 'compare.md').read_text()
    rows = {}
    for tag, folder in (('fp32', fp32), ('amp', amp)):
        rows |= {(tag, r['model'], r['sigma']): r for r in csv.DictReader(open(folder / 'compare.csv'))}
    # the identity model subtracts a bf16 zero: its output is still exactly the noisy input. The random MDRN (a
    # residual net, output near its input) moves by bf16 rounding only (measured 0.01 dB; random FFDNet-tiny's 6 dB
    # garbage moves 0.4 dB, so it is not compared)
    assert rows['amp', 'Ident', '25']['psnr'] == rows['amp', 'noisy', '25']['psnr']
    assert abs(float(rows['amp', 'MDRN-tiny', '25']['psnr']) - float(rows['fp32', 'MDRN-tiny', '25']['psnr'])) < 0.1


@pytest.mark.parametrize('ensemble', [False, True])
def test_compare_psnr_equals_basicsr_test(tiny, tmp_path, basicsr_cli, ensemble):
    """Compare runs what basicsr test runs for the option file: with the x8 self-ensemble (MDRN+) under DenoiseModel
    too, which changes the score."""
    yml = tiny / 'mdrn.yml'
    if ensemble:
        yml = tmp_path / 'mdrn_plus.yml'
        yml.write_text((tiny / 'mdrn.yml').read_text().replace('model_type: SRModel', 'model_type: DenoiseModel')
                       .replace('save_img: false', 'save_img: false\n  self_ensemble: true'))
    assert compare.main(['--models', f'M={yml}', '--sets', f'tiny={tiny / "imgs"}', '--sigmas', '25',
                         '--out', str(tmp_path / 'cmp')]) == 0
    rows = {(r['model'], r['sigma']): r for r in csv.DictReader(open(tmp_path / 'cmp' / 'compare.csv'))}
    log = basicsr_cli('test', '-opt', yml, '--root', tmp_path, cwd=tmp_path).stdout
    psnr = float(re.findall(r'# psnr: ([0-9.]+)', log)[-1])
    assert float(rows['M', '25']['psnr']) == pytest.approx(psnr, abs=1e-4)
    if ensemble:  # and the ensemble is not a no-op here
        plain = basicsr_cli('test', '-opt', tiny / 'mdrn.yml', '--root', tmp_path, cwd=tmp_path).stdout
        assert abs(float(re.findall(r'# psnr: ([0-9.]+)', plain)[-1]) - psnr) > 1e-3


@pytest.mark.parametrize('argv, message', [
    (['--models', 'X=missing.yml'], 'does not exist'),
    (['--models', 'nameonly'], 'NAME=PATH'),
    (['--models', 'X@abc=a.yml'], 'is not a number'),
    (['--models', 'X={tiny}/typo.yml'], "MDRN has no argument 'num_blocks' (did you mean 'num_block'?)"),
    (['--models', 'X={tiny}/typo_type.yml'], "network_g: network type 'MDRNN' is not registered (did you mean "
                                             "'MDRN'?)"),
    (['--models', 'X={tiny}/wrong.yml'], 'identity.pth does not fit network_g: '),
    (['--models', 'X={tiny}/ridnet_gray.yml'], "out_channels=1, num_block=1, rgb_mean=[0.5], rgb_std=[1.0]): "
                                               "RuntimeError: shape '[3, 1, 1, 1]' is invalid"),
    (['--models', 'X={tiny}/ridnet_gray_default.yml'], "model 'X' ({tiny}/ridnet_gray_default.yml) fails on a "
                                                       '3-channel 256×256 image: Given groups=1'),
    (['--models', 'X={tiny}/nonstrict.yml'], 'identity.pth does not fit network_g: '),
    (['--models', 'X={tiny}/nokey.yml'], 'mdrn.pth has no [None] weights (keys: params); set path.param_key_g'),
    (['--models', 'X@25={tiny}/identity.pth', 'X@50={tiny}/mdrn.pth', '--sigmas', '25', '50'],
     'different architectures'),
    (['--models', 'X@25={tiny}/swin1.yml', 'X@50={tiny}/swin255.yml', '--sigmas', '25', '50'],
     'different architectures (network_g options img_range=1.0 vs 255.0)'),
    (['--models', 'X={tiny}/identity.pth', '--sigmas', '0.1'], 'below 1 on the 0..255 pixel scale'),
    (['--models', 'X={tiny}/identity.pth', '--sigmas', '25', '25'], 'lists 25 twice'),
    (['--models', 'X={tiny}/identity.pth', '--noise-seed', '-1'], '--noise-seed must be a non-negative integer'),
    (['--models', 'X={tiny}/identity.pth', '--sets', 'b={tiny}/badset'], "bad.png' is not a readable image"),
    (['--models', 'X={tiny}/identity.pth', '--sets', 'e={tiny}/empty'], 'no images found'),
    (['--models', 'X={tiny}/identity.pth', '--crop', '500', '0', '8'], 'lies outside image'),
    (['--models', 'X={tiny}/identity.pth', '--out', '{tiny}/ffdnet.yml'], 'is a file, not a folder'),
])
def test_bad_input_is_one_line_error(tiny, tmp_path, capsys, argv, message):
    """... before any output folder is created (the defaults first: an entry of ``argv`` overrides them)."""
    with pytest.raises(SystemExit) as err:
        compare.main(['--sets', str(tiny / 'imgs'), '--out', str(tmp_path / 'o')] +
                     [a.format(tiny=tiny) for a in argv])
    msg = capsys.readouterr().err.strip()
    assert err.value.code == 2 and message.format(tiny=tiny) in msg and '\n' not in msg
    assert not (tmp_path / 'o').exists()


def test_flops_count_what_the_row_runs(tiny, tmp_path):
    """GFLOPs are counted on the forward the row times: 8 forwards for the x8 self-ensemble, and SwinIR padded to
    its window (BasicSR's default 7 when the option file leaves window_size out; 256 is no multiple of 7)."""
    net = MDRN(num_feat=4, num_block=1, num_level=2).eval()
    plus = {'model_type': 'DenoiseModel', 'val': {'self_ensemble': True}}
    assert model_loading.count_flops(eval_forward(net, plus), 1, 32) == 8 * model_loading.count_flops(net, 1, 32) > 0
    (tmp_path / 'swinir.yml').write_text('network_g: {type: SwinIR, in_chans: 1, embed_dim: 6, depths: [1], '
                                         'num_heads: [1], mlp_ratio: 1, upscale: 1, upsampler: ""}\n')
    assert compare.main(['--models', f'S={tmp_path / "swinir.yml"}', '--sets', f'tiny={tiny / "imgs"}',
                         '--sigmas', '25', '--out', str(tmp_path / 'o'), '--figures-per-set', '0']) == 0
    row = next(r for r in csv.DictReader(open(tmp_path / 'o' / 'compare.csv')) if r['model'] == 'S')
    assert float(row['gflops_256']) > 0 and math.isfinite(float(row['psnr']))


def test_a_partial_non_strict_load_is_labelled(tiny, tmp_path):
    """strict_load_g: false loads what fits and skips the rest (as BasicSR): the weights column says how much."""
    partial = {k: v for k, v in MDRN(num_feat=4, num_block=1, num_level=2).state_dict().items() if k.startswith('head')}
    torch.save({'params': partial}, tmp_path / 'head_only.pth')
    yml = tmp_path / 'partial.yml'
    yml.write_text((tiny / 'mdrn.yml').read_text().replace(str(tiny / 'mdrn.pth'), str(tmp_path / 'head_only.pth'))
                   .replace('strict_load_g: true', 'strict_load_g: false'))
    net, weights, _ = model_loading.build_model(str(yml))
    assert weights == f'{tmp_path / "head_only.pth"} (strict_load_g: false; 2 of {len(net.state_dict())} tensors loaded)'
    assert model_loading.build_model(str(tiny / 'mdrn.yml'))[1] == str(tiny / 'mdrn.pth')


def test_ffdnet_is_run_at_the_sigma_under_test(tiny, tmp_path):
    """A bare FFDNet checkpoint (its inferred sigma: 25) scores as option files that set each tested sigma."""
    from mdrn_arch import FFDNet
    torch.manual_seed(0)
    torch.save({'params': FFDNet(num_feat=4, num_conv=3).state_dict()}, tmp_path / 'ffd.pth')
    for sigma in (15, 50):
        (tmp_path / f'ffd{sigma}.yml').write_text(f'network_g: {{type: FFDNet, num_feat: 4, num_conv: 3, sigma: '
                                                  f'{sigma}}}\npath: {{pretrain_network_g: {tmp_path / "ffd.pth"}}}\n')
    assert compare.main(['--models', f'F={tmp_path / "ffd.pth"}', f'G@15={tmp_path / "ffd15.yml"}',
                         f'G@50={tmp_path / "ffd50.yml"}', '--sets', f'tiny={tiny / "imgs"}', '--sigmas', '15', '50',
                         '--out', str(tmp_path / 'o'), '--figures-per-set', '0']) == 0
    rows = {(r['model'], r['sigma']): r['psnr'] for r in csv.DictReader(open(tmp_path / 'o' / 'compare.csv'))}
    assert rows['F', '15'] == rows['G', '15'] and rows['F', '50'] == rows['G', '50']
    assert rows['F', '15'] != rows['F', '50']


def test_color_model_with_gray_models_is_refused(tiny, tmp_path, capsys):
    torch.save({'params': DnCNN(3, 3, num_feat=4, num_conv=3).state_dict()}, tmp_path / 'c.pth')
    with pytest.raises(SystemExit):
        compare.main(['--models', f'G={tiny / "identity.pth"}', f'C={tmp_path / "c.pth"}', '--sets',
                      str(tiny / 'imgs'), '--out', str(tmp_path / 'o')])
    assert 'channel' in capsys.readouterr().err


def test_a_bare_checkpoint_with_other_dilations_needs_an_option_file(tmp_path):
    """The dilation values are not in the weights: a bare MDRN .pth with three branches per MSAB is not guessed."""
    torch.save({'params': MDRN(num_feat=12, num_block=1, num_level=1, dilations=(1, 2, 3)).state_dict()},
               tmp_path / 'three.pth')
    with pytest.raises(model_loading.ModelLoadError, match='cannot infer the arch from this checkpoint; pass an '
                                                            'option file'):
        model_loading.build_model(str(tmp_path / 'three.pth'))


def _many_images(root, n=12):
    """``n`` small gray images of different content (enough for a bootstrap over images)."""
    root.mkdir()
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:20, :20]
    for k in range(n):
        img = 120 + 60 * np.sin(xx / (2 + k % 3)) * np.cos(yy / (3 + k % 4)) + rng.normal(0, 5, xx.shape)
        cv2.imwrite(str(root / f'im{k}.png'), img.clip(0, 255).astype(np.uint8))
    return root


def test_compare_baseline_self_is_zero_and_an_offset_is_detected(tiny, tmp_path, capsys):
    """Known answers: a model against itself differs by exactly 0 with a zero-width interval on every draw; one that
    adds a constant to its output is worse on every image, with an interval below 0; the per-image CSV holds every
    score the table averages."""
    imgs = _many_images(tmp_path / 'imgs')
    offset = DnCNN(num_feat=4, num_conv=3)
    torch.nn.init.zeros_(offset.body[-1].weight)
    torch.nn.init.constant_(offset.body[-1].bias, -8 / 255)  # output = input + 8 grey levels
    torch.save({'params': offset.state_dict()}, tmp_path / 'offset.pth')
    out = tmp_path / 'cmp'
    assert compare.main(['--models', f'A={tiny / "identity.pth"}', f'Same={tiny / "identity.pth"}',
                         f'Offset={tmp_path / "offset.pth"}', '--sets', f'many={imgs}', '--sigmas', '25',
                         '--noise-seeds', '0', '1', '--baseline', 'A', '--out', str(out), '--crop-size', '8']) == 0
    rows = {r['model']: r for r in csv.DictReader(open(out / 'compare.csv'))}
    same, off = rows['Same'], rows['Offset']
    assert float(same['d_psnr']) == 0 and float(same['d_psnr_low']) == 0 and float(same['d_psnr_high']) == 0
    assert float(same['d_ssim_low']) == float(same['d_ssim_high']) == 0 and same['improved'] == '0/12'
    assert float(off['d_psnr_high']) < 0 and float(off['d_psnr_low']) <= float(off['d_psnr']) <= \
        float(off['d_psnr_high']) and off['improved'] == '0/12'
    assert rows['A']['d_psnr'] == '' and rows['A']['noise_draws'] == '2' and float(rows['A']['psnr_draw_std']) > 0
    per_image = list(csv.DictReader(open(out / 'per_image.csv')))
    assert len(per_image) == 2 * 12 * 4  # draws x images x (noisy, A, Same, Offset)
    a_scores = [float(r['psnr']) for r in per_image if r['model'] == 'A']
    assert float(rows['A']['psnr']) == pytest.approx(np.mean(a_scores), abs=1e-4)
    md = (out / 'compare.md').read_text()
    assert re.search(r'\| Same \| \+0\.00 \[\+0\.00, \+0\.00\] / \+0\.0000 \[\+0\.0000, \+0\.0000\]; 0/12 better; no '
                     r'difference shown \|', md), md
    assert re.search(r'\| Offset \| -\d\.\d\d \[-\d\.\d\d, -\d\.\d\d\] .*; 0/12 better; worse \|', md), md
    assert re.search(r'\| A \| \d+\.\d\d ± \d\.\d\d / ', md), md


def test_paired_difference_matches_known_answers():
    from mdrn_models.tools.compare_stats import paired_difference, verdict
    rng = np.random.default_rng(0)
    base = rng.normal(28, 2, 60)
    assert paired_difference(base, base + 0.1) == pytest.approx(
        {'delta': 0.1, 'low': 0.1, 'high': 0.1, 'improved': 60, 'n': 60})
    noisy = paired_difference(base, base + 0.1 + rng.normal(0, 0.05, 60))
    assert 0.08 < noisy['low'] < noisy['delta'] < noisy['high'] < 0.12 and verdict(noisy) == 'better'
    # the interval of a mean of n draws of sd 0.05 is about 2 x 1.96 x 0.05 / sqrt(60) wide
    assert noisy['high'] - noisy['low'] == pytest.approx(2 * 1.96 * 0.05 / math.sqrt(60), rel=0.35)
    null = paired_difference(base, base + rng.normal(0, 0.05, 60))
    assert null['low'] < 0 < null['high'] and verdict(null) == 'no difference shown'
    one = paired_difference([30.0], [30.2])
    assert one['delta'] == pytest.approx(0.2) and math.isnan(one['low'])
    few = paired_difference(base[:9], base[:9] + 0.1)  # too few images for a bootstrap to cover 95%
    assert math.isnan(few['low']) and math.isnan(few['high']) and verdict(few).startswith('too few images')


@pytest.mark.bad_input
@pytest.mark.parametrize('extra, message', [
    (['--baseline', 'Nope'], "--baseline 'Nope' is not a --models name"),
    (['--noise-seeds', '0', '0'], '--noise-seeds lists 0 twice'),
    (['--noise-seeds', '1', '--noise-seed', '2'], 'give --noise-seed or --noise-seeds, not both'),
])
def test_bad_baseline_and_seeds_are_one_line(tiny, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        _run(tiny, tmp_path / 'o', *extra)
    assert message in capsys.readouterr().err and not (tmp_path / 'o').exists()

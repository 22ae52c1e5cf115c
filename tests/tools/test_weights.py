"""Shipped weights (``weights/``): each has a ``basicsr test`` option file, holds only ``params``, loads strictly into
that file's network, and its Set12 numbers in the model card (weights/README.md) reproduce through ``basicsr test``
(needs ../shared; skips without it). Also the exporter that makes such files from training checkpoints."""
import re

import pytest
import torch
import yaml
from basicsr.archs import build_network

from mdrn_arch import MDRN
from mdrn_models.tools.export_weights import export
from mdrn_models.tools.export_weights import main as export_main
from mdrn_models.utils.checkpoints import CheckpointError
from conftest import REPO

WEIGHTS = sorted((REPO / 'weights').glob('*.pth'))


def option_files():
    """options/test_*.yml whose pretrain_network_g is a shipped weight -> {weight file name: option path}."""
    found = {}
    for path in sorted((REPO / 'options').glob('test_*.yml')):
        weight = (yaml.safe_load(path.read_text()).get('path') or {}).get('pretrain_network_g') or ''
        if weight.startswith('weights/'):
            found[weight[len('weights/'):]] = path
    return found


def card_row(weight_name):
    """The model card's numbers for a weight: the table row naming it -> [Set12 PSNR, SSIM, BSD68 PSNR, SSIM]."""
    for line in (REPO / 'weights' / 'README.md').read_text().splitlines():
        if line.startswith('|') and f'`weights/{weight_name}`' in line:
            return [float(v) for v in re.findall(r'\|\s*([0-9]+\.[0-9]+)\s*(?=\|)', line)]
    raise AssertionError(f'weights/README.md has no results row for weights/{weight_name}')


def test_weights_are_shipped():
    assert WEIGHTS, 'no weights/*.pth: the trained weights are part of the repository'


@pytest.mark.parametrize('weight', WEIGHTS, ids=lambda p: p.name)
def test_params_only_and_loads_into_its_option_file(weight):
    options = option_files()
    assert weight.name in options, f'no options/test_*.yml with pretrain_network_g: weights/{weight.name}'
    ckpt = torch.load(weight, map_location='cpu', weights_only=True)
    assert list(ckpt) == ['params']
    assert all(v.dtype in (torch.float16, torch.float32) for v in ckpt['params'].values())
    net = build_network(yaml.safe_load(options[weight.name].read_text())['network_g'])
    net.load_state_dict(ckpt['params'], strict=True)
    assert len(card_row(weight.name)) == 4


@pytest.mark.parametrize('weight', WEIGHTS, ids=lambda p: p.name)
def test_each_weight_ships_as_safetensors_too_with_the_same_tensors_and_its_settings(weight):
    """weights/NAME.safetensors: bit-identical tensors to NAME.pth, and a header naming the network of the weight's
    test option file and its noise level (basicsr export-weights ... -opt options/train_NAME.yml)."""
    import json
    from safetensors.torch import load_file
    from mdrn_models.utils.checkpoints import safetensors_metadata
    st = weight.with_suffix('.safetensors')
    assert st.is_file(), f'no {st.name}: basicsr export-weights {weight} {st} -opt options/train_{weight.stem}.yml'
    pth = torch.load(weight, map_location='cpu', weights_only=True)['params']
    tensors = load_file(st)
    assert sorted(tensors) == sorted(pth) and all(torch.equal(tensors[k], v) and tensors[k].dtype == v.dtype
                                              for k, v in pth.items())
    meta, test_opt = safetensors_metadata(st), yaml.safe_load(option_files()[weight.name].read_text())
    assert json.loads(meta['network_g']) == test_opt['network_g']
    assert {float(meta['sigma'])} == {d['sigma'] for d in test_opt['datasets'].values()}
    assert meta['channels'] == 'gray' and meta['train_data'] == 'Train400'


def set12_option_file(weight_name, shared_dir, tmp_path):
    """The weight's test option file, testing only Set12 from ../shared, with the weight's absolute path."""
    opt = yaml.safe_load(option_files()[weight_name].read_text())
    set12 = [k for k, d in opt['datasets'].items() if d['name'] == 'Set12']
    assert set12, 'the test option file of a shipped weight must test Set12'
    opt['datasets'] = {'test_1': {**opt['datasets'][set12[0]],
                                  'dataroot_gt': str(shared_dir / 'datasets' / 'test' / 'Set12')}}
    opt['path']['pretrain_network_g'] = str(REPO / 'weights' / weight_name)
    yml = tmp_path / f'test_{weight_name}.yml'
    yml.write_text(yaml.safe_dump(opt))
    return yml, opt


def assert_card(weight_name, psnr, ssim):
    card_psnr, card_ssim = card_row(weight_name)[:2]
    assert abs(psnr - card_psnr) <= 0.01 and abs(ssim - card_ssim) <= 0.0005, (weight_name, psnr, ssim)


PER_IMAGE = REPO / 'weights' / 'logs' / 'set12_per_image.csv'  # every weight on every Set12 image (card command)
RECHECKED_IMAGES = 3  # recomputed per weight by the slow test: Set12's first three (256x256) images


def per_image_scores():
    """{(weight stem, image): (psnr, ssim)} from the committed per-image scores of the model card's Set12 column."""
    import csv
    with open(PER_IMAGE, newline='') as f:
        return {(r['model'], r['image']): (float(r['psnr']), float(r['ssim'])) for r in csv.DictReader(f)
                if r['model'] != 'noisy'}


@pytest.mark.parametrize('weight', WEIGHTS, ids=lambda p: p.name)
def test_the_card_set12_column_is_the_mean_of_the_committed_per_image_scores(weight):
    """The card's Set12 numbers are the means of ``weights/logs/set12_per_image.csv`` (written by the command in
    weights/README.md), whose per-image values the slow test below recomputes in part."""
    scores = [v for (model, _), v in per_image_scores().items() if model == weight.stem]
    assert len(scores) == 12, f'{PER_IMAGE.name} has {len(scores)} Set12 images of {weight.stem}'
    assert_card(weight.name, sum(p for p, _ in scores) / 12, sum(s for _, s in scores) / 12)


@pytest.mark.slow
def test_set12_per_image_scores_of_every_shipped_weight_reproduce(shared_dir, tmp_path):
    """Every shipped weight at its own noise level, in one compare run (one process; compare scores exactly what
    ``basicsr test`` scores for an option file: tests/test_compare.py) on Set12's first images, against the committed
    per-image scores behind the card (the full card command takes minutes; the mean is checked above)."""
    import csv
    from mdrn_models.tools import compare
    models, sigmas = [], set()
    for weight in WEIGHTS:
        yml, opt = set12_option_file(weight.name, shared_dir, tmp_path)
        sigma = opt['datasets']['test_1']['sigma']
        sigmas.add(sigma)
        models.append(f'{weight.stem}@{sigma}={yml}')
    assert compare.main(['--models', *models, '--sets', f'Set12={shared_dir / "datasets" / "test" / "Set12"}',
                         '--sigmas', *map(str, sorted(sigmas)), '--figures-per-set', '0', '--flops-size', '32',
                         '--max-images', str(RECHECKED_IMAGES), '--out', str(tmp_path / 'cmp')]) == 0
    expected = per_image_scores()
    rows = [r for r in csv.DictReader(open(tmp_path / 'cmp' / 'per_image.csv')) if r['model'] != 'noisy']
    assert len(rows) == len(WEIGHTS) * RECHECKED_IMAGES
    for r in rows:
        psnr, ssim = expected[r['model'], r['image']]
        assert abs(float(r['psnr']) - psnr) <= 2e-3 and abs(float(r['ssim']) - ssim) <= 2e-5, (r, psnr, ssim)


def test_set12_numbers_reproduce_through_basicsr_test(shared_dir, tmp_path, basicsr_cli):
    """The scores behind the card are ``basicsr test``'s own: the fastest shipped weight through the real command on
    Set12's first images (the same noise as in the whole set: the noise of image k depends on k) gives the mean of
    their committed per-image scores."""
    import shutil
    name = 'mdrn2b_gray_s25_train400.pth'
    images = sorted((shared_dir / 'datasets' / 'test' / 'Set12').glob('*.png'))[:RECHECKED_IMAGES]
    (tmp_path / 'set12').mkdir()
    for image in images:
        shutil.copy(image, tmp_path / 'set12' / image.name)
    yml, opt = set12_option_file(name, shared_dir, tmp_path)
    opt['datasets']['test_1']['dataroot_gt'] = str(tmp_path / 'set12')
    yml.write_text(yaml.safe_dump(opt))
    log = basicsr_cli('test', '-opt', yml, '--root', tmp_path, cwd=tmp_path).stdout
    scores = [per_image_scores()[name[:-len('.pth')], image.name] for image in images]
    for m, metric in enumerate(('psnr', 'ssim')):
        expected = sum(score[m] for score in scores) / len(scores)
        assert abs(float(re.findall(rf'# {metric}: ([0-9.]+)', log)[-1]) - expected) <= (1e-3, 1e-4)[m], log[-2000:]


def test_export_weights_ships_only_params_in_fp16_and_refuses_overwrite(tmp_path):
    net = MDRN(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_level=2)
    ema = {k: v + 1 for k, v in net.state_dict().items()}
    ckpt = tmp_path / 'net_g_5.pth'
    torch.save({'params': net.state_dict(), 'params_ema': ema}, ckpt)
    out = tmp_path / 'weights' / 'tiny.pth'

    assert export(ckpt, out, key='params_ema') == sum(p.numel() for p in net.parameters())
    saved = torch.load(out, map_location='cpu', weights_only=True)
    assert list(saved) == ['params']
    assert all(v.dtype == torch.float16 for v in saved['params'].values())
    assert all(torch.equal(saved['params'][k], v.half()) for k, v in ema.items())
    net.load_state_dict(saved['params'])  # fp16 values load into the fp32 network

    with pytest.raises(CheckpointError, match='exists; pass --force'):
        export(ckpt, out)
    export(ckpt, out, dtype='fp32', force=True)
    assert torch.load(out, weights_only=True)['params']['head.weight'].dtype == torch.float32
    with pytest.raises(CheckpointError, match='no "nope".*--key'):
        export(ckpt, tmp_path / 'other.pth', key='nope')
    with pytest.raises(SystemExit, match='^export_weights: error: network checkpoint not found'):
        export_main([str(tmp_path / 'missing.pth'), str(tmp_path / 'x.pth')])


def test_export_weights_takes_a_bare_state_dict(tmp_path):
    net = MDRN(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_level=2)
    torch.save(net.state_dict(), tmp_path / 'bare.pth')
    export(tmp_path / 'bare.pth', tmp_path / 'out.pth', dtype='fp32')
    net.load_state_dict(torch.load(tmp_path / 'out.pth', weights_only=True)['params'])
    with pytest.raises(CheckpointError, match=r'^\S+bare.pth is a bare state dict .*: drop --key$'):
        export(tmp_path / 'bare.pth', tmp_path / 'ema.pth', key='params_ema')


@pytest.mark.parametrize('args, message', [
    (['{ckpt}', '{tmp}', '--force'], r'is a folder: give the weight file to write, e\.g\. \S+NAME\.pth$'),
    (['{tmp}', 'x.pth'], r'is a folder: give a checkpoint file'),
    (['{tmp}/missing.pth', 'x.pth'], r'not found: \S+ \(fix the CKPT argument: a \.pth written by torch\.save\)$'),
    (['{tmp}/text.pth', 'x.pth'], r'is not a PyTorch checkpoint \(a torch.save file\) nor a safetensors file: fix the CKPT argument'),
    (['{tmp}/empty.pth', 'x.pth'], r'has no "params" state dict; it holds no state dict: pass a BasicSR'),
    (['{ckpt}', '{ckpt}', '--force'], r'ckpt\.pth is the checkpoint being exported: give another output file$'),
])
def test_export_weights_errors_are_one_line_about_this_command(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    torch.save({'params': MDRN(num_feat=8, num_block=1, num_level=2).state_dict()}, tmp_path / 'ckpt.pth')
    torch.save({'iter': 5}, tmp_path / 'empty.pth')
    (tmp_path / 'text.pth').write_text('not a checkpoint')
    with pytest.raises(SystemExit) as err:
        export_main([a.format(ckpt=tmp_path / 'ckpt.pth', tmp=tmp_path) for a in args])
    assert re.search(message, str(err.value)) and 'pretrain_network' not in str(err.value), str(err.value)
    assert '\n' not in str(err.value) and not (tmp_path / 'x.pth').exists()
    assert torch.load(tmp_path / 'ckpt.pth', weights_only=True)['params']['head.weight'].dtype == torch.float32


@pytest.mark.parametrize('args, message', [
    (['--mat', '{tmp}', '--out', '{tmp}/w.pth'], r"is a folder: pass the \.mat file itself"),
    (['--mat', '{tmp}/x.mat', '--out', '{tmp}', '--force'], r"is a folder: give the checkpoint file to write"),
])
def test_peer_weights_refuses_folders_with_one_line(tmp_path, capsys, args, message):
    from mdrn_models.tools import peer_weights
    with pytest.raises(SystemExit) as err:
        peer_weights.main(['--arch', 'DnCNN', *(a.format(tmp=tmp_path) for a in args)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1 and re.search(message, lines[0]), lines
    assert not (tmp_path / 'w.pth').exists()


@pytest.mark.parametrize('weight', WEIGHTS, ids=lambda p: p.name)
def test_readme_table_matches_the_model_card(weight):
    """README.md's weights table repeats the card's numbers (a row per weight, named without the extension: each ships
    as .pth and .safetensors); they must not drift apart."""
    rows = [line for line in (REPO / 'README.md').read_text().splitlines()
            if line.startswith(f'| `{weight.stem}` |')]
    assert len(rows) == 1, f'README.md\'s weights table has no (or several) rows for {weight.stem}'
    readme = [float(v) for v in re.findall(r'\b[0-9]+\.[0-9]{2,4}\b', rows[0])]
    assert readme == card_row(weight.name)

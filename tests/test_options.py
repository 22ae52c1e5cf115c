"""The option files in options/: plain YAML, the paper's settings, consistent names, and datasets/networks that
BasicSR can build (the demo ones on a demo set made at test time)."""
import os
import re
from pathlib import Path

import pytest
import yaml

import mdrn_models  # noqa: F401
from basicsr.archs import build_network
from basicsr.data import build_dataset

OPTIONS = Path(__file__).resolve().parents[1] / 'options'
PAPER = sorted(p for p in OPTIONS.glob('*_mdrn*_*_s*.yml') if '_demo_' not in p.name and re.match(
    r'(train|test)_mdrn(2b)?_(gray|color)_s\d+\.yml$', p.name))
DEMO = sorted(OPTIONS.glob('*_mdrn2b_demo_*.yml'))
ITERS_PER_EPOCH = 32592 // 16  # DIV2K sub-images / batch


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)  # plain data only (the basicsr command refuses python tags)


def parse_name(path):
    m = re.match(r'(train|test)_(mdrn2b|mdrn)_(?:demo_)?(gray|color)_s(\d+)\.yml$', path.name)
    return m.group(1), m.group(2), m.group(3), int(m.group(4))


def test_every_paper_setting_has_train_and_test_files():
    names = {p.name for p in PAPER}
    for arch in ('mdrn', 'mdrn2b'):
        for kind, sigmas in (('gray', (15, 25, 50)), ('color', (30, 50, 70))):
            for s in sigmas:
                assert f'train_{arch}_{kind}_s{s}.yml' in names and f'test_{arch}_{kind}_s{s}.yml' in names
    assert len(DEMO) == 4


@pytest.mark.parametrize('path', PAPER + DEMO, ids=lambda p: p.name)
def test_option_file_is_consistent(path):
    phase, arch, kind, sigma = parse_name(path)
    text = path.read_text()
    opt = load(path)
    assert f'basicsr {phase} -opt options/{path.name}' in text.split('\n\n')[0]  # run command in the top comment
    assert opt['model_type'] == 'SRModel' and opt['scale'] == 1
    assert opt['num_gpu'] in ('auto', 0)
    ch = 1 if kind == 'gray' else 3
    net = opt['network_g']
    assert net == {'type': 'MDRN', 'num_in_ch': ch, 'num_out_ch': ch, 'num_feat': 64,
                   'num_block': 2 if arch == 'mdrn2b' else 8, 'num_level': 3}
    for key, ds in opt['datasets'].items():
        assert ds['type'] == 'AWGNDenoisingDataset' and ds['channels'] == ch and ds['sigma'] == sigma
        assert not os.path.isabs(ds['dataroot_gt']) and ds['dataroot_gt'].startswith('datasets/')
        if not key.startswith('train'):
            assert ds['noise_seed'] == 0
    assert opt['val']['suffix'] is None and 'psnr' in opt['val']['metrics']
    if phase == 'test':
        assert opt['path']['pretrain_network_g'] == (
            f"experiments/{load(path.with_name(path.name.replace('test_', 'train_', 1)))['name']}"
            '/models/net_g_latest.pth')


@pytest.mark.parametrize('path', [p for p in PAPER if p.name.startswith('train_')], ids=lambda p: p.name)
def test_train_files_have_the_paper_hyper_parameters(path):
    _, _, kind, _ = parse_name(path)
    opt = load(path)
    train = opt['train']
    assert train['optim_g']['type'] == 'Adam' and float(train['optim_g']['lr']) == 1e-4
    assert train['scheduler'] == {'type': 'MultiStepLR', 'gamma': 0.5,
                                  'milestones': [100 * ITERS_PER_EPOCH * k for k in range(1, 5)]}
    assert train['total_iter'] == 500 * ITERS_PER_EPOCH
    assert train['pixel_opt']['type'] == 'L1Loss'
    ds = opt['datasets']['train']
    assert ds['batch_size_per_gpu'] == 16 and ds['io_backend']['type'] == 'lmdb'
    assert ds['dataroot_gt'] == 'datasets/DIV2K/DIV2K_train_HR_sub.lmdb'
    sets = [d['name'] for k, d in opt['datasets'].items() if k != 'train']
    assert sets == (['Set12', 'BSD68', 'Urban100'] if kind == 'gray' else ['Kodak24', 'CBSD68', 'Urban100'])
    assert f'{ITERS_PER_EPOCH:,} iterations' in path.read_text()


@pytest.mark.parametrize('path', PAPER[:1] + PAPER[-1:] + DEMO, ids=lambda p: p.name)
def test_network_builds(path):
    net = build_network(dict(load(path)['network_g']))
    assert sum(p.numel() for p in net.parameters()) > 0


def test_demo_options_build_their_datasets(tmp_path, monkeypatch):
    from datasets_prep import demo
    monkeypatch.chdir(tmp_path)
    assert demo.main(['--out', 'datasets/demo']) == 0
    for path in DEMO:
        for key, ds_opt in load(path)['datasets'].items():
            ds = build_dataset({**ds_opt, 'phase': key.split('_')[0]})
            item = ds[0]
            assert item['lq'].shape[0] == ds_opt['channels']

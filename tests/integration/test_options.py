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
from conftest import REPO, train_yml

OPTIONS = REPO / 'options'
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


# ---- the short Train400 runs behind the shipped weights (weights/README.md)
TRAIN400 = sorted(OPTIONS.glob('train_*_train400.yml'))


def shipped_weight_test_options(weight_path):
    """weights/NAME.pth -> the parsed options/test_NAME.yml that tests it."""
    return load(OPTIONS / f'test_{Path(weight_path).stem}.yml')


@pytest.mark.parametrize('path', TRAIN400, ids=lambda p: p.name)
def test_train400_file_matches_its_test_file_and_weight(path):
    opt = load(path)
    stem = path.name[len('train_'):-len('.yml')]
    assert f'basicsr train -opt options/{path.name}' in path.read_text().split('\n\n')[0]
    assert opt['datasets']['train']['dataroot_gt'] == 'datasets/Train400'
    test_opt = shipped_weight_test_options(f'weights/{stem}.pth')
    assert test_opt['network_g'] == opt['network_g']
    assert test_opt['path']['pretrain_network_g'] == f'weights/{stem}.pth'
    sigma = opt['datasets']['train']['sigma']
    assert {d['sigma'] for d in [*opt['datasets'].values(), *test_opt['datasets'].values()]} == {sigma}
    assert {d['name'] for d in test_opt['datasets'].values()} == {'Set12', 'BSD68'}
    assert opt['train']['scheduler']['periods'] == [opt['train']['total_iter']]  # the decay ends with the run
    init = opt['path']['pretrain_network_g']
    if init:  # fine-tuned from a shipped weight: the architectures must match
        assert shipped_weight_test_options(init)['network_g'] == opt['network_g']


@pytest.mark.parametrize('kind', ['hads', 'hmds'])
def test_distillation_file_has_a_test_file_for_its_student(kind):
    """test_mdrn_{hads,hmds}.yml test what train_mdrn_{hads,hmds}.yml trains, on the noise it was trained for."""
    train, test = load(OPTIONS / f'train_mdrn_{kind}.yml'), load(OPTIONS / f'test_mdrn_{kind}.yml')
    assert test['network_g'] == train['network_g']
    assert test['path']['pretrain_network_g'] == f"experiments/{train['name']}/models/net_g_latest.pth"
    train_set = train['datasets']['train']
    for ds in test['datasets'].values():
        assert (ds['sigma'], ds['channels']) == (train_set['sigma'], train_set['channels'])


# ---- the controlled distillation experiments (docs/distillation.md#controlled-experiments)
KD_EXPERIMENTS = OPTIONS / 'kd_experiments'


def baseline_of(path):
    """The plain run a distillation run is paired with: same experiment (the name's first part: kd at sigma 25, hmds
    at sigma 50, long at 4x the iterations), same seed."""
    experiment, seed = path.name.split('_')[0], re.search(r'_s(\d+)\.yml$', path.name).group(1)
    return KD_EXPERIMENTS / f'{experiment}_plain_s{seed}.yml'


@pytest.mark.parametrize('path', sorted(p for p in KD_EXPERIMENTS.glob('*.yml') if '_plain_' not in p.name),
                         ids=lambda p: p.name)
def test_controlled_kd_run_differs_from_its_baseline_only_by_distillation(path):
    seed = int(re.search(r'_s(\d+)\.yml$', path.name).group(1))
    plain, kd = load(baseline_of(path)), load(path)
    assert plain['model_type'] == 'DenoiseModel' and kd['model_type'] == 'HKDModel'
    assert plain['manual_seed'] == kd['manual_seed'] == seed
    compared_below = {'name', 'model_type', 'network_t', 'path', 'train', 'datasets'}
    assert {k: v for k, v in plain.items() if k not in compared_below} == \
        {k: v for k, v in kd.items() if k not in compared_below}
    assert {k: v for k, v in kd['train'].items() if k != 'kd_opt'} == plain['train']
    assert {k: v for k, v in kd['path'].items() if not k.endswith('_t')} == plain['path']
    # HMDS: the teacher's input, a scaled copy of the student's noise draw (no draw of its own), is the one difference
    hmds = kd['train']['kd_opt']['teacher_input'] == 'lq_teacher'
    assert hmds == (path.name.startswith('hmds_') and 'sigma_teacher' in kd['datasets']['train'])
    assert {**kd['datasets'], 'train': {k: v for k, v in kd['datasets']['train'].items() if k != 'sigma_teacher'}} == \
        plain['datasets']
    for p in (path, baseline_of(path)):
        assert f'basicsr train -opt options/kd_experiments/{p.name}' in p.read_text().split('\n\n')[0]
    teacher = kd['path']['pretrain_network_t']
    if teacher.startswith('weights/'):  # a shipped teacher: its arch, and the noise it was trained at (HMDS: sigma_t)
        teacher_opt = shipped_weight_test_options(teacher)
        assert teacher_opt['network_g'] == kd['network_t']
        train = kd['datasets']['train']
        assert {d['sigma'] for d in teacher_opt['datasets'].values()} == \
            {train['sigma_teacher'] if hmds else train['sigma']}


def test_controlled_kd_runs_choose_on_training_images_only():
    """The loss weights were chosen on a split of Train400 (never on Set12/BSD68): fit and held-out images are
    disjoint, together all 400, and every run trains on the first and validates on the second."""
    fit, held_out = ((KD_EXPERIMENTS / f'train400_{part}.txt').read_text().split() for part in ('fit', 'holdout'))
    assert len(fit) == 360 and len(held_out) == 40 and not set(fit) & set(held_out)
    for path in KD_EXPERIMENTS.glob('*.yml'):
        opt = load(path)
        assert opt['datasets']['train']['meta_info'] == 'options/kd_experiments/train400_fit.txt'
        assert [d['meta_info'] for k, d in opt['datasets'].items() if k != 'train'] == \
            ['options/kd_experiments/train400_holdout.txt']


def test_basicsrs_own_default_warmup_iter_minus_one_passes_through_force_yml(tmp_path, pairs):
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'warmup', total_iter=1)
    pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path), '--force_yml', 'train:warmup_iter=-1',
                             'train:optim_g:lr=2e-4'], str(tmp_path))
    assert (tmp_path / 'experiments' / 'warmup' / 'models' / 'net_g_latest.pth').is_file()


def test_the_option_file_is_read_once_for_every_check_of_a_command(tmp_path, pairs, monkeypatch):
    """Our checks read the option file once (``check_option_file``: plain YAML, bounded); BasicSR parses it itself."""
    from mdrn_models.integration import option_files
    from mdrn_models.tools import pipelines
    reads = []
    real = option_files.check_option_file
    monkeypatch.setattr(option_files, 'check_option_file', lambda path: reads.append(path) or real(path))
    yml = train_yml(tmp_path / 'train.yml', pairs, 'read_once', total_iter=1)
    pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path), '--force_yml', 'name=read_once2'],
                  str(tmp_path))
    assert reads == [str(yml)]


@pytest.mark.bad_input
def test_a_checkpoint_inside_the_run_is_refused_unless_a_real_state_resumes_it(tmp_path):
    """``--auto_resume`` keeps the run folder only when it holds a training state BasicSR's resume reads
    (``<iter>.state``): a ``40_backup.state`` is none, so a fresh start would archive the checkpoint before loading it."""
    from mdrn_models.integration.option_checks import OptionError, check_checkpoints_outside_run
    run = tmp_path / 'experiments' / 'r'
    (run / 'training_states').mkdir(parents=True)
    (run / 'training_states' / '40_backup.state').write_bytes(b'')
    opt = {'is_train': True, 'auto_resume': True, 'network_g': {},
           'path': {'experiments_root': str(run), 'pretrain_network_g': str(run / 'models' / 'net_g_40.pth')}}
    with pytest.raises(OptionError, match="lies inside this run's folder"):
        check_checkpoints_outside_run(opt)
    (run / 'training_states' / '40.state').write_bytes(b'')
    check_checkpoints_outside_run(opt)  # it resumes from 40.state: nothing is archived

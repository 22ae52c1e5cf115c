"""The ``basicsr`` command end to end (real subprocesses) and the BasicSR pipeline fixes it installs.

The pipeline tests use BasicSR's own ``PairedImageDataset`` on noisy/clean pairs written at test time (``pairs`` in
conftest), so they check the foundation (packaging, CLI, resume, test pipeline) independently of the AWGN dataset.
"""
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
import yaml

from conftest import REPO, train_yml, write_yml
from mdrn_models.integration import basicsr_fixes, option_checks, option_files, pipeline_fixes
from mdrn_models.integration.option_checks import OptionError
from mdrn_models.utils import checkpoints


def test_yaml_to_train_to_checkpoint_to_test_psnr(tmp_path, pairs, basicsr_cli):
    root = tmp_path / 'root'
    yml = train_yml(tmp_path / 'train.yml', pairs, 'tiny_e2e', total_iter=4)
    # --local-rank=0 is what torch.distributed.launch passes (pitfall #7); the command maps it for BasicSR
    basicsr_cli('train', '-opt', yml, '--root', root, '--local-rank=0', cwd=tmp_path)
    models = root / 'experiments' / 'tiny_e2e' / 'models'
    assert {'net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth'} <= set(os.listdir(models))

    # no val.suffix although save_img is on (pitfall #12)
    test_yml = write_yml(tmp_path / 'test.yml', f"""
        name: tiny_e2e_test
        model_type: SRModel
        scale: 1
        num_gpu: 0
        datasets:
          test_1:
            name: pairs_test
            type: PairedImageDataset
            dataroot_gt: {pairs / 'gt'}
            dataroot_lq: {pairs / 'lq'}
            io_backend: {{type: disk}}
            color: y
        network_g: {{type: MDRN, num_in_ch: 1, num_out_ch: 1, num_feat: 8, num_block: 1, num_level: 2}}
        path: {{pretrain_network_g: {models / 'net_g_latest.pth'}, strict_load_g: true}}
        val:
          save_img: true
          metrics:
            psnr: {{type: calculate_psnr, crop_border: 0, test_y_channel: false}}
        """)
    out = basicsr_cli('test', '-opt', test_yml, '--root', root, cwd=tmp_path).stdout
    psnr = float(re.search(r'# psnr: ([-\w.]+)', out).group(1))
    assert math.isfinite(psnr) and psnr > 10
    assert len(list((root / 'results' / 'tiny_e2e_test' / 'visualization' / 'pairs_test').glob('*.png'))) == 4


def test_auto_resume_on_cpu_from_another_directory(tmp_path, pairs, basicsr_cli):
    # pitfalls #2 (CUDA-only state loading), #3 (CWD-relative search), #4 (Counter in a weights_only load)
    root = tmp_path / 'root'
    yml = train_yml(tmp_path / 'train.yml', pairs, 'tiny_resume', total_iter=2)
    basicsr_cli('train', '-opt', yml, '--root', root, cwd=tmp_path)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    out = basicsr_cli('train', '-opt', yml, '--root', root, '--auto_resume', '--force_yml', 'train:total_iter=4',
                      cwd=elsewhere).stdout
    assert 'Resuming training from epoch' in out and 'iter: 2.' in out
    exp = root / 'experiments'
    assert (exp / 'tiny_resume' / 'models' / 'net_g_4.pth').is_file()
    assert [p.name for p in exp.iterdir()] == ['tiny_resume']  # nothing renamed to *_archived_*
    assert not (elsewhere / 'experiments').exists()
    # a relative pretrain_network_g missing from the current directory is loaded from under --root
    fine = train_yml(tmp_path / 'fine.yml', pairs, 'tiny_fine', total_iter=1)
    fine.write_text(fine.read_text().replace('pretrain_network_g: ~',
                                             'pretrain_network_g: experiments/tiny_resume/models/net_g_4.pth'))
    out = basicsr_cli('train', '-opt', fine, '--root', root, cwd=elsewhere).stdout
    assert f"Loading MDRN model from {exp / 'tiny_resume' / 'models' / 'net_g_4.pth'}" in out


@pytest.mark.bad_input
@pytest.mark.parametrize('flag', ['-opt', '-op', '-o', '-opt='])  # BasicSR's argparse takes abbreviations too
def test_option_file_cannot_run_code(tmp_path, basicsr_cli, flag):
    marker = tmp_path / 'PWNED'
    yml = tmp_path / 'evil.yml'
    yml.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nmodel_type: SRModel\n')
    args = [f'{flag}{yml}'] if flag.endswith('=') else [flag, yml]
    proc = basicsr_cli('train', *args, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert 'evil.yml:1: refused YAML tag' in proc.stdout
    assert not marker.exists()


@pytest.mark.bad_input
@pytest.mark.parametrize('content, message', [
    ('name: [unclosed\n', 'is not valid YAML'),
    ('- a list\n', 'must hold a YAML mapping'),
])
def test_malformed_option_files_get_one_line_errors(tmp_path, content, message):
    yml = tmp_path / 'bad.yml'
    yml.write_text(content)
    with pytest.raises(option_files.OptionFileError, match=message):
        option_files.check_option_file(yml)
    with pytest.raises(option_files.OptionFileError, match='option file not found'):
        option_files.check_option_file(tmp_path / 'missing.yml')


def test_plugins_from_entry_points_are_loaded(tmp_path):
    # a distribution on the path that declares a module in the basicsr.plugins group
    pkg = tmp_path / 'toyplugin'
    pkg.mkdir()
    (pkg / '__init__.py').write_text(textwrap.dedent("""
        from torch import nn
        from basicsr.utils.registry import ARCH_REGISTRY

        @ARCH_REGISTRY.register()
        class ToyPluginNet(nn.Identity):
            pass
        """))
    dist_info = tmp_path / 'toyplugin-0.1.dist-info'
    dist_info.mkdir()
    (dist_info / 'METADATA').write_text('Metadata-Version: 2.1\nName: toyplugin\nVersion: 0.1\n')
    (dist_info / 'entry_points.txt').write_text('[basicsr.plugins]\ntoy = toyplugin\n')
    code = ('from mdrn_models.integration.plugins import load_plugins; load_plugins(); from basicsr.utils.registry import ARCH_REGISTRY; '
            'ARCH_REGISTRY.get("ToyPluginNet"); ARCH_REGISTRY.get("MDRN"); print("ok")')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), os.getcwd()])}
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert proc.stdout.strip() == 'ok', proc.stderr[-3000:]


def test_resume_keeps_teacher_path_and_param_key():
    # pitfalls #8 and #9: a teacher is never saved by the run, so check_resume must not redirect it
    opt = {'network_g': {}, 'network_t': {},
           'path': {'resume_state': 'x.state', 'models': '/run/models', 'pretrain_network_g': 'old_g.pth',
                    'pretrain_network_t': 'teacher.pth', 'param_key_t': 'params_ema', 'param_key_g': 'params_ema'}}
    basicsr_fixes._check_resume(opt, 100)
    assert opt['path']['pretrain_network_t'] == 'teacher.pth'
    assert opt['path']['param_key_t'] == 'params_ema'
    assert opt['path']['pretrain_network_g'] == os.path.join('/run/models', 'net_g_100.pth')
    assert opt['path']['param_key_g'] == 'params'


def test_distributed_init_without_cuda_uses_gloo(monkeypatch):
    # pitfall #5: BasicSR divides by torch.cuda.device_count() and hard-wires nccl
    monkeypatch.setattr('torch.cuda.is_available', lambda: False)
    with socket.socket() as sock:  # a free port: a fixed one fails when another run on this host holds it
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    for key, value in {'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port), 'RANK': '0', 'WORLD_SIZE': '1',
                       'LOCAL_RANK': '0'}.items():
        monkeypatch.setenv(key, value)
    basicsr_fixes.init_dist('pytorch')
    try:
        assert dist.get_backend() == 'gloo' and dist.get_world_size() == 1
    finally:
        dist.destroy_process_group()


@pytest.mark.bad_input
@pytest.mark.parametrize('edit, message', [
    (('name: tiny_bad', 'name: tiny_bad\nnetwrok_g: {type: MDRN}'), "unknown option key 'netwrok_g' (did you mean "
                                                                       "'network_g'?)"),
    (('num_gpu: 0', 'num_gpu: 4'), 'num_gpu: 4 in'),
    (('color: y\n', 'color: y\n    channels: 3\n'), 'datasets.train is color (channels: 3) but network_g has '
                                                     'num_in_ch: 1'),
    # found by the preflight (mdrn_models/integration/preflight.py), before BasicSR creates the experiment folder
    (('type: L1Loss', 'type: L1Los'), "train.pixel_opt: loss type 'L1Los' is not registered (did you mean 'L1Loss'?)"),
    (('type: PairedImageDataset', 'type: PairedImageDatset'), "dataset type 'PairedImageDatset' is not registered"),
    (('type: calculate_psnr', 'type: calculate_psn'), "did you mean 'calculate_psnr'?"),
    (('dataroot_lq: ', 'dataroot_lq: /nonexistent'), 'datasets.train: '),
    (('pretrain_network_g: ~', 'pretrain_network_g: nowhere.pth'), 'network_g checkpoint not found: nowhere.pth'),
    (('num_block: 1', 'num_blocks: 1'), "network_g: MDRN has no argument 'num_blocks' (did you mean 'num_block'?)"),
    (('num_feat: 8', 'num_feat: 7'), 'network_g (type=MDRN, num_in_ch=1, num_out_ch=1, num_feat=7, num_block=1, '
                                     'num_level=2): MSAB splits its channels into 2 equal groups, one per dilation (1, 2): '
                                     'num_feat must be even, got 7'),
    (('\nval:\n', '\nval:\n  tile: {size: 32}\n'), 'val.tile is set but model_type SRModel ignores it: set model_type: '
                                                'DenoiseModel'),
    # keys below the top level (more in test_bad_section_keys_are_refused)
    (('total_iter: 2', 'total_itr: 2'), "train.total_itr is not an option of model_type SRModel (did you mean "
                                        "'total_iter'?)"),
])
def test_bad_options_stop_before_any_work(tmp_path, pairs, basicsr_cli, edit, message):
    yml = train_yml(tmp_path / 'bad.yml', pairs, 'tiny_bad', total_iter=2)
    assert edit[0] in yml.read_text()
    yml.write_text(yml.read_text().replace(*edit, 1))
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout[-2000:]
    assert 'Traceback' not in proc.stdout and proc.stdout.strip().splitlines()[-1].startswith('error: ')
    assert not (tmp_path / 'experiments').exists()  # nothing was created


@pytest.mark.bad_input
@pytest.mark.parametrize('edit, message', [
    (('  total_iter: 2\n', ''), 'train.total_iter is required for training'),
    (('pixel_opt:', 'pixel_opts:'), "train.pixel_opts is not an option of model_type SRModel (did you mean "
                                    "'pixel_opt'?)"),
    (('loss_weight: 1.0', 'loss_wieght: 1.0'), "train.pixel_opt: L1Loss has no argument 'loss_wieght' (did you mean "
                                               "'loss_weight'?)"),
    (('lr: !!float', 'lrr: !!float'), "train.optim_g: Adam has no argument 'lrr' (did you mean 'lr'?)"),
    (('milestones: [3]', 'milestone: [3]'), "train.scheduler: MultiStepLR has no argument 'milestone' (did you mean "
                                            "'milestones'?)"),
    (('save_img: false', 'save_img: false\n  self_ensamble: true'), 'val.self_ensamble is not an option of '
                                                                     'model_type SRModel'),
    (('strict_load_g: true', 'param_keys_g: params'), "path.param_keys_g is not a path option (did you mean "
                                                      "'param_key_g'?)"),
    (('strict_load_g: true', 'strict_load_t: true'), 'path.strict_load_t: the options have no network_t'),
    (('name: tiny_bad', 'name: tiny_bad\nnetwork_t: {type: MDRN}'), 'network_t set but model_type SRModel does not '
                                                                   'distil: set model_type: HKDModel'),
    (('type: Adam,', 'type: Adamw,'), "train.optim_g: type 'Adamw' is not an optimizer of torch.optim (did you mean "
                                      "'AdamW'?)"),
    (('type: Adam,', 'type: LBFGS,'), 'train.optim_g: LBFGS needs a closure in step(), which BasicSR does not pass'),
])
def test_bad_section_keys_are_refused(tmp_path, pairs, edit, message):
    """The preflight's checks of train/val/path keys and of loss/optimizer/scheduler arguments (in process; the
    command runs them before any folder exists, see test_bad_options_stop_before_any_work)."""
    from mdrn_models.integration import preflight
    yml = train_yml(tmp_path / 'bad.yml', pairs, 'tiny_bad', total_iter=2)
    assert edit[0] in yml.read_text()
    opt = yaml.safe_load(yml.read_text().replace(*edit, 1)) | {'is_train': True}
    with pytest.raises(OptionError, match=re.escape(message)):
        for check in (preflight.check_distillation_keys, preflight.check_section_keys, option_checks.check_path_keys):
            check(opt)
    opt = yaml.safe_load(yml.read_text()) | {'is_train': True}
    for check in (preflight.check_distillation_keys, preflight.check_section_keys, option_checks.check_path_keys):
        check(opt)  # the unedited file passes


@pytest.mark.bad_input
@pytest.mark.parametrize('world_size, batch, ok', [(1, 4, True), (1, 5, False), (2, 2, True), (2, 3, False)])
def test_training_set_must_give_every_process_a_batch(tmp_path, pairs, world_size, batch, ok):
    """BasicSR's training loader drops incomplete batches: 4 images must not be split into batches of 5 (or two
    processes' 2 samples into batches of 3), which would train nothing."""
    from mdrn_models.integration import preflight
    opt = yaml.safe_load(train_yml(tmp_path / 'b.yml', pairs, 'tiny_b', total_iter=2).read_text())
    opt['datasets'] = {'train': opt['datasets']['train'] | {'batch_size_per_gpu': batch}}
    opt['world_size'] = world_size
    if ok:
        preflight.check_datasets(opt)
    else:
        with pytest.raises(OptionError, match=re.escape(
                f'datasets.train: 4 images x dataset_enlarge_ratio 1 give each of the {world_size} process(es) '
                f'{4 // world_size} samples per epoch, fewer than batch_size_per_gpu {batch}')):
            preflight.check_datasets(opt)


@pytest.mark.bad_input
def test_an_enlarge_ratio_past_what_the_sampler_can_list_is_one_line(tmp_path, pairs):
    """BasicSR's sampler lists every sample of an epoch in memory: 4 images x 10^12 would allocate terabytes."""
    from mdrn_models.integration import preflight
    opt = yaml.safe_load(train_yml(tmp_path / 'b.yml', pairs, 'tiny_e', total_iter=2).read_text())
    opt['datasets'] = {'train': opt['datasets']['train'] | {'dataset_enlarge_ratio': 10 ** 12}}
    with pytest.raises(OptionError, match=re.escape(
            'datasets.train: 4 images x dataset_enlarge_ratio 1000000000000 = 4e+12 samples per epoch, which BasicSR\'s '
            'sampler lists in memory at the start of every epoch (about ') + r'\d+ GB of Python integers\): lower '
            'dataset_enlarge_ratio to at most 12500000$'):
        preflight.check_datasets(opt)


def test_any_torch_optimizer_trains_every_iteration_when_batches_are_dropped(tmp_path, pairs, basicsr_cli):
    """BasicSR 1.4.2 builds only Adam (pitfall #11); and with 4 images in batches of 3 it counts 2 iterations per
    epoch where its loader yields 1 (the incomplete batch is dropped), so it stopped after 3 of 4 iterations."""
    root = tmp_path / 'root'
    yml = train_yml(tmp_path / 'train.yml', pairs, 'tiny_adamw', total_iter=4)
    proc = basicsr_cli('train', '-opt', yml, '--root', root, '--force_yml', 'train:optim_g:type=AdamW',
                       'datasets:train:batch_size_per_gpu=3', cwd=tmp_path)
    assert 'Iterations per epoch: 1 (the last incomplete batch of each process is dropped)' in proc.stdout
    run = root / 'experiments' / 'tiny_adamw'
    assert (run / 'models' / 'net_g_4.pth').is_file()
    state = torch.load(run / 'training_states' / '4.state', map_location='cpu', weights_only=False)
    assert state['optimizers'][0]['param_groups'][0]['decoupled_weight_decay']  # AdamW's, Adam's is False


def test_kd_opt_arguments_are_the_losss_plus_the_distillation_keys():
    from mdrn_models.integration import preflight
    kd_opt = {'layers': ['msag_0_1'], 'teacher_input': 'lq', 'dry_run_size': 32, 'loss_weight': 1.0}  # no type: L1
    opt = {'is_train': True, 'model_type': 'HKDModel',
           'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [1]},
                     'total_iter': 1, 'pixel_opt': {'type': 'L1Loss'}, 'kd_opt': kd_opt}}
    preflight.check_section_keys(opt)
    kd_opt['loss_wieght'] = kd_opt.pop('loss_weight')
    with pytest.raises(OptionError, match=re.escape(
            "train.kd_opt: L1Loss has no argument 'loss_wieght' (did you mean 'loss_weight'?)")):
        preflight.check_section_keys(opt)


@pytest.mark.bad_input
def test_bad_val_tile_stops_before_the_run_is_archived(tmp_path, pairs, basicsr_cli):
    yml = train_yml(tmp_path / 'bad.yml', pairs, 'tiny_tile', total_iter=2)
    yml.write_text(yml.read_text().replace('model_type: SRModel', 'model_type: DenoiseModel')
                   .replace('\nval:\n', '\nval:\n  tile: {size: 60}\n', 1))
    run = tmp_path / 'experiments' / 'tiny_tile'
    run.mkdir(parents=True)  # an earlier run of the same name
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stdout, proc.stdout[-2000:]
    assert 'val.tile.size must be a positive multiple of 8' in proc.stdout.strip().splitlines()[-1]
    assert os.listdir(tmp_path / 'experiments') == ['tiny_tile']  # not archived


@pytest.mark.bad_input
def test_force_yml_seed_and_missing_section(tmp_path, pairs, basicsr_cli, monkeypatch):
    """--force_yml manual_seed=N seeds the run (BasicSR seeds before applying --force_yml); a key path through a
    missing section names the sections there are."""
    from mdrn_models.integration import pipeline_fixes
    yml = train_yml(tmp_path / 'seed.yml', pairs, 'tiny_seed', total_iter=2)
    monkeypatch.setattr(sys, 'argv', ['basicsr', '-opt', str(yml), '--force_yml', 'manual_seed=7'])
    opt, _ = pipeline_fixes.parse_options(str(tmp_path), is_train=True)
    assert opt['manual_seed'] == 7 and torch.initial_seed() == 7
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, '--force_yml', 'datasets:val_1:name=x', cwd=tmp_path,
                       check=False)
    assert proc.stdout.strip().splitlines()[-1] == (
        "error: --force_yml datasets:val_1:name=x: datasets has no section 'val_1' (sections there: train, val); "
        'fix the key path'), proc.stdout[-2000:]


@pytest.mark.parametrize('tty, force_yml, pbar', [(True, [], True), (False, [], False),
                                                  (True, ['--force_yml', 'val:pbar=false'], False)])
def test_basicsr_test_shows_a_progress_bar_on_a_terminal(tmp_path, pairs, monkeypatch, tty, force_yml, pbar):
    """``basicsr test`` turns on SRModel's per-image progress bar (``val.pbar``) when stderr is a terminal, unless the
    options say otherwise; training keeps BasicSR's default (no bar between the log lines)."""
    from mdrn_arch import MDRN
    weights = tmp_path / 'net.pth'
    torch.save({'params': MDRN(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_level=2).state_dict()}, weights)
    yml = train_yml(tmp_path / 'test.yml', pairs, 'tiny_pbar', total_iter=2)
    yml.write_text(yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {weights}'))
    monkeypatch.setattr(sys.stderr, 'isatty', lambda: tty)
    monkeypatch.setattr(sys, 'argv', ['basicsr test', '-opt', str(yml), *force_yml])
    opt, _ = pipeline_fixes.parse_options(str(tmp_path), is_train=False)
    assert opt['val']['pbar'] is pbar
    opt, _ = pipeline_fixes.parse_options(str(tmp_path), is_train=True)
    assert 'pbar' not in opt['val'] or opt['val']['pbar'] is False


@pytest.mark.parametrize('argv', [['--force_yml', 'datasets:val=~'],
                                  ['--force_yml', 'train:total_iter=3', 'datasets:val=None'],
                                  ['--force_yml=datasets:val=~']])
def test_force_yml_drops_a_dataset(tmp_path, pairs, monkeypatch, argv):
    """``datasets:NAME=~`` removes a dataset (e.g. a test set not downloaded); BasicSR set it to None and then failed
    on it with a TypeError. Other entries still apply; the command line is left as it was (BasicSR logs it)."""
    yml = train_yml(tmp_path / 'drop.yml', pairs, 'tiny_drop', total_iter=2)
    full = ['basicsr', '-opt', str(yml), *argv]
    monkeypatch.setattr(sys, 'argv', list(full))
    opt, _ = pipeline_fixes.parse_options(str(tmp_path), is_train=True)
    assert list(opt['datasets']) == ['train'] and sys.argv == full
    assert opt['train']['total_iter'] == (3 if 'train:total_iter=3' in argv else 2)


@pytest.mark.bad_input
def test_dropping_a_dataset_trains_without_it_and_a_wrong_name_is_one_line(tmp_path, pairs, basicsr_cli):
    yml = train_yml(tmp_path / 'drop.yml', pairs, 'tiny_drop', total_iter=2)
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, '--force_yml', 'datasets:val_2=~', cwd=tmp_path,
                       check=False)
    assert proc.stdout.strip().splitlines()[-1] == (
        f"error: --force_yml datasets:val_2=~: {yml} has no dataset 'val_2' (datasets: train, val); fix the name")
    assert not (tmp_path / 'experiments').exists()
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, '--force_yml', 'datasets:val=~', cwd=tmp_path)
    assert (tmp_path / 'experiments/tiny_drop/models/net_g_2.pth').is_file()
    assert 'pairs_val' not in proc.stdout, proc.stdout[-2000:]  # no validation set was built


@pytest.mark.bad_input
def test_force_yml_without_a_value_and_root_before_denoise_are_one_line(tmp_path, pairs, basicsr_cli):
    yml = train_yml(tmp_path / 'train.yml', pairs, 'tiny_fy', total_iter=1)
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, '--force_yml', 'train:total_iter', cwd=tmp_path,
                       check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stdout, proc.stdout[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == ("error: --force_yml train:total_iter: give KEY:SUB=VALUE with one "
                                                    "'=', e.g. train:total_iter=1000")
    assert not (tmp_path / 'experiments').exists()
    # the top-level --root before denoise used to hand denoise's -i/-o to basicsr test
    proc = basicsr_cli('--root', tmp_path, 'denoise', '-opt', yml, '-i', pairs / 'lq', '-o', tmp_path / 'out/',
                       cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stdout
    assert 'basicsr denoise: error: --root is where train/test write' in proc.stdout.strip().splitlines()[-1]
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'results').exists()


def test_make_with_an_empty_torch_pin_skips_the_torch_step():
    """README: on another CUDA, install your own torch pair and run make ... TORCH_PIN= (pip with no requirement
    fails)."""
    make = shutil.which('make') or pytest.skip('make is not installed')
    steps = {pin: subprocess.run([make, '-n', '-B', 'install', *args], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout for pin, args in (('default', []), ('empty', ['TORCH_PIN=']))}
    assert 'pip install torch==' in steps['default'] and 'pip install -e' in steps['default']
    assert 'torch' not in steps['empty'] and 'pip install -e' in steps['empty']


@pytest.mark.bad_input
def test_a_training_state_given_as_weights_is_named():
    from mdrn_models.utils import checkpoints
    state = {'epoch': 1, 'iter': 2, 'optimizers': [], 'schedulers': []}
    with pytest.raises(checkpoints.CheckpointError, match=re.escape(
            'network_g checkpoint 2.state is a training state (for resuming), not network weights: point '
            'path.pretrain_network_g at models/net_g_<iter>.pth, or resume with --auto_resume')):
        checkpoints.select_state(state, '2.state', 'params')


def test_preflight_leaves_the_seeded_init_alone():
    """The preflight builds every network (random init); the run's seeded initialisation must not shift."""
    from mdrn_models.integration.preflight import preflight
    opt = {'is_train': False, 'model_type': 'SRModel', 'network_g': {'type': 'MDRN', 'num_feat': 8, 'num_block': 1}}
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    preflight(opt)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize('dataset, net, message', [
    ({}, {'num_in_ch': 1}, 'datasets.train is color (channels: 3, the default) but network_g has num_in_ch: 1'),
    ({'channels': 1}, {'num_in_ch': 1, 'num_out_ch': 3}, 'is gray (channels: 1) but network_g has num_out_ch: 3'),
])
def test_dataset_and_network_channels_must_agree(dataset, net, message):
    from mdrn_models.integration.option_checks import OptionError, check_options
    opt = {'datasets': {'train': {'name': 'set', 'type': 'AWGNDenoisingDataset', **dataset}},
           'network_g': {'type': 'MDRN', **net}, 'val': {}}
    with pytest.raises(OptionError, match=re.escape(message)):
        check_options(opt)
    ch = dataset.get('channels', 3)
    check_options({**opt, 'network_g': {'type': 'MDRN', 'num_in_ch': ch, 'num_out_ch': ch}})  # agreeing: no error


@pytest.mark.bad_input
def test_failed_relaunch_keeps_the_run_and_test_needs_weights(tmp_path, pairs, basicsr_cli):
    """A relaunch with a mistake must not archive the real run (BasicSR renames experiments/NAME when it starts):
    --auto_resume afterwards continues it. A checkpoint that does not fit is one line; so is testing no weights."""
    yml = train_yml(tmp_path / 'run.yml', pairs, 'tiny_keep', total_iter=2)
    basicsr_cli('train', '-opt', yml, '--root', tmp_path, cwd=tmp_path)
    run = tmp_path / 'experiments' / 'tiny_keep'
    before = sorted(os.listdir(tmp_path / 'experiments'))
    wide = str(tmp_path / 'net_g_2.pth')  # outside the run: a fresh start would archive it with the run
    shutil.copy(run / 'models' / 'net_g_2.pth', wide)
    for edit, message in [
            (('dataroot_gt: ', 'dataroot_gt: /nonexistent'), 'datasets.train: '),
            (('num_feat: 8', 'num_feat: 16'), f'network_g checkpoint {wide} does not fit network_g: '),
            (('pretrain_network_g: ~', f'pretrain_network_g: {yml}'), 'is not a PyTorch checkpoint'),
            # a fresh start would archive the run, checkpoint included, before loading it
            (('pretrain_network_g: ~', f'pretrain_network_g: {run}/models/net_g_2.pth'),
             "lies inside this run's folder"),
    ]:
        bad = tmp_path / 'bad.yml'
        text = yml.read_text().replace(*edit, 1)
        bad.write_text(text if 'num_feat: 16' not in text else text.replace('pretrain_network_g: ~',
                                                                             f'pretrain_network_g: {wide}'))
        proc = basicsr_cli('train', '-opt', bad, '--root', tmp_path, cwd=tmp_path, check=False)
        assert proc.returncode != 0 and message in proc.stdout, proc.stdout[-2000:]
        assert 'Traceback' not in proc.stdout and proc.stdout.strip().splitlines()[-1].startswith('error: ')
        assert sorted(os.listdir(tmp_path / 'experiments')) == before  # nothing archived, nothing created
    yml.write_text(yml.read_text().replace('total_iter: 2', 'total_iter: 3'))
    out = basicsr_cli('train', '-opt', yml, '--root', tmp_path, '--auto_resume', cwd=tmp_path).stdout
    assert 'Resuming training from epoch' in out and 'iter: 2' in out
    proc = basicsr_cli('test', '-opt', yml, '--root', tmp_path, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'has no path.pretrain_network_g: basicsr test would score a randomly' in \
        proc.stdout and not (tmp_path / 'results').exists()


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.bad_input
def test_network_checkpoint_cannot_run_code(tmp_path, pairs, basicsr_cli):
    marker = tmp_path / 'PWNED'
    evil = tmp_path / 'evil.pth'
    torch.save({'params': {}, 'extra': _RunsCode(marker)}, evil)
    yml = train_yml(tmp_path / 'train.yml', pairs, 'tiny_evil', total_iter=2)
    yml.write_text(yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {evil}'))
    proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert f'refused to load {evil} with weights_only=True' in proc.stdout, proc.stdout[-2000:]
    assert not marker.exists()
    with pytest.raises(checkpoints.CheckpointError, match='network checkpoint not found'):
        checkpoints.check_checkpoint(str(tmp_path / 'nope.pth'))
    with pytest.raises(checkpoints.CheckpointError, match='train.yml is not a PyTorch checkpoint'):
        checkpoints.check_checkpoint(str(yml))

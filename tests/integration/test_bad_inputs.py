"""Mistakes and hostile inputs that must end in one line before any folder exists, touching nothing the user made:
run names outside the run's root, ``--force_yml`` text BasicSR would execute, YAML that does not mean what it says,
a root that cannot be written, and loads that could run pickled code."""
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, train_yml
from mdrn_models.integration import pipeline_fixes
from mdrn_models.integration.option_files import OptionFileError, check_option_file

pytestmark = pytest.mark.bad_input


def tree(root):
    """Every path under ``root`` with its bytes (files) or None (folders): to show nothing changed."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            found[os.path.join(folder, d)] = None
        for f in files:
            with open(os.path.join(folder, f), 'rb') as fh:
                found[os.path.join(folder, f)] = fh.read()
    return found


@pytest.mark.parametrize('name', ['{outside}', '../../{base}', '..', '', 'a/b', 'n' * 201])
def test_a_run_name_outside_its_root_is_refused_before_anything_moves(tmp_path, pairs, basicsr_cli, name):
    outside = tmp_path / 'mine'  # a folder of the user's, with their files, next to the run's root
    (outside / 'experiments').mkdir(parents=True)
    (outside / 'notes.txt').write_text('keep me')
    root = tmp_path / 'root' / 'sub'
    root.mkdir(parents=True)
    yml = train_yml(tmp_path / 'train.yml', pairs, 'ok_name', total_iter=2)
    before = tree(tmp_path)
    name = name.format(outside=outside, base=outside.name)
    proc = basicsr_cli('train', '-opt', yml, '--root', root, '--force_yml', f'name={name}', cwd=tmp_path, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stdout.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'must be one plain folder name' in errors[0], proc.stdout[-2000:]
    assert 'Traceback' not in proc.stdout
    assert tree(tmp_path) == before  # nothing created, renamed or emptied


def test_force_yml_code_is_never_run(tmp_path, pairs, basicsr_cli):
    """BasicSR ``eval``s a list value and ``exec``s the key path. The list is read as YAML data instead (here a list
    holding one string, which is no run name), the key path is refused: one line each, and nothing runs."""
    yml = train_yml(tmp_path / 'train.yml', pairs, 'evil_force', total_iter=2)
    marker = tmp_path / 'PWNED'
    for entry, message in [
            (f'name=[__import__("os").system("touch {marker}")]', 'must be one plain folder name'),
            (f'name"];__import__("os").system("touch {marker}");opt["name=x', 'a key path is names of letters')]:
        proc = basicsr_cli('train', '-opt', yml, '--root', tmp_path, '--force_yml', entry, cwd=tmp_path, check=False)
        assert proc.returncode != 0 and message in proc.stdout and 'Traceback' not in proc.stdout, proc.stdout[-2000:]
        assert not marker.exists() and not (tmp_path / 'experiments').exists()


def test_force_yml_values_keep_basicsrs_meaning():
    assert pipeline_fixes.force_yml_value('[100, 200]') == [100, 200]
    assert pipeline_fixes.force_yml_value('[a, 1.5]') == ['a', 1.5]
    assert pipeline_fixes.force_yml_value('~') is None and pipeline_fixes.force_yml_value('3') == 3
    assert pipeline_fixes.force_yml_value('3.5') == 3.5 and pipeline_fixes.force_yml_value('true') is True
    assert pipeline_fixes.force_yml_value('v1.2') == 'v1.2' and pipeline_fixes.force_yml_value('1.2.3') == '1.2.3'
    # numbers BasicSR leaves as text: negative, signed, e-notation
    assert [pipeline_fixes.force_yml_value(v) for v in ('-1', '-0.5', '2e-4', '+3', '-1E3')] == [-1, -0.5, 2e-4, 3,
                                                                                                -1000.0]
    assert isinstance(pipeline_fixes.force_yml_value('-1'), int)
    with pytest.raises(SystemExit, match='not a YAML list'):
        pipeline_fixes.force_yml_value('[1, 2')


@pytest.mark.parametrize('text, message', [
    ('name: x\nsigma: 50\nsigma: 15\n', r"bad.yml:3: key 'sigma' is given twice \(first on line 2\)"),
    ('datasets:\n  train:\n    sigma: 50\n    gt_size: 64\n    sigma: 15\n', r"bad.yml:5: key 'sigma' is given twice"),
])
def test_duplicate_keys_are_refused_with_both_lines(tmp_path, text, message):
    yml = tmp_path / 'bad.yml'
    yml.write_text(text)
    with pytest.raises(OptionFileError, match=message):
        check_option_file(str(yml))


def test_an_option_file_that_is_not_utf8_is_one_line(tmp_path):
    yml = tmp_path / 'utf16.yml'
    yml.write_text('name: x\n', encoding='utf-16')
    with pytest.raises(OptionFileError, match=r'utf16.yml is not UTF-8 text .*: save it as UTF-8$'):
        check_option_file(str(yml))


def test_an_unwritable_root_is_one_line_before_anything(tmp_path, pairs, monkeypatch):
    # (as root every folder is writable, so the check is exercised by denying it)
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'ro_root', total_iter=2)
    monkeypatch.setattr(pipelines.os, 'access', lambda path, mode: False)
    with pytest.raises(SystemExit, match=r'^basicsr train: error: --root .*: cannot write to .*: choose a writable'):
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path / 'new' / 'root')], str(tmp_path / 'new' /
                                                                                               'root'))
    assert not (tmp_path / 'new').exists()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_no_load_in_the_command_honours_torch_force_no_weights_only_load(tmp_path):
    """An arch constructor that calls ``torch.load`` itself (without ``weights_only``) must not run a pickle payload
    in the command's process, whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says."""
    evil, marker = tmp_path / 'evil.pth', tmp_path / 'PWNED'
    torch.save({'x': _RunsCode(marker)}, evil)
    code = ('import sys, torch, mdrn_cli; mdrn_cli.refuse_unsafe_loads()\n'
            f'try:\n    torch.load({str(evil)!r})\nexcept Exception as exc:\n    print("refused", type(exc).__name__)\n')
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1'}
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert 'refused UnpicklingError' in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is ignored' in proc.stderr
    assert not marker.exists()


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    """Weights with a NaN/Inf load into nothing the command runs (train, test, denoise, a teacher, compare: they all
    read checkpoints through check_checkpoint)."""
    from mdrn_arch import MDRN
    from mdrn_models.utils.checkpoints import CheckpointError, check_checkpoint, first_non_finite
    state = MDRN(num_feat=8, num_block=1, num_level=1).state_dict()
    torch.save({'params': state}, tmp_path / 'good.pth')
    assert check_checkpoint(str(tmp_path / 'good.pth'))['params'].keys() == state.keys()
    state['msag_0_0.body.0.fusion.weight'][0, 0, 0, 0] = float('nan')
    torch.save({'params': state, 'iter': 3}, tmp_path / 'nan.pth')
    with pytest.raises(CheckpointError, match=r'nan.pth holds non-finite values \(NaN or Inf\) in '
                                              r'params/msag_0_0.body.0.fusion.weight: .*earlier checkpoint'):
        check_checkpoint(str(tmp_path / 'nan.pth'))
    assert first_non_finite({'a': [torch.ones(2), {'b': torch.tensor([1.0, float('inf')])}]}) == 'a/1/b'
    assert first_non_finite({'n': torch.arange(3), 'x': torch.zeros(2)}) is None


def test_basicsr_test_refuses_nan_weights_in_one_line(tmp_path, pairs, basicsr_cli):
    from mdrn_arch import MDRN
    net = MDRN(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_level=2)
    state = net.state_dict()
    state['tail.bias'].fill_(float('inf'))
    torch.save({'params': state}, tmp_path / 'inf.pth')
    yml = train_yml(tmp_path / 'test.yml', pairs, 'nan_test', total_iter=2)
    yml.write_text(yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {tmp_path / "inf.pth"}'))
    proc = basicsr_cli('test', '-opt', yml, '--root', tmp_path, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stdout, proc.stdout[-2000:]
    assert 'holds non-finite values (NaN or Inf) in params/tail.bias' in proc.stdout
    assert not (tmp_path / 'results').exists()


def test_a_non_finite_loss_stops_training_in_one_line():
    from types import SimpleNamespace
    model = SimpleNamespace(opt={'dist': False})
    ok = pipeline_fixes.reduce_loss_dict(model, {'l_pix': torch.tensor(0.5), 'l_kd': torch.tensor(0.25)})
    assert dict(ok) == {'l_pix': 0.5, 'l_kd': 0.25}
    with pytest.raises(SystemExit, match=r'^error: training stopped: loss l_kd is nan \(non-finite\); nothing of this'):
        pipeline_fixes.reduce_loss_dict(model, {'l_pix': torch.tensor(0.5), 'l_kd': torch.tensor(float('nan'))})


def test_a_failed_save_is_loud_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """BasicSR's own save_network through the atomic save: a full disk mid-write is one line and a non-zero exit, the
    previous complete checkpoint stays, no partial file is left."""
    from basicsr.models import base_model
    from mdrn_arch import MDRN
    monkeypatch.setattr(base_model, 'torch', pipeline_fixes.TorchWithAtomicSave())
    model = base_model.BaseModel({'num_gpu': 0, 'is_train': False, 'dist': False, 'path': {'models': str(tmp_path)}})
    net = MDRN(num_feat=8, num_block=1, num_level=1)
    model.save_network(net, 'net_g', -1)
    latest = tmp_path / 'net_g_latest.pth'
    good = latest.read_bytes()
    assert torch.load(latest, weights_only=True)['params'].keys() == net.state_dict().keys()

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full_disk)
    with torch.no_grad():
        net.head.weight.add_(1)
    with pytest.raises(SystemExit, match=r'^error: could not save .*net_g_latest.pth \(the previous one is kept\): '
                                         r'No space left on device; .*--auto_resume$'):
        model.save_network(net, 'net_g', -1)
    assert latest.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ['net_g_latest.pth']


def _previous_run(root, name):
    """A run folder of the user's under ``root``, with a checkpoint and a training state."""
    run = root / 'experiments' / name
    for sub, file in (('models', 'net_g_2.pth'), ('training_states', '2.state')):
        (run / sub).mkdir(parents=True)
        (run / sub / file).write_bytes(b'the user\'s ' + file.encode())
    return run


NUMBER_CASES = [  # (text in train_yml, replacement, what the one line must say)
    ('lr: !!float 1e-3', 'lr: 1e-3', "train.optim_g.lr: '1e-3' is text: YAML reads"),
    ('milestones: [3]', 'milestones: 10', 'train.scheduler.milestones: 10 is not a list of iterations'),
    ('milestones: [3]', 'milestones: [0.5]', 'train.scheduler.milestones: [0]: 0.5 is not a whole number'),
    ('gamma: 0.5', 'gamma: half', "train.scheduler.gamma: 'half' is text, not a number"),
    ('save_checkpoint_freq: 2', 'save_checkpoint_freq: 0', 'logger.save_checkpoint_freq: 0 is out of range'),
    ('val_freq: 100', 'val_freq: 0', 'val.val_freq: 0 is out of range'),
    ('total_iter: 2', 'total_iter: 0', 'train.total_iter: 0 is out of range'),
    ('total_iter: 2', 'total_iter: 2.5', 'train.total_iter: 2.5 is not a whole number'),
    ('print_freq: 1, ', '', 'logger.print_freq is required for training'),
    ('manual_seed: 0', 'manual_seed: -3', 'manual_seed: -3 is out of range'),
    ('num_worker_per_gpu: 0', 'num_worker_per_gpu: -1', 'datasets.train.num_worker_per_gpu: -1 is out of range'),
    ('crop_border: 0', 'crop_border: .inf', 'val.metrics.psnr.crop_border: inf is not a finite number'),
    ('loss_weight: 1.0', 'loss_weight: one', "train.pixel_opt.loss_weight: 'one' is text"),
    ('lr: !!float 1e-3', 'lr: !!float 1e-3, betas: [0.9, 2]', 'Invalid beta parameter at index 1: 2'),
    ('lr: !!float 1e-3', 'lr: -0.1', 'Invalid learning rate: -0.1'),
    ('{type: Adam, lr: !!float 1e-3}', '{type: Adam}', 'train.optim_g.lr is required'),
    ('warmup_iter: -1', 'warmup_iter: -1\n  ema_decay: 2', 'train.ema_decay: 2 is out of range'),
    ('dataset_enlarge_ratio: 1', 'dataset_enlarge_ratio: 1\n    prefetch_mode: gpu', "prefetch_mode 'gpu' is not"),
    # keys BasicSR indexes without a default, or pops, only when it builds the object or logs
    (', use_tb_logger: false', '', 'logger.use_tb_logger is required for training'),
    ('    num_worker_per_gpu: 0\n', '', 'datasets.train.num_worker_per_gpu is required for training'),
    ('    name: pairs_val\n', '', 'datasets.val.name is required (e.g. name: Set12'),
    ('network_g: {', 'network_x: {', 'network_g is required (e.g. network_g: {type: MDRN'),
    ('model_type: SRModel\n', '', 'model_type is missing: set the model to build, e.g. model_type: SRModel'),
    ('{type: MDRN, ', '{', 'network_g has no type: name the network to build, e.g. type: MDRN'),
    ('    type: PairedImageDataset\n', '', 'datasets.train has no type: name the dataset to build'),
    ('{type: L1Loss, ', '{', 'train.pixel_opt has no type: name the loss to build, e.g. type: L1Loss'),
    ('{type: calculate_psnr, ', '{', 'val.metrics.psnr has no type: name the metric to build'),
    ('crop_border: 0,', 'crop_bordr: 0,', "val.metrics.psnr: calculate_psnr needs 'crop_border', an argument without "
                                         "a default: set val.metrics.psnr.crop_border (not 'crop_bordr')"),
]


@pytest.mark.parametrize('old, new, message', NUMBER_CASES, ids=[c[2][:50] for c in NUMBER_CASES])
def test_a_bad_number_is_one_line_before_the_run_folder_moves(tmp_path, pairs, old, new, message):
    """Types and ranges of the numbers BasicSR reads (by the table of them, the constructors' defaults, and the
    optimizer and scheduler's own checks), refused while the previous run of that name is where the user left it."""
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'numbers', total_iter=2)
    text = yml.read_text()
    assert old in text
    yml.write_text(text.replace(old, new, 1))
    _previous_run(tmp_path, 'numbers')
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as exc:
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    assert message in str(exc.value) and '\n' not in str(exc.value), str(exc.value)
    assert tree(tmp_path) == before


def test_training_without_a_training_set_is_one_line(tmp_path, pairs):
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'no_train_set', total_iter=2)
    text = yml.read_text()
    yml.write_text(text[:text.index('  train:\n')] + text[text.index('  val:\n'):])
    with pytest.raises(SystemExit, match=r'training needs a datasets.train section'):
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    assert not (tmp_path / 'experiments').exists()


@pytest.mark.parametrize('fault, raised', [(RuntimeError('a fault the checks cannot see'), RuntimeError),
                                           (KeyboardInterrupt(), SystemExit)])  # Ctrl-C: one line, exit 130
def test_a_run_failing_before_its_first_iteration_moves_the_archive_back(tmp_path, pairs, monkeypatch, fault, raised):
    """Whatever fails between BasicSR's archiving of the previous run folder and the first iteration (here: the data
    loaders), the new folders go and the archived one is moved back, byte for byte: ``--auto_resume`` still finds it."""
    from mdrn_models.tools import pipelines

    def broken_loaders(opt, logger):
        raise fault
    yml = train_yml(tmp_path / 'train.yml', pairs, 'moved_back', total_iter=2)
    yml.write_text(yml.read_text().replace('use_tb_logger: false', 'use_tb_logger: true'))
    _previous_run(tmp_path, 'moved_back')
    (tmp_path / 'tb_logger' / 'moved_back').mkdir(parents=True)
    (tmp_path / 'tb_logger' / 'moved_back' / 'events').write_text('old curves')
    before = tree(tmp_path)
    monkeypatch.setattr(pipeline_fixes, '_original_create_loaders', broken_loaders)
    with pytest.raises(raised):
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    assert tree(tmp_path) == before


def test_a_run_that_has_started_keeps_its_folders(tmp_path, pairs, monkeypatch):
    """Once an iteration has run, the new run folder is the run's (its checkpoints): a later failure keeps it."""
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'started', total_iter=4)
    _previous_run(tmp_path, 'started')
    real_save = pipeline_fixes.TorchWithAtomicSave.save
    calls = []

    def fail_second_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # the first save writes net_g_2.pth and 2.state
            raise SystemExit('error: injected')
        real_save(obj, path, *args, **kwargs)
    monkeypatch.setattr(pipeline_fixes.TorchWithAtomicSave, 'save', staticmethod(fail_second_save))
    with pytest.raises(SystemExit, match='injected'):
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    runs = sorted(p.name for p in (tmp_path / 'experiments').iterdir())
    assert runs[0] == 'started' and runs[1].startswith('started_archived_') and len(runs) == 2
    assert (tmp_path / 'experiments' / 'started' / 'training_states' / '2.state').stat().st_size > 1000


@pytest.mark.parametrize('entry, message', [
    ('datasets:val:name={data}', "datasets.val.name: '{data}' must be one plain folder or file name"),
    ('datasets:val:name=../../x', "datasets.val.name: '../../x' must be one plain folder or file name"),
    ('val:suffix=../../x', "val.suffix: '../../x' must be one plain folder or file name"),
    ('path:extra={data}/made', 'path.extra: {data}/made lies outside the run\'s folder'),
], ids=['dataset-name-absolute', 'dataset-name-relative', 'suffix', 'path-key'])
def test_an_option_that_becomes_a_path_stays_inside_the_run(tmp_path, pairs, entry, message):
    """``basicsr test`` with ``save_img`` joins the dataset's name and ``val.suffix`` into the result paths, and
    BasicSR creates every ``path`` folder: a value leading outside the run folder (here: into the user's dataset) is
    one line, and the dataset stays byte for byte."""
    from mdrn_arch import MDRN
    from mdrn_models.tools import pipelines
    data = tmp_path / 'data'
    (data / 'gt').mkdir(parents=True)
    for k in range(2):
        (data / 'gt' / f'im{k}.png').write_bytes((pairs / 'gt' / f'im{k}.png').read_bytes())
    torch.save({'params': MDRN(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_level=2).state_dict()},
               tmp_path / 'w.pth')
    yml = train_yml(tmp_path / 'test.yml', pairs, 'confined', total_iter=2)
    yml.write_text(yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {tmp_path / "w.pth"}')
                   .replace('save_img: false', 'save_img: true'))
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as exc:
        pipelines.run('test', ['-opt', str(yml), '--root', str(tmp_path), '--force_yml',
                                entry.format(data=data)], str(tmp_path))
    assert message.format(data=data) in str(exc.value) and '\n' not in str(exc.value), str(exc.value)
    assert tree(tmp_path) == before


def test_a_top_level_key_nothing_reads_is_a_warning_not_an_error(tmp_path, pairs, capsys):
    """Another plugin's keys must keep working through ``basicsr``: an unknown key that is no close typo trains, with
    one warning line when the model type's reads are known."""
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'extra_key', total_iter=1)
    yml.write_text(yml.read_text() + 'x_a: 1\n')
    pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith('warning:') and 'x_a' in line]
    assert warnings == ["warning: top-level key 'x_a' is read by nothing (BasicSR, model_type SRModel, this plugin): "
                        'ignored; remove or fix'], warnings
    assert (tmp_path / 'experiments' / 'extra_key' / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.parametrize('entry, message', [
    ('datasets:train:batch_size_per_gpu=-2', 'datasets.train.batch_size_per_gpu: -2 is out of range: it must be at '
                                             'least 1'),
    ('train:total_iter=-5', 'train.total_iter: -5 is out of range'),
])
def test_a_negative_number_through_force_yml_is_range_checked(tmp_path, pairs, entry, message):
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'negative', total_iter=2)
    with pytest.raises(SystemExit) as exc:
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path), '--force_yml', entry], str(tmp_path))
    assert message in str(exc.value) and '\n' not in str(exc.value), str(exc.value)
    assert not (tmp_path / 'experiments').exists()


@pytest.mark.parametrize('launcher, message', [
    ('pytorch', 'error: --launcher pytorch needs the environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, '
                'MASTER_PORT missing): start the command with torchrun --nproc_per_node=N'),
    ('slurm', 'error: --launcher slurm needs the environment SLURM sets (SLURM_PROCID, SLURM_NTASKS, SLURM_NODELIST '
              'missing): start the command with srun'),
])
def test_a_launcher_without_its_environment_is_one_line(tmp_path, pairs, monkeypatch, launcher, message):
    from mdrn_models.tools import pipelines
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'):
        monkeypatch.delenv(name, raising=False)
    yml = train_yml(tmp_path / 'train.yml', pairs, 'launcher', total_iter=2)
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as exc:
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path), '--launcher', launcher], str(tmp_path))
    assert str(exc.value).startswith(message) and '\n' not in str(exc.value), str(exc.value)
    assert tree(tmp_path) == before


@pytest.mark.parametrize('below', ['', 'sub'])
def test_a_root_that_is_a_file_is_one_line(tmp_path, pairs, below):
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'file_root', total_iter=2)
    (tmp_path / 'notes.txt').write_text('mine')
    root = str(tmp_path / 'notes.txt' / below) if below else str(tmp_path / 'notes.txt')
    before = tree(tmp_path)
    with pytest.raises(SystemExit, match=rf'^basicsr train: error: --root .*: {tmp_path}/notes.txt is a file, not a '
                                         'folder: choose a folder for --root'):
        pipelines.run('train', ['-opt', str(yml), '--root', root], root)
    assert tree(tmp_path) == before


BILLION_LAUGHS = 'a: &a [x, x, x, x, x, x, x, x, x]\n' + ''.join(
    f'{b}: &{b} [{", ".join(["*" + a] * 9)}]\n' for a, b in zip('abcdefgh', 'bcdefghi'))


@pytest.mark.parametrize('extra, message', [
    ('x_bomb:\n' + ''.join('  ' + line + '\n' for line in BILLION_LAUGHS.splitlines()),
     'expands to more than 100000 values'),
    ('x_loop: &l [1, *l]\n', 'a YAML alias refers to a section that holds it'),
    ('x_deep: ' + '[' * 5000 + ']' * 5000 + '\n', 'nests its sections too deeply'),
    ('x_big: "' + 'x' * (1 << 20) + '"\n', 'is larger than 1 MiB'),
], ids=['alias-bomb', 'alias-loop', 'deep', 'big'])
def test_an_option_file_that_expands_without_bound_is_one_line_before_anything(tmp_path, pairs, extra, message):
    """Valid YAML built to hurt, under an extra key of a valid option file: refused in one line before any parse by
    BasicSR (which would print the expanded options), and the previous run stays where it was."""
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'bomb', total_iter=2)
    yml.write_text(yml.read_text() + extra)
    _previous_run(tmp_path, 'bomb')
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as exc:
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    assert message in str(exc.value) and '\n' not in str(exc.value), str(exc.value)[:300]
    assert tree(tmp_path) == before


def test_a_full_disk_while_saving_test_images_is_one_line_and_the_results_go(tmp_path, pairs, monkeypatch):
    """BasicSR's "Failed in writing images" becomes the file and its cause, through the command's one handler for
    what the machine refuses (an OSError), and the results folder of the failed test run goes."""
    import mdrn_cli
    from mdrn_arch import MDRN

    def full_disk(path, img, params=()):
        raise OSError(28, 'No space left on device', path)
    torch.save({'params': MDRN(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_level=2).state_dict()},
               tmp_path / 'w.pth')
    yml = train_yml(tmp_path / 'test.yml', pairs, 'full', total_iter=2)
    yml.write_text(yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {tmp_path / "w.pth"}')
                   .replace('save_img: false', 'save_img: true'))
    monkeypatch.setattr(pipeline_fixes, 'write_image', full_disk)
    with pytest.raises(SystemExit) as exc:
        mdrn_cli.main(['test', '-opt', str(yml), '--root', str(tmp_path)])
    assert re.fullmatch(rf'basicsr test: error: {tmp_path}/results/full/visualization/pairs(_val)?/im[0-3]_full.png: '
                        'No space left on device: fix the path or free space, then rerun', str(exc.value)), \
        str(exc.value)
    assert not (tmp_path / 'results').exists()


def test_two_sets_of_one_name_are_one_line(tmp_path, pairs):
    """Results are saved (``visualization/<set name>/``) and metrics reported per set name: a second set of the same
    name would overwrite the first's images without a word."""
    from mdrn_arch import MDRN
    from mdrn_models.tools import pipelines
    torch.save({'params': MDRN(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_level=2).state_dict()},
               tmp_path / 'w.pth')
    yml = train_yml(tmp_path / 'test.yml', pairs, 'two_sets', total_iter=2)
    yml.write_text(yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {tmp_path / "w.pth"}'))
    with pytest.raises(SystemExit) as exc:
        pipelines.run('test', ['-opt', str(yml), '--root', str(tmp_path), '--force_yml', 'datasets:val:name=pairs'],
                       str(tmp_path))
    assert str(exc.value) == (f"error: {yml}: datasets.val.name 'pairs' is also datasets.train's: results are saved "
                              'and metrics reported per name, so one set would overwrite the other; give each its own '
                              'name')
    assert not (tmp_path / 'results').exists()


@pytest.mark.parametrize('old, new, message', [
    ('datasets:\n', 'datasets: [1]\nx_datasets:\n', 'datasets must be a mapping, e.g. {test_1: '),
    ('path: {', 'x_path: {', 'path must be a mapping, e.g. {pretrain_network_g: ~}; it is missing'),
    ('num_gpu: 0\n', '', 'has no num_gpu, which BasicSR reads first'),
    ('  val:\n    name: pairs_val', '  val: 3\n  x_val:\n    name: pairs_val', 'datasets.val must be a mapping of '
                                                                            'dataset options'),
], ids=['datasets-list', 'no-path', 'no-num_gpu', 'dataset-number'])
def test_a_section_basicsr_indexes_in_the_wrong_shape_is_one_line(tmp_path, pairs, old, new, message):
    """What BasicSR's own parser indexes (a missing ``path``, ``datasets`` as a list) would be a traceback from inside
    it: one line before it runs."""
    from mdrn_models.tools import pipelines
    yml = train_yml(tmp_path / 'train.yml', pairs, 'shape', total_iter=2)
    assert old in yml.read_text()
    yml.write_text(yml.read_text().replace(old, new, 1))
    with pytest.raises(SystemExit) as exc:
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    assert message in str(exc.value) and '\n' not in str(exc.value), str(exc.value)
    assert not (tmp_path / 'experiments').exists()


def test_a_val_section_set_to_nothing(tmp_path, pairs):
    """``val: ~`` trains without validation, and ``basicsr test`` (BasicSR reads ``val.save_img`` there) refuses it
    in one line before any folder."""
    from mdrn_arch import MDRN
    from mdrn_models.tools import pipelines
    torch.save({'params': MDRN(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_level=2).state_dict()},
               tmp_path / 'w.pth')
    yml = train_yml(tmp_path / 'train.yml', pairs, 'no_val', total_iter=1)
    pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path), '--force_yml', 'val=~'], str(tmp_path))
    assert (tmp_path / 'experiments' / 'no_val' / 'models' / 'net_g_latest.pth').is_file()
    yml.write_text(yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {tmp_path / "w.pth"}'))
    with pytest.raises(SystemExit) as exc:
        pipelines.run('test', ['-opt', str(yml), '--root', str(tmp_path), '--force_yml', 'val=~'], str(tmp_path))
    assert str(exc.value).startswith(f'error: {yml}: val is required by basicsr test (e.g. val: {{save_img: true')
    assert not (tmp_path / 'results').exists()

"""Built once along every command: one read per checkpoint (the preflight's read is handed to the load that builds
the model, the resume check's to the resume, the tools load what they read: ``mdrn_models/utils/checkpoints.py``),
each dataset built once (the preflight's is handed to BasicSR's ``build_dataset``); and that loader reads either
weight format (.pth, .safetensors)."""
import collections
import os

import torch
import yaml

from conftest import train_yml
from test_hkd_model import STUDENT, _e2e_opt, _write_pngs, save_net


def _count_reads(monkeypatch):
    reads, real = collections.Counter(), torch.load

    def counting(f, *args, **kwargs):
        reads[os.path.basename(str(f))] += 1
        return real(f, *args, **kwargs)
    monkeypatch.setattr(torch, 'load', counting)
    return reads


def test_each_checkpoint_is_read_once_along_every_command(tmp_path, pairs, monkeypatch):
    from mdrn_models.tools import pipelines
    from mdrn_models.tools.model_loading import build_model
    gt = tmp_path / 'toy'
    _write_pngs(gt)
    wide = {**STUDENT, 'num_feat': 16, 'num_block': 2}
    teacher = save_net(wide, tmp_path / 'teacher.pth', key='params_ema')
    yml = tmp_path / 'hmds.yml'
    reads = _count_reads(monkeypatch)
    for total_iter, resume in ((2, []), (4, ['--auto_resume'])):  # distil; resume (student, adapters, state)
        yml.write_text(yaml.safe_dump(_e2e_opt('reads', gt, teacher, wide, total_iter)))
        reads.clear()
        pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path), *resume], str(tmp_path))
        assert reads == ({'teacher.pth': 1} if not resume else {'teacher.pth': 1, 'net_g_2.pth': 1, '2.state': 1})

    weights = tmp_path / 'experiments' / 'reads' / 'models' / 'net_g_4.pth'
    test_yml = train_yml(tmp_path / 'test.yml', pairs, 'reads_test', total_iter=2)
    test_yml.write_text(test_yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {weights}'))
    for run in (lambda: pipelines.run('test', ['-opt', str(test_yml), '--root', str(tmp_path)], str(tmp_path)),
                lambda: build_model(str(test_yml)), lambda: build_model(str(weights))):
        reads.clear()
        run()
        assert reads == {'net_g_4.pth': 1}


def test_each_dataset_is_built_once_along_train_and_test(tmp_path, pairs, monkeypatch):
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from mdrn_models.tools import pipelines
    built, real = [], PairedImageDataset.__init__

    def counting(self, opt):
        built.append(opt['name'])
        real(self, opt)
    monkeypatch.setattr(PairedImageDataset, '__init__', counting)
    yml = train_yml(tmp_path / 'train.yml', pairs, 'built_once', total_iter=2)
    pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    assert sorted(built) == ['pairs', 'pairs_val']
    weights = tmp_path / 'experiments' / 'built_once' / 'models' / 'net_g_2.pth'
    test_yml = train_yml(tmp_path / 'test.yml', pairs, 'built_once_test', total_iter=2)
    test_yml.write_text(test_yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {weights}'))
    built.clear()
    pipelines.run('test', ['-opt', str(test_yml), '--root', str(tmp_path)], str(tmp_path))
    assert sorted(built) == ['pairs', 'pairs_val']  # a test run builds every dataset of the file, as BasicSR does


def test_training_distilling_and_testing_read_safetensors_weights(tmp_path, pairs, basicsr_cli):
    """BasicSR's pretrain_network_g and a teacher's pretrain_network_t may be .safetensors (basicsr export-weights):
    the one loader reads them; the test run scores what the .pth of the same tensors scores."""
    import re
    from mdrn_models.tools import pipelines
    from mdrn_models.tools.export_weights import export
    gt = tmp_path / 'toy'
    _write_pngs(gt)
    wide = {**STUDENT, 'num_feat': 16, 'num_block': 2}
    teacher = save_net(wide, tmp_path / 'teacher.pth')
    export(teacher, str(tmp_path / 'teacher.safetensors'), dtype='fp32')
    yml = tmp_path / 'hmds.yml'
    yml.write_text(yaml.safe_dump(_e2e_opt('st', gt, str(tmp_path / 'teacher.safetensors'), wide, 2)))
    pipelines.run('train', ['-opt', str(yml), '--root', str(tmp_path)], str(tmp_path))
    weights = tmp_path / 'experiments' / 'st' / 'models' / 'net_g_2.pth'
    export(str(weights), str(tmp_path / 'student.safetensors'), dtype='fp32')
    scores = []
    for name, path in (('pth', weights), ('st', tmp_path / 'student.safetensors')):
        test_yml = train_yml(tmp_path / f'test_{name}.yml', pairs, f'st_test_{name}', total_iter=2)
        test_yml.write_text(test_yml.read_text().replace('pretrain_network_g: ~', f'pretrain_network_g: {path}'))
        log = basicsr_cli('test', '-opt', test_yml, '--root', tmp_path, cwd=tmp_path).stdout
        scores.append(re.findall(r'# psnr: ([0-9.]+)', log)[-1])
    assert scores[0] == scores[1]

"""The numbered fixes for BasicSR 1.4.2's own train/test pipelines, each naming its pitfall
(../shared/reference/basicsr_pitfalls.md); ``pipeline_fixes.install`` points BasicSR's module globals at them.
The pitfalls, fixes and tests are listed in docs/robustness.md. The resume functions also pick the newest complete
state and check it against the option file: they are where BasicSR reads the state.
"""
import argparse
import collections
import datetime
import os
import re
import subprocess
import sys
from os import path as osp

import mdrn_arch.basicsr_compat  # noqa: F401

import basicsr.utils.options
import torch
import torch.distributed as dist
import yaml
from basicsr.utils import check_resume, get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch.nn.parallel import DataParallel, DistributedDataParallel

from mdrn_models.integration.option_checks import number_problem
from mdrn_models.utils.checkpoints import (CheckpointError, check_checkpoint, fit_mismatches, keep, select_state,
                                           training_states)
from mdrn_models.utils.distributed import read_on_rank0
from mdrn_models.utils.messages import first_line

_original_yml_value = basicsr.utils.options._postprocess_yml_value
FROZEN_NETWORKS = ('network_t',)  # networks a run reads but never trains or saves (distillation teachers)


def load_resume_state(opt):
    """Pitfalls #2 and #3: ``basicsr.train.load_resume_state`` loading the state on the CPU (BasicSR maps it onto
    ``torch.cuda.current_device()``; the optimizer's ``load_state_dict`` moves it to the parameters' device) and
    searching it under the command's root (BasicSR searches the CWD).

    ``--auto_resume`` takes the newest state that loads and whose network checkpoints all load (a run killed while
    writing resumes from the pair before). In a distributed run rank 0 chooses and reads the state (only it writes
    them) and every rank resumes from it.
    """
    found = read_on_rank0(lambda: _find_resume_state(opt))
    if found is None:
        return None
    opt['path']['resume_state'], state, networks = found
    for net_key, ckpt in networks.items():  # every rank keeps them under the path its own load will read (its root)
        keep(osp.join(opt['path']['models'], f"net_{net_key}_{state['iter']}.pth"), ckpt)
    _check_resume(opt, state['iter'])
    return state


def _find_resume_state(opt):
    """(path, state, network checkpoints) to resume from, or None to start afresh."""
    if opt['auto_resume']:
        state_dir = opt['path']['training_states']
        for it in training_states(state_dir):
            path = osp.join(state_dir, f'{it}.state')
            try:
                state = _load_state(path)
                networks = _check_resume_networks(opt, it)
            except Exception as exc:  # truncated/corrupt file, or a network file of its pair: the one before
                print(f'Skipping training state {path}: {first_line(exc)}', flush=True)
                continue
            return path, state, networks
        _refuse_states_elsewhere(opt)
        return None
    path = opt['path'].get('resume_state')
    if not path:
        return None
    if not osp.isfile(path):
        raise SystemExit(f'error: resume state not found: {path} (fix path.resume_state or use --auto_resume)')
    try:
        state = _load_state(path)
        networks = _check_resume_networks(opt, state['iter'])
    except Exception as exc:
        raise SystemExit(f'error: cannot resume from {path}: {first_line(exc)}; set path.resume_state to an '
                         'earlier state, or use --auto_resume (it takes the newest complete one)') from None
    return path, state, networks


def _check_resume_networks(opt, resume_iter):
    """``{net_key: checkpoint}`` of the ``net_<name>_<iter>.pth`` files resuming at ``resume_iter`` loads. One
    missing or damaged is a CheckpointError (the state before is tried); one that does not fit the option file's
    network stops the run (every state was saved by the same network, so the options changed)."""
    ignore = set(opt['path'].get('ignore_resume_networks') or ()) | set(FROZEN_NETWORKS)
    networks = {}
    for key in opt:
        if key.startswith('network_') and key not in ignore:
            net_key = key[len('network_'):]
            path = osp.join(opt['path']['models'], f'net_{net_key}_{resume_iter}.pth')
            if not osp.isfile(path):
                raise CheckpointError(f'its network checkpoint {path} is missing')
            ckpt = networks[net_key] = check_checkpoint(path, fix='damaged or cut short')
            net_opt = dict(opt[key])
            with torch.random.fork_rng(devices=[]):  # as BasicSR's build_network, without its log line
                net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
            state, _ = select_state(ckpt, path, 'params', net_key)
            misfit = fit_mismatches(net, state, opt['path'].get(f'strict_load_{net_key}', True), net_key)
            if misfit:
                raise SystemExit(f"error: cannot resume run '{opt['name']}': {path} does not fit {key} of "
                                 f'{force_yml_args(sys.argv[1:]).opt}: {misfit}; resume with the network options '
                                 f"the run was trained with (its copy of the option file is in "
                                 f"{opt['path']['experiments_root']}), or start a new run under another name")
    return networks


def _refuse_states_elsewhere(opt):
    """``--auto_resume`` found no state under the command's root: if the option file's project (the folder above
    its ``options/`` folder, or its own folder) holds states of this run, resuming was meant to happen there."""
    opt_file = osp.abspath(force_yml_args(sys.argv[1:]).opt)
    here = osp.abspath(opt['path']['training_states'])
    for project in dict.fromkeys([osp.dirname(osp.dirname(opt_file)), osp.dirname(opt_file)]):
        states = osp.join(project, 'experiments', opt['name'], 'training_states')
        if osp.abspath(states) != here and training_states(states):
            raise SystemExit(f"error: --auto_resume found no training state in {here}, but {states} holds states of "
                             f"run '{opt['name']}': add --root {project} to resume it, or drop --auto_resume to "
                             f"start afresh under {opt['root_path']}")


def _load_state(path):
    """Pitfall #4: a resume state holds a ``collections.Counter`` (the LR milestones), which ``weights_only=True``
    refuses: exactly that class is allowed."""
    with torch.serialization.safe_globals([collections.Counter]):
        return torch.load(path, map_location='cpu', weights_only=True)


def _check_resume(opt, resume_iter):
    """Pitfalls #8/#9: BasicSR's ``check_resume`` points every ``pretrain_network_*`` at the run's own checkpoints
    and rewrites ``param_key*``; a teacher is never saved by the run, so it is kept out of both rewrites."""
    frozen = [net for net in FROZEN_NETWORKS if net in opt]
    ignore = list(opt['path'].get('ignore_resume_networks') or [])
    opt['path']['ignore_resume_networks'] = ignore + [net for net in frozen if net not in ignore]
    keys = [f"param_key_{net[len('network_'):]}" for net in frozen]
    kept = {key: opt['path'][key] for key in keys if key in opt['path']}
    check_resume(opt, resume_iter)
    opt['path'].update(kept)


def force_yml_args(argv):
    """``-opt`` and ``--force_yml`` of ``argv`` as BasicSR's own parser reads them (abbreviations included)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    parser.add_argument('--force_yml', nargs='+', default=[])
    return parser.parse_known_args(argv)[0]


def read_dist_params(opt_path, params, entries):
    """``dist_params`` of the option file with its ``--force_yml dist_params:KEY=VALUE`` entries applied, checked:
    BasicSR initialises the process group before it applies ``--force_yml`` (and reads ``dist_params`` for slurm
    only)."""
    if params is not None and not isinstance(params, dict):
        raise SystemExit(f'error: {opt_path}: dist_params must be a mapping such as {{timeout: 3600}}, got {params!r}')
    params = dict(params or {})
    for entry in entries:
        key, value = (part.strip() for part in entry.split('=', 1))
        if key.startswith('dist_params:'):
            params[key.split(':', 1)[1]] = force_yml_value(value)
    unknown = sorted(set(params) - {'backend', 'port', 'timeout'})
    if unknown:
        raise SystemExit(f"error: {opt_path}: dist_params has no option '{unknown[0]}': its options are backend, "
                         'port (slurm) and timeout (seconds)')
    for key in ('timeout', 'port'):
        problem = key in params and number_problem(params[key], 1, 65535 if key == 'port' else None, key == 'port')
        if problem:
            raise SystemExit(f'error: {opt_path}: dist_params.{key}: {problem}' +
                             (' (seconds a rank waits in a collective)' if key == 'timeout' else ''))
    return params


NUMBER = re.compile(r'[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?')


def force_yml_value(value):
    """(found here) BasicSR's ``_postprocess_yml_value`` for a ``--force_yml`` value, with a list read by YAML's
    safe loader (BasicSR ``eval``s it: ``[__import__('os').system(...)]`` would run), and every number read as one
    (BasicSR leaves ``-1`` and ``2e-4`` text, so its own default ``train:warmup_iter=-1`` would be refused)."""
    if NUMBER.fullmatch(value):
        return int(value) if re.fullmatch(r'[-+]?\d+', value) else float(value)
    if not value.startswith('['):
        return _original_yml_value(value)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, list):
        raise SystemExit(f'error: --force_yml value {value}: not a YAML list of plain values, e.g. [100000, 200000]')
    return parsed


DEFAULT_DIST_TIMEOUT_S = 1800  # torch's default for gloo; NCCL's own default (600 s) is shorter than a long validation
_dist_params = {}  # the run's dist_params (option file + --force_yml), read before BasicSR initialises the group


def dist_backend(backend=None):
    """Pitfall #5: one group serving CPU tensors (gloo) and, with CUDA, CUDA ones (NCCL), so that a ``num_gpu: 0``
    run on a GPU machine and object broadcasts work; ``backend: nccl`` (BasicSR's option files) gets the same pair,
    as NCCL alone cannot hold a CPU tensor. Any other value is used as given."""
    if backend in (None, 'nccl'):
        return 'cpu:gloo,cuda:nccl' if torch.cuda.is_available() else 'gloo'
    return backend


# launcher -> (the variables it sets that init_dist reads, who sets them, how to start the command with them)
LAUNCHER_ENV = {'pytorch': (('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'), 'torchrun',
                            'torchrun --nproc_per_node=N $(which basicsr) train ... --launcher pytorch'),
                'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'), 'SLURM',
                          'srun (e.g. srun --ntasks=N basicsr train ... --launcher slurm)')}


def init_dist(launcher, backend=None, **kwargs):
    """Pitfall #5: ``torchrun``/slurm process-group init with :func:`dist_backend`, the CUDA device from
    ``LOCAL_RANK`` (multi-node safe), and ``dist_params.timeout`` (ranks wait that long for rank 0's validation)
    read for every launcher (BasicSR: slurm only)."""
    needs = LAUNCHER_ENV.get(launcher)
    if needs is None:
        raise SystemExit(f'error: --launcher {launcher}: use none, pytorch (torchrun) or slurm')
    missing = [name for name in needs[0] if name not in os.environ]
    if missing:
        raise SystemExit(f'error: --launcher {launcher} needs the environment {needs[1]} sets ({", ".join(missing)} '
                         f'missing): start the command with {needs[2]}, or drop --launcher to train in one process')
    params = {**kwargs, **_dist_params}  # BasicSR passes a slurm run the file's dist_params, without --force_yml
    backend = dist_backend(params.get('backend', backend))
    timeout = datetime.timedelta(seconds=params.get('timeout', DEFAULT_DIST_TIMEOUT_S))
    if launcher == 'slurm':  # BasicSR's slurm init, without its unconditional torch.cuda.set_device
        if 'MASTER_ADDR' not in os.environ:  # the first node of the job
            node_list = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ['MASTER_PORT'] = str(params.get('port') or os.environ.get('MASTER_PORT', 29500))
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    if torch.cuda.is_available():  # modulo: a process that sees only its own GPU (SLURM's binding) uses device 0
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=timeout)


def model_to_device(self, net):
    """Pitfall #6: ``BaseModel.model_to_device`` wrapping DDP on the CPU without ``device_ids``. And (found here)
    without buffer broadcasts: only rank 0 validates, and a DDP forward with buffers (MDRN's shuffle index, BN
    statistics) would start a broadcast the other ranks never join (gloo: connection closed; NCCL: a hang)."""
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        # DDP syncs only the parameters at wrap time when broadcast_buffers is off, and BasicSR seeds each rank
        # with seed + rank: a buffer initialised at random (spectral norm's power-iteration vectors) would differ
        for buffer in net.buffers():
            dist.broadcast(buffer, src=0)
        net = DistributedDataParallel(net, device_ids=device_ids, broadcast_buffers=False,
                                      find_unused_parameters=self.opt.get('find_unused_parameters', False))
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
        n = self.opt['num_gpu']
        get_root_logger().warning(
            f'{type(net.module).__name__} runs under DataParallel on {n} GPUs: BasicSR loads {n} x '
            'batch_size_per_gpu images per iteration (not the batch_size_per_gpu of the option file); torchrun '
            f'--nproc_per_node={n} ... --launcher pytorch trains with DDP instead.')
    return net


def get_optimizer(self, optim_type, params, lr, **kwargs):
    """``BaseModel.get_optimizer`` for any ``torch.optim`` optimizer, not only Adam (pitfall #11)."""
    return getattr(torch.optim, optim_type)(params, lr, **kwargs)

"""The preflight: checks the ``basicsr`` command runs on the parsed options before BasicSR creates (or archives) the
experiment or results folder, so a mistake costs neither a run folder nor a traceback. Each failure is an
``OptionError`` with one line: where, what, and the fix. What is checked: docs/robustness.md.
"""
import difflib
import inspect
import logging
import math
import sys
from copy import deepcopy
from numbers import Real

import torch

import mdrn_arch.basicsr_compat  # noqa: F401

from basicsr.utils import logger as basicsr_logger
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from mdrn_models.integration.option_checks import (KNOWN_TOP_LEVEL, OptionError, check_checkpoints_outside_run,
                                                   check_path_keys, noise_level_mismatches, number_problem)
from mdrn_models.utils.messages import did_you_mean, first_line
from mdrn_models.utils.checkpoints import (arch_desc, check_checkpoint, checkpoint_path, fit_problem, keep, role,
                                           select_state)


TYPE_EXAMPLES = {'network': 'MDRN', 'dataset': 'AWGNDenoisingDataset', 'loss': 'L1Loss',
                 'metric': 'calculate_psnr'}


def _check_type(section, cfg, registry, kind):
    """``cfg['type']`` is registered: BasicSR looks it up (a KeyError) or pops it (a KeyError when missing) only
    when it builds the object, after the run folder exists, and metrics only at the first validation."""
    name = cfg.get('type') if isinstance(cfg, dict) else None
    if name in registry:
        return
    if name is None:
        raise OptionError(f'{section} has no type: name the {kind} to build, e.g. type: {TYPE_EXAMPLES[kind]}')
    hint = did_you_mean(name, registry._obj_map) or 'install/import the plugin that registers it, or fix the name'
    raise OptionError(f"{section}: {kind} type '{name}' is not registered ({hint})")


def _check_kwargs(where, cfg, fn, own=(), passed=()):
    """Every key of ``cfg`` but ``type`` (and the keys in ``own``, read by the caller) is an argument of ``fn``:
    BasicSR passes them all as keywords, so a typo would be a TypeError after the run folder exists. A value is of
    the kind of its argument's default (a number, a flag, a list of numbers): ``lr: 1e-3``, which YAML reads as
    text, would fail only when the optimizer is built. And every argument without a default is given (but those
    BasicSR passes itself: ``passed``): a metric's ``crop_border`` would be missed at the first validation."""
    signature = inspect.signature(fn).parameters
    open_ended = any(p.kind == p.VAR_KEYWORD for p in signature.values())
    passed = ('self', 'optimizer', 'params', *passed)
    params = [name for name in signature if name not in passed]
    for arg in cfg:
        if arg != 'type' and arg not in params and arg not in own and not open_ended:
            hint = did_you_mean(arg, [*params, *own]) or f'its arguments: {", ".join([*params, *own])}'
            raise OptionError(f"{where}: {cfg.get('type', fn.__name__)} has no argument '{arg}' ({hint})")
        problem = arg in signature and _kind_problem(cfg[arg], signature[arg].default)
        if problem:
            raise OptionError(f'{where}.{arg}: {problem}')
    missing = [name for name in params if signature[name].default is signature[name].empty and name not in cfg
               and signature[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if missing:
        typo = difflib.get_close_matches(missing[0], [arg for arg in cfg if arg not in signature], n=1)
        raise OptionError(f"{where}: {cfg.get('type', fn.__name__)} needs '{missing[0]}', an argument without a "
                          f"default: set {where}.{missing[0]}{f' (not {typo[0]!r})' if typo else ''}")


def _kind_problem(value, default):
    """Why ``value`` is not of the kind of ``default`` (a number, a bool, or a tuple/list of numbers), or None."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f'{value!r} is not true or false'
    if isinstance(default, Real):
        return number_problem(value, -math.inf)
    if isinstance(default, (tuple, list)) and default and all(isinstance(d, Real) for d in default):
        if not isinstance(value, (tuple, list)):
            return f'{value!r} is not a list of numbers (e.g. {list(default)})'
        return next((f'[{i}]: {p}' for i, v in enumerate(value) if (p := number_problem(v, -math.inf))), None)
    return None


def check_network_args(opt):
    """Each ``network_*`` block names a registered arch and only its arguments."""
    for key, cfg in opt.items():
        if key.startswith('network_') and isinstance(cfg, dict):
            _check_type(key, cfg, ARCH_REGISTRY, 'network')
            _check_kwargs(key, cfg, ARCH_REGISTRY.get(cfg['type']))


# What BasicSR 1.4.2's SRModel (sr_model.py, base_model.py) and train_pipeline read from these sections; the model
# types below are the ones whose reads we know (another plugin's model may read keys of its own: not checked).
SRMODEL_KEYS = {'train': {'ema_decay', 'pixel_opt', 'perceptual_opt', 'optim_g', 'scheduler', 'total_iter',
                          'warmup_iter'},
                'val': {'val_freq', 'save_img', 'suffix', 'metrics', 'pbar'}}
# torch.optim classes a BasicSR training step cannot drive (it calls optimizer.step() on conv weights' dense grads)
UNUSABLE_OPTIMIZERS = {'Optimizer': 'is the base class, not an optimizer',
                       'LBFGS': 'needs a closure in step(), which BasicSR does not pass',
                       'SparseAdam': 'takes sparse gradients only', 'Muon': 'takes 2-D parameters only (not convs)'}
TRAIN_REQUIRED = ('optim_g', 'scheduler', 'total_iter')  # indexed without a default: KeyError mid-setup
SCHEDULERS = {'MultiStepLR': 'MultiStepRestartLR', 'MultiStepRestartLR': 'MultiStepRestartLR',
              'CosineAnnealingRestartLR': 'CosineAnnealingRestartLR'}  # BasicSR's names -> its classes


def known_section_keys(model_cls):
    """``{'train': keys, 'val': keys}`` that ``model_cls`` reads, or None for a model type we do not know."""
    from basicsr.models.sr_model import SRModel
    if model_cls is not SRModel and 'OPTION_KEYS' not in vars(model_cls):  # a subclass may read keys of its own
        return None
    own = option_keys(model_cls)
    return {section: SRMODEL_KEYS[section] | set(own.get(section, ())) for section in ('train', 'val')}


def option_keys(model_cls):
    """The ``train``/``val`` keys a registered model type declares it reads besides SRModel's (``OPTION_KEYS``, e.g.
    ``DenoiseModel``'s ``val.tile``): learnt from the registry, never by importing a model."""
    return getattr(model_cls, 'OPTION_KEYS', {})


def check_distillation_keys(opt):
    """Teacher options under a model type that does not distil would be ignored: the run would train without KD."""
    model_type = opt.get('model_type', 'SRModel')
    if not opt.get('is_train') or 'kd_opt' in option_keys(MODEL_REGISTRY.get(model_type)).get('train', ()):
        return
    set_keys = [key for key, present in (
        ('network_t', 'network_t' in opt), ('train.kd_opt', 'kd_opt' in (opt.get('train') or {})),
        ('datasets.train.sigma_teacher', (((opt.get('datasets') or {}).get('train') or {}).get('sigma_teacher')
                                          is not None))) if present]
    if set_keys:
        raise OptionError(f'{" and ".join(set_keys)} set but model_type {model_type} does not distil: set '
                          'model_type: HKDModel (HADS/HMDS), or remove them')


def check_section_keys(opt):
    """Unknown ``train``/``val`` keys of a known model type (a typo would be ignored, or fail after the run folder
    exists), the keys training cannot start without, and the arguments of losses, optimizer and scheduler."""
    from basicsr.models import lr_scheduler
    model_type = opt.get('model_type', 'SRModel')
    model_cls = MODEL_REGISTRY.get(model_type)
    known = known_section_keys(model_cls)
    if known is None:
        return
    for section, keys in known.items():
        for key in opt.get(section) or {}:
            if key not in keys:
                hint = did_you_mean(key, keys) or f'{model_type} reads: {", ".join(sorted(keys))}'
                raise OptionError(f"{section}.{key} is not an option of model_type {model_type} ({hint})")
    train = opt.get('train') or {}
    if not opt.get('is_train'):
        return
    missing = [key for key in TRAIN_REQUIRED if key not in train]
    if missing:
        raise OptionError(f'train.{missing[0]} is required for training (see options/train_mdrn_gray_s25.yml)')
    if not (train.get('pixel_opt') or train.get('perceptual_opt')):
        raise OptionError('train has no loss: set train.pixel_opt, e.g. {type: L1Loss, loss_weight: 1.0}')
    for key, cfg in train.items():
        if key.endswith('_opt') and isinstance(cfg, dict):
            loss = cfg.get('type', 'L1Loss' if key == 'kd_opt' else None)  # HKDModel's default
            if loss in LOSS_REGISTRY:
                own = getattr(model_cls, 'KD_OPTION_KEYS', ()) if key == 'kd_opt' else ()  # the model's, not the loss's
                _check_kwargs(f'train.{key}', cfg, LOSS_REGISTRY.get(loss), own)
    optim = train['optim_g'].get('type')
    optimizers = {name for name, cls in vars(torch.optim).items() if isinstance(cls, type)
                  and issubclass(cls, torch.optim.Optimizer) and name not in UNUSABLE_OPTIMIZERS}
    if optim in UNUSABLE_OPTIMIZERS:
        raise OptionError(f"train.optim_g: {optim} {UNUSABLE_OPTIMIZERS[optim]}: use e.g. Adam or AdamW")
    if optim not in optimizers:
        hint = did_you_mean(optim, optimizers) or 'e.g. Adam, AdamW'
        raise OptionError(f"train.optim_g: type '{optim}' is not an optimizer of torch.optim ({hint})")
    _check_kwargs('train.optim_g', train['optim_g'], getattr(torch.optim, optim))
    scheduler = train['scheduler'].get('type')
    if scheduler not in SCHEDULERS:
        raise OptionError(f"train.scheduler: type '{scheduler}' is not one of BasicSR's: {', '.join(SCHEDULERS)}")
    _check_kwargs('train.scheduler', train['scheduler'], getattr(lr_scheduler, SCHEDULERS[scheduler]))
    _build_on_a_dummy(train, getattr(torch.optim, optim), getattr(lr_scheduler, SCHEDULERS[scheduler]))


def _build_on_a_dummy(train, optimizer_cls, scheduler_cls):
    """Build the optimizer and the scheduler as BasicSR will, on one dummy parameter, so that their own checks of
    ranges (``lr: -1``, ``betas``, ``milestones: 10`` instead of a list) speak now, not after the run folder was
    archived."""
    cfg = {k: v for k, v in train['optim_g'].items() if k != 'type'}
    if 'lr' not in cfg:  # BasicSR passes it positionally: required whatever the optimizer's default
        raise OptionError('train.optim_g.lr is required (the learning rate, e.g. lr: !!float 2e-4)')
    for key in ('milestones', 'periods'):  # iteration lists without a default to compare with
        values = train['scheduler'].get(key)
        problem = values is not None and (
            f'{values!r} is not a list of iterations, e.g. [100000, 200000]' if not isinstance(values, (list, tuple))
            else next((f'[{i}]: {p}' for i, v in enumerate(values) if (p := number_problem(v, 1, integer=True))),
                      None))
        if problem:
            raise OptionError(f'train.scheduler.{key}: {problem}')
    param = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = optimizer_cls([param], **cfg)
    except Exception as exc:  # torch's own checks: ValueError for ranges, TypeError for kinds
        raise OptionError(f"train.optim_g ({train['optim_g']['type']}): {first_line(exc)}") from None
    args = {k: v for k, v in train['scheduler'].items() if k != 'type'}
    try:
        scheduler_cls(optimizer, **args)
    except Exception as exc:
        raise OptionError(f"train.scheduler ({train['scheduler']['type']}): {first_line(exc)} (got {args})") \
            from None


def check_types(opt):
    if opt.get('model_type') is None:  # BasicSR's build_model indexes it
        raise OptionError('model_type is missing: set the model to build, e.g. model_type: SRModel (or DenoiseModel, '
                          'HKDModel)')
    _check_type('model_type', {'type': opt['model_type']}, MODEL_REGISTRY, 'model')
    for name, ds in (opt.get('datasets') or {}).items():
        _check_type(f'datasets.{name}', ds, DATASET_REGISTRY, 'dataset')
    for key, cfg in (opt.get('train') or {}).items():
        # SRModel builds its losses by type; kd_opt defaults to L1Loss, another model's *_opt is its own business
        if key.endswith('_opt') and isinstance(cfg, dict) and ('type' in cfg or key in SRMODEL_KEYS['train']):
            _check_type(f'train.{key}', cfg, LOSS_REGISTRY, 'loss')


def check_val_options(opt):
    """``val.tile`` / ``val.self_ensemble`` only under a model type that reads them; each metric's type and
    arguments; then the model type's own ``check_val_options(opt)`` (``DenoiseModel``: the tile size and overlap)."""
    val = opt.get('val') or {}
    used = [key for key in ('tile', 'self_ensemble') if val.get(key)]
    model_type = opt.get('model_type', 'SRModel')
    model_cls = MODEL_REGISTRY.get(model_type)
    ignored = [key for key in used if key not in option_keys(model_cls).get('val', ())]
    if ignored:
        raise OptionError(f'val.{ignored[0]} is set but model_type {model_type} ignores it: set model_type: '
                          'DenoiseModel (SRModel plus tiling and self-ensemble)')
    for name, cfg in (val.get('metrics') or {}).items():
        _check_type(f'val.metrics.{name}', cfg, METRIC_REGISTRY, 'metric')
        _check_kwargs(f'val.metrics.{name}', cfg, METRIC_REGISTRY.get(cfg['type']), passed=('img', 'img2'))
    _model_check(model_cls, 'check_val_options', opt)


def check_model_options(opt, nets):
    """The model type's ``check_train_options(opt, nets)`` (``nets``: ``build_networks``' result), when training."""
    if opt.get('is_train'):
        _model_check(MODEL_REGISTRY.get(opt.get('model_type', 'SRModel')), 'check_train_options', opt, nets)


def _model_check(model_cls, name, *args):
    check = getattr(model_cls, name, None)
    if check is not None:
        try:
            check(*args)
        except ValueError as exc:
            raise OptionError(str(exc)) from None


_built = []  # (the options, the dataset built from them) for BasicSR's build_dataset: built_dataset()


def built_dataset(dataset_opt):
    """The dataset the preflight built from these very options, handed over once so that BasicSR does not build it
    again (for a disk validation set that reads every image); None when there is none."""
    for k, (built_from, dataset) in enumerate(_built):
        if built_from == dataset_opt:
            del _built[k]
            return dataset
    return None


def forget_built_datasets():
    _built.clear()


def check_datasets(opt):
    for name, ds in (opt.get('datasets') or {}).items():
        try:
            dataset = DATASET_REGISTRY.get(ds['type'])(deepcopy(ds))
        except (ValueError, OSError, KeyError, AssertionError) as exc:
            # str(KeyError) is the repr of its argument (quoted): take the argument itself, and leave every other
            # message's quotes alone (it may start or end with a quoted path)
            msg = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
            raise OptionError(f'datasets.{name}: {first_line(exc, msg)}') from None
        if name == 'train':
            check_batches(ds, len(dataset), opt.get('world_size', 1))
            teacher_input = ((opt.get('train') or {}).get('kd_opt') or {}).get('teacher_input')
            # AWGNDenoisingDataset without sigma_teacher: HKDModel.check_kd_options says more; other datasets: look
            if teacher_input == 'lq_teacher' and ds['type'] != 'AWGNDenoisingDataset' and \
                    'lq_teacher' not in dataset[0]:
                raise OptionError(f"datasets.train: {ds['type']} gives no lq_teacher, the teacher's input under "
                                  'HMDS (train.kd_opt.teacher_input: lq_teacher): use AWGNDenoisingDataset with '
                                  'sigma_teacher set')
        if getattr(dataset, 'file_client', None) is None:  # (an opened file client, e.g. an LMDB handle, must not
            _built.append((deepcopy(ds), dataset))       # cross into the loader's forked workers: built again)


MAX_EPOCH_SAMPLES = 50_000_000  # ~1.7 GB as the Python list EnlargedSampler builds; DIV2K's 32,592 sub-images x 100:
# 3.3 M (BasicSR's EDSR options)


def check_batches(ds, num_images, world_size):
    """Each process must draw at least one full batch per epoch: BasicSR's training loader drops the last incomplete
    one (its EnlargedSampler gives each process ceil(images x enlarge ratio / processes) samples)."""
    ratio, batch = ds.get('dataset_enlarge_ratio', 1), ds.get('batch_size_per_gpu')
    for key, value in (('batch_size_per_gpu', batch), ('dataset_enlarge_ratio', ratio)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise OptionError(f'datasets.train.{key} must be a positive integer, got {value!r}')
    if num_images * ratio > MAX_EPOCH_SAMPLES:
        raise OptionError(f'datasets.train: {num_images} images x dataset_enlarge_ratio {ratio} = '
                          f'{num_images * ratio:.3g} samples per epoch, which BasicSR\'s sampler lists in memory at '
                          f'the start of every epoch (about {num_images * ratio * 36 / 2 ** 30:.0f} GB of Python '
                          f'integers): lower dataset_enlarge_ratio to at most {MAX_EPOCH_SAMPLES // num_images}')
    per_process = math.ceil(num_images * ratio / world_size)
    if per_process < batch:
        raise OptionError(f'datasets.train: {num_images} images x dataset_enlarge_ratio {ratio} give each of the '
                          f'{world_size} process(es) {per_process} samples per epoch, fewer than batch_size_per_gpu '
                          f'{batch}, so training would draw no batch: raise dataset_enlarge_ratio or lower '
                          'batch_size_per_gpu')


def unread_top_level_keys(opt):
    """Warnings for top-level keys that nothing reads, for a model type whose reads are known (another plugin's
    model type may read keys of its own). Close typos of known keys are refused earlier (``check_options``)."""
    if known_section_keys(MODEL_REGISTRY.get(opt.get('model_type', 'SRModel'))) is None:
        return []
    unread = [key for key in opt if key not in KNOWN_TOP_LEVEL and not key.startswith('network_')]
    return [f"top-level key{'s' if len(unread) > 1 else ''} {', '.join(map(repr, unread))} "
            f"{'are' if len(unread) > 1 else 'is'} read by nothing (BasicSR, model_type {opt.get('model_type')}, "
            'this plugin): ignored; remove or fix'] if unread else []


def build_networks(opt):
    """``{net_key: network}`` for every ``network_*`` block, built as BasicSR builds them (random init); a
    constructor's complaint (e.g. an odd ``num_feat`` for MDRN) becomes one line."""
    from basicsr.archs import build_network
    nets = {}
    for key, net_opt in opt.items():
        if key.startswith('network_') and isinstance(net_opt, dict):
            try:
                nets[key[len('network_'):]] = build_network(deepcopy(net_opt))
            except Exception as exc:  # any arch's constructor: e.g. RIDNet with 1 channel fails in a tensor view
                kind = '' if isinstance(exc, (ValueError, TypeError, AssertionError)) else f'{type(exc).__name__}: '
                raise OptionError(f'{key} ({arch_desc(net_opt)}): {kind}{first_line(exc)}') from None
    return nets


def check_checkpoints(opt, nets):
    """Each network checkpoint loads and fits its network; in a distributed run rank 0 reads them (as training
    does), so every rank finds the same problems."""
    for net_key, net in nets.items():
        load_path = checkpoint_path(opt, net_key)
        if not load_path:
            continue
        path_opt = opt['path']
        ckpt = keep(load_path, check_checkpoint(load_path, what=role(net_key), fix="train or import it as the option "
                                                f"file's header says, or set path.pretrain_network_{net_key}"))
        state, _ = select_state(ckpt, load_path, path_opt.get(f'param_key_{net_key}', 'params'), net_key)
        problem = fit_problem(net, state, path_opt.get(f'strict_load_{net_key}', True), load_path, net_key,
                              opt[f'network_{net_key}'])
        if problem:
            raise OptionError(problem)


def preflight(opt):
    """All checks above, cheapest first. The nets they build draw their random init from a forked RNG, so the run's
    seeded initialisation is the same as without the preflight."""
    fresh = 'basicsr' not in basicsr_logger.initialized_logger
    try:
        with torch.random.fork_rng(devices=[]):
            check_types(opt)
            check_network_args(opt)
            check_val_options(opt)  # before check_section_keys: its message for val.tile/self_ensemble says more
            check_distillation_keys(opt)  # likewise for train.kd_opt
            check_section_keys(opt)
            check_path_keys(opt)
            check_checkpoints_outside_run(opt)
            check_datasets(opt)
            nets = build_networks(opt)
            check_model_options(opt, nets)
            check_checkpoints(opt, nets)
        for msg in unread_top_level_keys(opt) + noise_level_mismatches(opt):
            print(f'warning: {msg}', file=sys.stderr)
    finally:
        # BasicSR sets its root logger up once, and only the first call adds the log file and the INFO level; if a
        # check above logged (build_network does), undo that so the pipeline's own call sets it up properly
        if fresh and basicsr_logger.initialized_logger.pop('basicsr', None):
            root = logging.getLogger('basicsr')
            for handler in list(root.handlers):
                root.removeHandler(handler)


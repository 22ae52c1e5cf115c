"""Checks of a parsed option dict that BasicSR does not make (numbers, paths, keys, section shapes), run before any
data is read or any net is built. Each failure is one ``OptionError`` line naming the key and the fix; the cases are
listed in docs/robustness.md.
"""
import itertools
import math
import os
from numbers import Real

from mdrn_models.utils.checkpoints import checkpoint_path, training_states
from mdrn_models.utils.messages import did_you_mean

KNOWN_TOP_LEVEL = {
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val', 'logger',
    'dist_params', 'find_unused_parameters', 'use_static_graph', 'is_train', 'dist', 'rank', 'world_size',
    'auto_resume', 'root_path',
}


class OptionError(ValueError):
    """An option that cannot work; the message says which and how to fix it."""


# (key path, smallest value, largest value or None, integer?) of every number BasicSR 1.4.2's train/test pipelines,
# SRModel and its data loaders read from the options ('*': every entry of that section). Counts may be written as
# floats (BasicSR's own files say ``!!float 5e3``): BasicSR only compares and takes them modulo.
NUMBERS = (
    (('scale',), 1, None, True),
    (('manual_seed',), 0, 2 ** 32 - 1, True),  # numpy's seed range (BasicSR seeds numpy with seed + rank)
    (('train', 'total_iter'), 1, None, True),
    (('train', 'warmup_iter'), -1, None, True),
    (('train', 'ema_decay'), 0, 1, False),
    (('logger', 'print_freq'), 1, None, True),
    (('logger', 'save_checkpoint_freq'), 1, None, True),
    (('val', 'val_freq'), 1, None, True),
    (('datasets', '*', 'batch_size_per_gpu'), 1, None, True),
    (('datasets', '*', 'num_worker_per_gpu'), 0, None, True),
    (('datasets', '*', 'dataset_enlarge_ratio'), 1, None, True),
    (('datasets', '*', 'num_prefetch_queue'), 1, None, True),
    (('val', 'metrics', '*', 'crop_border'), 0, None, True),
)
# keys BasicSR indexes without a default, a KeyError or TypeError after the run folder exists (None counts as missing):
# (key path, '*' for every entry of a section; needed by training or by testing only (True/False) or both (None), an
# example)
LOGGER = 'logger: {print_freq: 100, save_checkpoint_freq: 5000, use_tb_logger: false}'
NEEDED = ((('network_g',), None, 'network_g: {type: MDRN, num_in_ch: 1, num_out_ch: 1}'),
          (('datasets', '*', 'name'), None, "name: Set12, the set's name in the log and the results folder"),
          (('datasets', 'train', 'num_worker_per_gpu'), True, 'num_worker_per_gpu: 4, or 0 to read in the main '
                                                               'process'),
          (('logger', 'print_freq'), True, LOGGER), (('logger', 'save_checkpoint_freq'), True, LOGGER),
          (('logger', 'use_tb_logger'), True, LOGGER),
          (('val',), False, 'val: {save_img: true, metrics: {psnr: {type: calculate_psnr, crop_border: 0}}}'))
PREFETCH_MODES = (None, 'cpu', 'cuda')


def number_problem(value, low, high=None, integer=False):
    """Why ``value`` is not a number in [low, high] (an integer one if ``integer``), or None."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f'{value!r} is text, not a number'
        return (f"{value!r} is text: YAML reads a number in e-notation without a dot as a string; write it as "
                f"{_yaml_float(value)} or !!float {value}")
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        return f'{value!r} is not a finite number'
    if integer and value != int(value):
        return f'{value!r} is not a whole number'
    if value < low or (high is not None and value > high):
        bound = f'at least {low}' if high is None else f'in [{low}, {high}]'
        return f'{value!r} is out of range: it must be {bound}'
    return None


def _yaml_float(text):
    mantissa, _, exponent = text.lower().partition('e')
    return f'{mantissa if "." in mantissa else mantissa + ".0"}e{exponent}' if exponent else text


def _values(node, path, where=(), missing=None):
    """``(key path, value)`` for every value at ``path`` under ``node`` ('*' matches every key of a section); a
    section that is missing (or None) counts as ``missing`` unless that is None."""
    if node is None and missing is not None:
        node = missing
    if not path:
        yield where, node
        return
    if not isinstance(node, dict):
        return
    keys = node if path[0] == '*' else [path[0]] if path[0] in node or missing is not None else []
    for key in keys:
        yield from _values(node.get(key), path[1:], (*where, str(key)), missing)


def check_numbers(opt, source='option file'):
    """Types and ranges of ``NUMBERS``, the keys of ``NEEDED``, and ``prefetch_mode``."""
    for path, low, high, integer in NUMBERS:
        for where, value in _values(opt, path):
            if value is None and path[-1] in ('ema_decay', 'warmup_iter'):  # read with .get: None is the default
                continue
            problem = number_problem(value, low, high, integer)
            if problem:
                raise OptionError(f'{source}: {".".join(where)}: {problem}')
    training = opt.get('is_train')
    if training and not isinstance((opt.get('datasets') or {}).get('train'), dict):
        raise OptionError(f'{source}: training needs a datasets.train section (the training set), e.g. as in '
                          'options/train_mdrn_gray_s25.yml')
    for path, in_training, example in NEEDED:
        for where, parent in _values(opt, path[:-1], missing={}):
            if parent.get(path[-1]) is None and in_training in (None, bool(training)):
                when = {None: '', True: ' for training', False: ' by basicsr test'}[in_training]
                raise OptionError(f'{source}: {".".join((*where, path[-1]))} is required{when} (e.g. {example})')
    if not training:
        return
    if isinstance(opt.get('val'), dict) and 'val_freq' not in opt['val']:
        raise OptionError(f'{source}: val.val_freq is required when a val section is set (validate every N '
                          'iterations), or remove the val section')
    mode = opt['datasets']['train'].get('prefetch_mode')
    if mode not in PREFETCH_MODES:
        raise OptionError(f"{source}: datasets.train.prefetch_mode {mode!r} is not one of BasicSR's: ~, cpu, cuda")
    if mode == 'cuda' and opt['datasets']['train'].get('pin_memory') is not True:
        raise OptionError(f'{source}: datasets.train.prefetch_mode cuda needs pin_memory: true in datasets.train')


# option values that BasicSR joins into a path as one folder or file name: experiments/NAME, tb_logger/NAME,
# results/NAME/visualization/<dataset name>/<image>_<suffix>.png
PATH_PARTS = (('name',), ('datasets', '*', 'name'), ('val', 'suffix'))
# path.* keys BasicSR's make_exp_dirs does not create (it makes a folder of every other one)
NOT_MADE = ('strict_load', 'pretrain_network', 'resume', 'param_key', 'experiments_root', 'results_root')


def path_part_problem(value):
    """Why ``value`` is not one plain file or folder name, or None."""
    text = str(value)
    if text in ('', '.', '..') or any(c in text for c in '/\\\0'):
        return f"{value!r} must be one plain folder or file name (not empty, '.' or '..', no '/' or '\\')"
    return None


def check_paths(opt, source='option file'):
    """Every option value that becomes a path stays inside the run's folder (``experiments/NAME`` or
    ``results/NAME`` under ``--root``): the values of ``PATH_PARTS`` are one name each, and every ``path`` folder
    BasicSR creates at the start of a run lies inside the run's folder."""
    for path in PATH_PARTS:
        for where, value in _values(opt, path):
            problem = value is not None and path_part_problem(value)
            if problem:
                raise OptionError(f'{source}: {".".join(where)}: {problem}: it becomes part of a path under the '
                                  "run's folder")
    sets = [(phase, ds.get('name')) for phase, ds in (opt.get('datasets') or {}).items()
            if isinstance(ds, dict) and not (opt.get('is_train') and phase == 'train')]  # (basicsr test tests all)
    for k, (phase, name) in enumerate(sets):
        first = next((p for p, n in sets[:k] if n == name), None)
        if first is not None:
            raise OptionError(f"{source}: datasets.{phase}.name {name!r} is also datasets.{first}'s: results are saved "
                              'and metrics reported per name, so one set would overwrite the other; give each its own '
                              'name')
    paths = opt.get('path') or {}
    run = paths.get('experiments_root' if opt.get('is_train') else 'results_root')
    if run is None:
        return
    run = os.path.realpath(run)
    for key, folder in paths.items():
        if any(part in key for part in NOT_MADE) or not isinstance(folder, str):
            continue
        if os.path.commonpath([run, os.path.realpath(folder)]) != run:
            raise OptionError(f"{source}: path.{key}: {folder} lies outside the run's folder {run}, and BasicSR "
                              f'creates every path folder at the start of a run: remove path.{key}, or set it '
                              'under the run folder')


def check_options(opt, source='option file'):
    check_numbers(opt, source)
    check_paths(opt, source)
    for key in opt:
        if key in KNOWN_TOP_LEVEL or key.startswith('network_'):
            continue
        # only a near-miss of a known key is refused: other plugins read keys of their own
        hint = did_you_mean(key, KNOWN_TOP_LEVEL | {'network_g', 'network_t'}, cutoff=0.8)
        if hint:
            raise OptionError(f"{source}: unknown option key '{key}' ({hint})")
    for phase, dataset in (opt.get('datasets') or {}).items():
        default = dataset.get('channels') is None and dataset.get('type') == 'AWGNDenoisingDataset'
        channels = 3 if default else dataset.get('channels')  # AWGNDenoisingDataset reads color unless told
        if channels is None:
            continue
        given = ', the default' if default else ''
        kind = {1: 'gray', 3: 'color'}.get(channels, f'{channels}-channel')
        for net_key, key in itertools.product(('network_g', 'network_t'), ('num_in_ch', 'num_out_ch')):
            ch = (opt.get(net_key) or {}).get(key)
            if ch is not None and ch != channels:
                raise OptionError(f'{source}: datasets.{phase} is {kind} (channels: {channels}{given}) but {net_key} '
                                  f'has {key}: {ch}; set both to 1 (gray) or both to 3 (color)')


# top-level sections BasicSR's parser (or its pipelines) index: (required?, an example of the mapping)
SECTIONS = {'datasets': (True, '{test_1: {type: AWGNDenoisingDataset, ...}}'),
            'path': (True, '{pretrain_network_g: ~}'),
            'train': (False, '{total_iter: 1000, ...}'), 'val': (False, '{val_freq: 100, ...}'),
            'logger': (False, '{print_freq: 100, save_checkpoint_freq: 1000}'),
            'dist_params': (False, '{timeout: 3600}')}


def check_sections(tree, source='option file'):
    """The shape of what BasicSR's own parser indexes (``SECTIONS``, each dataset, ``num_gpu``): a section that is
    missing or is no mapping would be a traceback from inside it."""
    for key, (required, example) in SECTIONS.items():
        value = tree.get(key)
        if value is None and not required:
            continue
        if not isinstance(value, dict):
            got = 'it is missing' if key not in tree else f'got {type(value).__name__} {value!r:.40}'
            raise OptionError(f'{source}: {key} must be a mapping, e.g. {example}; {got}')
    for phase, dataset in tree['datasets'].items():
        if not isinstance(dataset, dict):
            raise OptionError(f'{source}: datasets.{phase} must be a mapping of dataset options (type, dataroot_gt, '
                              f'...), got {dataset!r:.40}; or drop it with --force_yml datasets:{phase}=~')
    if 'num_gpu' not in tree:
        raise OptionError(f"{source} has no num_gpu, which BasicSR reads first: set num_gpu: 0 for the CPU, 'auto', "
                          'or the number of GPUs')


PATH_KEYS = {'experiments_root', 'models', 'training_states', 'log', 'visualization', 'results_root', 'root',
             'resume_state', 'ignore_resume_networks'}
NETWORK_PATH_KEYS = ('pretrain_network_', 'strict_load_', 'param_key_')


def check_path_keys(opt):
    """``path`` keys: per-network keys must name a network of the options, and near-misses of known keys are typos
    (``param_keys_t``). Other keys pass: another plugin may read its own."""
    nets = [key[len('network_'):] for key in opt if key.startswith('network_')]
    known = PATH_KEYS | {prefix + net for prefix in NETWORK_PATH_KEYS for net in nets}
    for key in opt.get('path') or {}:
        if key in known:
            continue
        prefix = next((p for p in NETWORK_PATH_KEYS if key.startswith(p)), None)
        if prefix:
            raise OptionError(f'path.{key}: the options have no network_{key[len(prefix):]} '
                              f'({did_you_mean(key, known) or "networks: " + ", ".join(nets)})')
        hint = did_you_mean(key, known, cutoff=0.8)
        if hint:
            raise OptionError(f'path.{key} is not a path option ({hint})')


def check_checkpoints_outside_run(opt):
    """A fresh start archives (renames) an existing run folder before loading any network, so a checkpoint inside it
    would be gone by then; refuse it while the folder is still where the user left it."""
    path_opt = opt.get('path') or {}
    root = path_opt.get('experiments_root')
    if not (opt.get('is_train') and root and os.path.isdir(root)) or path_opt.get('resume_state'):
        return
    if opt.get('auto_resume') and training_states(os.path.join(root, 'training_states')):
        return  # it resumes: nothing is archived
    for key in opt:
        if not key.startswith('network_'):
            continue
        net = key[len('network_'):]
        load_path = checkpoint_path(opt, net)
        if load_path and os.path.abspath(load_path).startswith(os.path.abspath(root) + os.sep):
            raise OptionError(f'path.pretrain_network_{net} ({load_path}) lies inside this run\'s folder {root}, '
                              'which a fresh start archives before loading it: copy the checkpoint elsewhere, '
                              'change name, or resume with --auto_resume')


def noise_level_mismatches(opt):
    """Datasets adding a fixed sigma other than ``network_g.sigma``, the level a network with a noise-level input
    (FFDNet) is told. Warned about, not refused: telling it another level can be the experiment."""
    told = (opt.get('network_g') or {}).get('sigma')
    if not isinstance(told, (int, float)) or isinstance(told, bool):
        return []
    return [f'datasets.{name}.sigma {ds["sigma"]} differs from network_g.sigma {told}, the noise level the network is '
            'told (set them equal unless the mismatch is intended)'
            for name, ds in (opt.get('datasets') or {}).items()
            if isinstance(ds.get('sigma'), (int, float)) and ds['sigma'] != told]

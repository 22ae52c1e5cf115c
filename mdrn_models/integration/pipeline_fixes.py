"""The ``basicsr`` command's hooks into BasicSR 1.4.2's own train/test pipelines. These look ``parse_options``,
``load_resume_state``, ``init_dist``, ``build_model`` and more up as module globals, so :func:`install` swaps them for
the numbered fixes (``basicsr_fixes``) and this project's guards (here) instead of copying the pipelines. The guards
and what each refuses: docs/robustness.md.
"""
import collections
import math
import os
import re
import sys
from os import path as osp

import mdrn_arch.basicsr_compat  # noqa: F401

import basicsr.models.base_model
import basicsr.models.sr_model
import basicsr.test
import basicsr.train
import basicsr.utils.misc
import basicsr.utils.options
import torch
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger, set_random_seed

from mdrn_models.data.awgn_dataset import TrainingDataUnreadable
from mdrn_models.models.training_step import stop_if_non_finite, uses_cuda
from mdrn_models.integration import basicsr_fixes, run_folders
from mdrn_models.integration.basicsr_fixes import (force_yml_args, force_yml_value, get_optimizer, init_dist,
                                                  load_resume_state, model_to_device, read_dist_params)
from mdrn_models.integration.option_checks import NUMBERS, OptionError, check_options, check_sections, number_problem
from mdrn_models.integration.option_files import forget_option_trees, option_tree
from mdrn_models.integration.preflight import built_dataset, forget_built_datasets, preflight
from mdrn_models.utils.checkpoints import CheckpointError, drop_kept, load_weights
from mdrn_models.utils.distributed import (all_ranks_agree, forget_stop_requests, rank, read_on_rank0, reduce_step,
                                           request_stop, stop_if_asked, world_size)
from mdrn_models.utils.images import write_image

_original_parse_options = basicsr.utils.options.parse_options
FORCE_YML_KEYS = re.compile(r'[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*')
RUN_NAME = re.compile(r'[A-Za-z0-9_.+@-]+')
MAX_NAME = 200  # file names hold 255 bytes; BasicSR's archive adds '_archived_YYYYMMDD_HHMMSS'
_original_create_loaders = basicsr.train.create_train_val_dataloader
_original_build_dataset = basicsr.train.build_dataset


def parse_options(root_path, is_train=True):
    """BasicSR's ``parse_options`` plus our option checks, the preflight (before BasicSR creates or archives any
    folder), the defaults SRModel assumes (pitfall #12) and the run lock. Every failure exits with one line."""
    given = force_yml_args(sys.argv[1:])
    entries = given.force_yml
    bad = next((e for e in entries if e.count('=') != 1), None)
    if bad is not None:  # BasicSR splits each entry on '=' into exactly two parts: a ValueError traceback
        raise SystemExit(f"error: --force_yml {bad}: give KEY:SUB=VALUE with one '=', e.g. train:total_iter=1000")
    # BasicSR exec()s 'opt["k1"]["k2"]=value' built from the key path: a key holding quotes or brackets runs code
    bad = next((e for e in entries if not FORCE_YML_KEYS.fullmatch(e.split('=')[0].strip())), None)
    if bad is not None:
        raise SystemExit(f"error: --force_yml {bad}: a key path is names of letters, digits, '_', '-' or '.' "
                         "joined by ':', e.g. train:optim_g:lr=2e-4")
    _check_file_before_parse(given.opt, entries)
    # datasets:NAME=~ removes a dataset (e.g. a test set not downloaded). BasicSR would set it to None and then fail
    # on it (TypeError), so such entries are taken out of its command line and the sections dropped after parsing.
    drops = {e: name for e in entries if (name := _dropped_dataset(e))}  # entry -> dataset name
    argv = sys.argv
    sys.argv = _without_force_yml_entries(argv, entries, drops)
    try:
        opt, args = _original_parse_options(root_path, is_train)
    except KeyError:  # BasicSR indexes opt with each --force_yml key path
        problem = _force_yml_problem(argv[1:])
        if problem is None:  # not a --force_yml key path: a fault of its own
            raise
        raise SystemExit(f'error: {problem}') from None
    finally:
        sys.argv = argv
    for entry, name in drops.items():
        if name not in opt['datasets']:
            raise SystemExit(f"error: --force_yml {entry}: {args.opt} has no dataset '{name}' (datasets: "
                             f"{', '.join(opt['datasets'])}); fix the name")
        del opt['datasets'][name]
    try:
        check_options(opt, args.opt)
    except OptionError as exc:
        raise SystemExit(f'error: {exc}') from None
    # BasicSR seeds before it applies --force_yml: seed again, so that --force_yml manual_seed=N takes effect (the
    # same seed as before otherwise: nothing drew random numbers in between)
    set_random_seed(opt['manual_seed'] + opt['rank'])
    _resolve_checkpoints(opt, root_path)
    if not is_train and not (opt.get('path') or {}).get('pretrain_network_g'):
        raise SystemExit(f'error: {args.opt} has no path.pretrain_network_g: basicsr test would score a randomly '
                         'initialised network; set it to a trained checkpoint (.pth)')
    visible = torch.cuda.device_count()
    if opt['num_gpu'] > visible:
        raise SystemExit(f"error: num_gpu: {opt['num_gpu']} in {args.opt}, but {visible} CUDA device(s) are "
                         "visible: set num_gpu: 0 for the CPU, 'auto', or at most the number of GPUs")
    if uses_cuda(opt) and 'train' in opt['datasets']:  # pinned batches: the models copy them to the GPU without
        opt['datasets']['train'].setdefault('pin_memory', True)  # waiting (DenoiseModel.feed_data)
    try:
        preflight(opt)
    except (OptionError, CheckpointError) as exc:
        raise SystemExit(f'error: {args.opt}: {exc}') from None
    if opt.get('val') is not None:
        opt['val'].setdefault('suffix', None)
        opt['val'].setdefault('save_img', False)
        if not is_train:  # basicsr test: SRModel's per-image progress bar (stderr) on a terminal, not in logs
            opt['val'].setdefault('pbar', sys.stderr.isatty())
    read_on_rank0(lambda: run_folders.lock_run(opt))  # last: a refused launch takes no lock, and folders follow it
    return opt, args


def _check_file_before_parse(opt_path, entries):
    """What BasicSR's parser itself uses, checked before it runs: ``manual_seed`` (it seeds before applying
    ``--force_yml``), ``dist_params``, the shape of the sections it indexes, and the run ``name`` (the file's or
    ``--force_yml name=...``), which it joins to experiments/ and archives: '../x' would rename a folder outside
    --root."""
    tree = option_tree(opt_path)
    seed = tree.get('manual_seed')
    problem = seed is not None and number_problem(seed, *next(n[1:] for n in NUMBERS if n[0] == ('manual_seed',)))
    if problem:
        raise SystemExit(f'error: {opt_path}: manual_seed: {problem}')
    basicsr_fixes._dist_params.clear()
    basicsr_fixes._dist_params.update(read_dist_params(opt_path, tree.get('dist_params'), entries))
    forced = [e.split('=', 1)[1].strip() for e in entries if e.split('=', 1)[0].strip() == 'name']
    name = force_yml_value(forced[-1]) if forced else tree.get('name')
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name) or name in ('.', '..') or len(name) > MAX_NAME:
        raise SystemExit(f"error: {opt_path}: name {name!r} must be one plain folder name (letters, digits, '_', '-', "
                         f"'.', '+', '@'; not empty, '.' or '..'; at most {MAX_NAME} characters), the run's folder "
                         'under experiments/ and results/')
    try:
        check_sections(tree, opt_path)
    except OptionError as exc:
        raise SystemExit(f'error: {exc}') from None


def _resolve_checkpoints(opt, root_path):
    """A relative ``path.pretrain_network_*`` missing from the current directory but present under ``--root`` is
    replaced by the latter, once, so that the preflight and every load read the same file."""
    path_opt = opt.get('path') or {}
    for key in [k for k in opt if k.startswith('network_')]:
        load_path = path_opt.get(f'pretrain_{key}')
        if load_path and not osp.isabs(load_path) and not osp.isfile(load_path) and \
                osp.isfile(osp.join(root_path, load_path)):
            path_opt[f'pretrain_{key}'] = osp.join(root_path, load_path)


def _dropped_dataset(entry):
    """NAME if a ``--force_yml`` entry is ``datasets:NAME=~`` (or ``=none``, as BasicSR reads None), else None."""
    keys, value = (part.strip() for part in entry.split('='))
    section, _, name = keys.partition(':')
    dropped = section == 'datasets' and name and ':' not in name and value.lower() in ('~', 'none')
    return name if dropped else None


def _without_force_yml_entries(argv, entries, drops):
    """``argv`` without the ``drops`` among its ``--force_yml`` ``entries`` (and without the flag if none is left)."""
    if not drops:
        return argv
    kept = [a for a in argv if a.removeprefix('--force_yml=') not in drops]
    return kept if any(e not in drops for e in entries) else [a for a in kept if a != '--force_yml']


def _force_yml_problem(argv):
    """The ``--force_yml`` entry whose key path misses a section, the section, and the sections there are; or None
    when every key path exists."""
    args = force_yml_args(argv)
    tree = option_tree(args.opt)
    for entry in args.force_yml:
        node, where = tree, 'the top level'
        for key in entry.split('=')[0].strip().split(':')[:-1]:
            if not isinstance(node, dict) or key not in node:
                have = ', '.join(map(str, node)) if isinstance(node, dict) else 'none'
                return (f"--force_yml {entry}: {where} has no section '{key}' (sections there: {have}); fix the key "
                        'path')
            node, where = node[key], key
    return None


def load_network(self, net, load_path, strict=True, param_key='params'):
    """``BaseModel.load_network`` through :func:`load_weights`: read once per command (the preflight's read is
    handed over), ``weights_only=True`` (pitfall #4), and in a distributed run on rank 0 only, which sends it to the
    others (the run's own checkpoints are on rank 0's disk alone when the nodes share no filesystem)."""
    net = self.get_bare_model(net)
    paths = self.opt.get('path') or {}
    net_key = next((key[len('pretrain_network_'):] for key, value in paths.items()
                    if key.startswith('pretrain_network_') and value == load_path), 'g')
    used, loaded = load_weights(net, load_path, strict, param_key, net_key, self.opt.get(f'network_{net_key}'))
    total = len(net.state_dict())
    get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{used}]'
                           + (f' ({loaded} of {total} tensors: strict_load_{net_key} is false).'
                              if loaded < total else '.'))


class TorchWithAtomicSave:
    """``torch`` as ``basicsr.models.base_model`` sees it, with ``save`` made atomic and loud: BasicSR writes in
    place and ignores a failed save (exit 0, a truncated ``net_g_latest.pth``). SystemExit passes BasicSR's
    ``except Exception``."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def save(obj, path, *args, **kwargs):
        if rank() != 0:  # a missing @master_only: on nodes without a shared filesystem the folder is not there
            raise RuntimeError(f'rank {rank()} tried to write {path}: only rank 0 writes to the run folder')
        tmp = f'{path}.tmp-{os.getpid()}'
        try:
            with open(tmp, 'wb') as f:
                torch.save(obj, f, *args, **kwargs)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            if osp.exists(tmp):
                os.remove(tmp)
            kept = ' (the previous one is kept)' if osp.exists(path) else ''
            raise SystemExit(f'error: could not save {path}{kept}: {exc.strerror or exc}; free space or fix the '
                             'folder, then resume with --auto_resume') from None


def reduce_loss_dict(self, loss_dict):
    """``BaseModel.reduce_loss_dict`` (called every iteration) with an ``all_reduce`` (BasicSR reduces to rank 0
    only), so that every rank stops together at the first non-finite loss or when a rank asked to stop."""
    values = reduce_step(list(loss_dict.values())).tolist()
    stop_if_asked(values.pop())
    log = collections.OrderedDict(zip(loss_dict, values))
    stop_if_non_finite(log)
    return log


def imwrite(img, file_path, params=None, auto_mkdir=True):
    """BasicSR's ``imwrite`` (validation and test images) through :func:`write_image`: a failed write (a full disk)
    names the file and its cause instead of "Failed in writing images"."""
    write_image(file_path, img, params or ())


def build_dataset(dataset_opt):
    """BasicSR's ``build_dataset``, handing over the dataset the preflight built from the same options (built once)."""
    dataset = built_dataset(dataset_opt)
    if dataset is None:
        return _original_build_dataset(dataset_opt)
    # BasicSR's line
    get_root_logger().info(f'Dataset [{dataset.__class__.__name__}] - {dataset_opt["name"]} is built.')
    return dataset


def create_train_val_dataloader(opt, logger):
    """BasicSR's loaders, with enough epochs for ``total_iter`` at the batches per epoch the loader really yields
    (BasicSR's count assumes the last incomplete batch is kept; its loaders drop it), the training loader wrapped
    in :class:`SkipCountingLoader`."""
    train_loader, train_sampler, val_loaders, total_epochs, total_iters = _original_create_loaders(opt, logger)
    needed = math.ceil(total_iters / len(train_loader))  # the preflight made sure there is at least one batch
    if needed > total_epochs:
        logger.info(f'Iterations per epoch: {len(train_loader)} (the last incomplete batch of each process is '
                    f'dropped), so total epochs: {needed}.')
        total_epochs = needed
    return SkipCountingLoader(train_loader), train_sampler, val_loaders, total_epochs, total_iters


class SkipCountingLoader:
    """The training ``DataLoader``, summing the batches' ``unreadable`` counts (images ``AWGNDenoisingDataset``
    skipped) into ``skipped_reads`` and turning a ``TrainingDataUnreadable`` (which a worker process re-raises
    wrapped in a traceback text) into one line."""
    skipped_reads = [0]  # this process's total, read by report_skipped_reads()

    def __init__(self, loader):
        self.loader = loader
        self.last_batch = None  # stands in for a batch a distributed process could not read (_batches)

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        # the DataLoader iterator is made now, not at the first batch: making it draws the workers' base seed from
        # torch's RNG, and BasicSR's prefetchers make one on creation, so the draws stay where BasicSR has them
        return self._batches(iter(self.loader))

    def _batches(self, batches):
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except TrainingDataUnreadable as exc:  # the dataset's own message is the last line of the worker's text
                message = 'error: ' + re.sub(r'^[\w.]*TrainingDataUnreadable: ', '', str(exc).strip().splitlines()[-1])
                if world_size() == 1 or self.last_batch is None:
                    raise SystemExit(message) from None
                # the other processes would wait for this one in the step's collectives: this step runs on the
                # previous batch again and every process stops at its end, before anything is saved
                request_stop(message)
                yield self.last_batch
                return
            if isinstance(batch, dict) and 'unreadable' in batch:
                self.skipped_reads[0] += int(batch.pop('unreadable').sum())
            self.last_batch = batch
            yield batch


def report_skipped_reads():
    """The end-of-training line: how many training reads met an unreadable image (each was named when it happened)."""
    skipped = SkipCountingLoader.skipped_reads[0]
    if skipped:
        get_root_logger().warning(f'{skipped} training read(s) met an unreadable image and took the next readable '
                                  'one instead (the warnings above name each image): replace or remove those files')


_original_build_model = basicsr.train.build_model


def build_model(opt):
    """BasicSR's ``build_model`` whose model notes when its first training iteration has run, and whose saves end
    every process together when one fails."""
    model = _original_build_model(opt)
    drop_kept()  # the checkpoints the checks read were handed to the loads that built the model
    optimize, save = model.optimize_parameters, model.save

    def save_together(epoch, current_iter):
        """``model.save`` (rank 0 writes), then every rank learns whether it worked: a failed save stops them all."""
        try:
            save(epoch, current_iter)
            failed = None
        except SystemExit as exc:
            failed = exc
        if not all_ranks_agree(failed is None, model.device):
            raise failed or SystemExit('error: training stopped: rank 0 could not save the checkpoint; its message '
                                       'above says why')
    model.save = save_together

    def first_iteration(current_iter):
        optimize(current_iter)
        run_folders.mark_training_started()
        del model.optimize_parameters  # the class's method again from now on
    model.optimize_parameters = first_iteration
    return model


def install():
    """Point BasicSR's pipelines at the fixed functions above (idempotent), for a run about to start."""
    run_folders.forget_launch()
    drop_kept()
    forget_option_trees()
    SkipCountingLoader.skipped_reads[0] = 0
    forget_stop_requests()
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.parse_options = parse_options
    basicsr.train.create_train_val_dataloader = create_train_val_dataloader
    forget_built_datasets()
    basicsr.train.build_dataset = basicsr.test.build_dataset = build_dataset
    basicsr.train.build_model = basicsr.test.build_model = build_model
    # (make_exp_dirs calls the one in basicsr.utils.misc)
    basicsr.train.mkdir_and_rename = basicsr.utils.misc.mkdir_and_rename = run_folders.mkdir_and_rename
    basicsr.test.parse_options = parse_options
    basicsr.utils.options.init_dist = init_dist
    basicsr.utils.options._postprocess_yml_value = force_yml_value
    BaseModel.model_to_device = model_to_device
    BaseModel.load_network = load_network
    BaseModel.get_optimizer = get_optimizer
    basicsr.models.sr_model.imwrite = imwrite
    BaseModel.reduce_loss_dict = reduce_loss_dict
    basicsr.models.base_model.torch = TorchWithAtomicSave()  # save_network / save_training_state save through it

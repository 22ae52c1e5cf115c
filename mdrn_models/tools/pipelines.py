"""``basicsr train`` / ``basicsr test``: BasicSR's own pipelines with the pipeline fixes installed, ``--root``, and a
one-line stop on Ctrl-C/SIGTERM. Flags: docs/cli.md; stopping: docs/robustness.md.
"""
import argparse
import os
import shlex
import sys

from mdrn_models.integration import basicsr_fixes, pipeline_fixes, run_folders
from mdrn_models.integration.option_files import OptionFileError, option_tree
from mdrn_cli.signals import run_stoppable
from mdrn_models.tools import malloc_tuning
from mdrn_models.utils.checkpoints import training_states
from mdrn_models.utils.distributed import rank


def _basicsr_args(argv):
    """``argv`` without ``--root``: the command line BasicSR's own parser reads, otherwise unchanged."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--root')
    return parser.parse_known_args(argv)[1]


def run(command, argv, root):
    """``basicsr train`` / ``basicsr test`` with ``argv`` (BasicSR's flags and ``--root``, whose value is ``root``),
    as parsed by ``mdrn_cli.parsers.train_test``; ``mdrn_cli.main`` has loaded the plugins."""
    malloc_tuning.keep_freed_memory()  # a one-job process: reuse freed feature maps (see malloc_tuning)
    pipeline_fixes.install()
    passthrough = _basicsr_args(argv)
    opt_path = basicsr_fixes.force_yml_args(passthrough).opt  # as BasicSR's argparse reads it (-o, -op too)
    if opt_path is not None:
        try:
            option_tree(opt_path)  # plain YAML, bounded: read once for every check of the command
        except OptionFileError as exc:
            sys.exit(f'basicsr {command}: error: {exc}')

    root = os.path.abspath(root)
    existing = root
    while not os.path.exists(existing):  # BasicSR creates the missing part
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        sys.exit(f'basicsr {command}: error: --root {root}: {existing} is a file, not a folder: choose a folder for '
                 '--root (BasicSR writes experiments/, results/ and tb_logger/ there)')
    if not os.access(existing, os.W_OK | os.X_OK):
        sys.exit(f'basicsr {command}: error: --root {root}: cannot write to {existing} (BasicSR writes experiments/, '
                 'results/ and tb_logger/ there): choose a writable --root')
    sys.argv = [f'basicsr {command}', *passthrough]
    if command == 'train':
        from basicsr.train import train_pipeline as pipeline
    else:
        from basicsr.test import test_pipeline as pipeline

    def run_pipeline():
        try:
            pipeline(root)
        except BaseException:  # a failure or a stop before training: the run folders as the user left them
            run_folders.restore_run_folders()
            raise
    try:
        run_stoppable(run_pipeline, lambda name: f'basicsr {command}: {_stopped(command, name, argv)}' if rank() == 0
                      else None)
    finally:
        run_folders.unlock_run()  # after the stop's message, which reads the launch record
    if command == 'train':
        pipeline_fixes.report_skipped_reads()


def _stopped(command, signame, argv):
    """What a run stopped by ``signame`` leaves, and how to go on from it."""
    opt = run_folders.launch_options()
    if command == 'test' or opt is None or not run_folders.training_started():
        return (f'stopped by {signame} before {"training started" if command == "train" else "it finished"}: '
                'the run folders are as they were before this launch; run the command again')
    state_dir = opt['path']['training_states']
    states = training_states(state_dir)
    if not states:
        return (f'stopped by {signame} before the first checkpoint (logger.save_checkpoint_freq): nothing was saved; '
                'run the command again to start over')
    resume = ' '.join(shlex.quote(a) for a in ['basicsr', command, *argv] if a != '--auto_resume')
    return (f'stopped by {signame}: the newest training state is {os.path.join(state_dir, f"{states[0]}.state")} '
            f'(iteration {states[0]}); resume with: {resume} --auto_resume')

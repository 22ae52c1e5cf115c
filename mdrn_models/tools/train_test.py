"""``basicsr train`` / ``basicsr test``: BasicSR's own train/test pipelines, with the pipeline fixes installed.

``--root`` (default: the current directory) is where ``experiments/``, ``results/`` and ``tb_logger/`` live, and where
``--auto_resume`` looks for training states. All other flags are BasicSR's own and are passed through unchanged.
``mdrn_cli`` parses the command line (``--help``, usage errors) and loads the plugins before calling ``run``.
"""
import argparse
import os
import sys

from mdrn_models.integration import pipeline_fixes
from mdrn_models.integration.option_files import OptionFileError, check_option_file
from mdrn_models.tools import malloc_tuning


def _option_path(args):
    """The -opt value exactly as BasicSR's argparse will read it (abbreviations such as -o and -op included)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    return parser.parse_known_args(args)[0].opt


def _basicsr_args(argv):
    """``argv`` without ``--root``: the command line BasicSR's own parser reads, otherwise unchanged."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--root')
    return parser.parse_known_args(argv)[1]


def run(command, argv, root):
    """``basicsr train`` / ``basicsr test`` with ``argv`` (BasicSR's flags and ``--root``, whose value is ``root``),
    as parsed by ``mdrn_cli.parsers.train_test``; ``mdrn_cli.main`` has loaded the plugins."""
    malloc_tuning.keep_freed_memory()  # a one-job process: reuse freed feature maps (see malloc_tuning)
    passthrough = _basicsr_args(argv)
    opt_path = _option_path(passthrough)
    if opt_path is not None:
        try:
            check_option_file(opt_path)
        except OptionFileError as exc:
            sys.exit(f'basicsr {command}: error: {exc}')

    root = os.path.abspath(root)
    existing = root
    while not os.path.isdir(existing):  # BasicSR creates the missing part
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        sys.exit(f'basicsr {command}: error: --root {root}: cannot write to {existing} (BasicSR writes experiments/, '
                 'results/ and tb_logger/ there): choose a writable --root')
    pipeline_fixes.install()
    sys.argv = [f'basicsr {command}', *passthrough]
    if command == 'train':
        from basicsr.train import train_pipeline as pipeline
    else:
        from basicsr.test import test_pipeline as pipeline
    try:
        pipeline(root)
    except BaseException:
        pipeline_fixes.restore_run_folders()
        raise
    if command == 'train':
        pipeline_fixes.report_skipped_reads()

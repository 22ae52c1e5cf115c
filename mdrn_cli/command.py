"""The ``basicsr`` command (docs/cli.md). It answers ``--help`` and usage errors with argparse alone, sets the default
torch threads, and only then imports the plugins and the module that runs the command (``parsers.COMMANDS``), which
gets the arguments as they were given.
"""
import importlib
import os
import sys

from . import parsers
from .signals import run_stoppable


def physical_cores(sysfs='/sys/devices/system/cpu'):
    """The physical cores this process may run on: the CPUs of its affinity mask, the hyperthreads of one core
    (sysfs ``thread_siblings_list``) counted once; ``os.cpu_count()`` where there is no affinity mask."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        try:
            with open(f'{sysfs}/cpu{cpu}/topology/thread_siblings_list') as f:
                cores.add(f.read().strip())  # the same text for every hyperthread of one core, e.g. '0,64'
        except OSError:  # no topology in sysfs: the CPU counts as a core
            cores.add(f'cpu{cpu}')
    return max(1, len(cores))


def set_default_threads(environ=os.environ):
    """Unless ``OMP_NUM_THREADS`` is set, set it to ``physical_cores()``: torch starts that many intra-op threads
    (hyperthreads do not speed up its convs, and its own default depends on its build), OpenMP in other libraries
    reads it too, and the processes a command starts (the demo's runs) inherit it. Returns the number set, or None."""
    if environ.get('OMP_NUM_THREADS'):
        return None
    n = physical_cores()
    environ['OMP_NUM_THREADS'] = str(n)
    torch = sys.modules.get('torch')
    if torch is not None:  # already started (a caller imported it first): it reads the variable once
        torch.set_num_threads(n)
    return n


def refuse_unsafe_loads(environ=os.environ):
    """Every ``torch.load`` in the command's process runs with ``weights_only=True`` (no pickled code can run), also
    in third-party arch constructors that load files themselves (BasicVSR's ``spynet_path``):
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is dropped (with a note) and ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` set."""
    if environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None) is not None:
        print('note: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is ignored: basicsr loads every file with weights_only=True',
              file=sys.stderr)
    environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] = '1'


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    top = parsers.top().parse_args(argv)
    command, args = top.command, top.args
    if top.root is not None:  # `basicsr --root DIR train ...`
        if command not in parsers.ROOT_COMMANDS:  # the other commands write only where their own flags say
            sys.exit(f'basicsr {command}: error: --root is where train/test write experiments/ and results/; '
                     f'{command} does not take it: drop --root (run it where the option file\'s relative paths start)')
        args = ['--root', top.root, *args]
    if command in ('train', 'test'):  # torch.distributed.launch passes --local-rank=N; BasicSR knows --local_rank
        args = [a.replace('--local-rank', '--local_rank', 1) if a.startswith('--local-rank') else a for a in args]
    ns = parsers.COMMANDS[command].parser().parse_args(args)  # --help, usage errors: no torch
    set_default_threads()
    refuse_unsafe_loads()
    if command != 'demo':  # (the demo only starts `basicsr` processes)
        # this project's plugin classes (importing the package registers them) and every installed plugin's, for
        # option files that name them
        importlib.import_module('mdrn_models.integration.plugins').load_plugins()
        # float32 denormals make MDRN's CPU convs many times slower; flushing them is a process-wide choice, made
        # here (the command owns its process) before torch's thread pool starts (docs/architecture.md#denormals)
        importlib.import_module('torch').set_flush_denormal(True)
    module = importlib.import_module(parsers.COMMANDS[command].module)
    if command in ('train', 'test'):  # (they say what a stopped run saved: mdrn_models.tools.pipelines)
        return _one_line_on_os_errors(command, lambda: module.run(command, args, ns.root))
    return run_stoppable(lambda: _one_line_on_os_errors(command, lambda: module.main(args)),
                         lambda name: f'basicsr {command}: stopped by {name}; run the command again to finish (outputs '
                                      'it wrote before may need --force)')


def _one_line_on_os_errors(command, run):
    """``run()``; an ``OSError`` reaching here is the machine refusing (a full disk, a folder without permission, a
    file gone), not a fault of the code: one line with the file and the cause."""
    try:
        return run()
    except OSError as exc:
        where = f'{exc.filename}: ' if exc.filename else ''
        sys.exit(f'basicsr {command}: error: {where}{exc.strerror or exc}: fix the path or free space, then rerun')

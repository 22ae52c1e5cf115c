"""The run's folders under ``--root``: the run lock (one process per run name at a time) and the launch record that
undoes BasicSR's archiving of an earlier run (``experiments/NAME``, ``results/NAME``, ``tb_logger/NAME`` renamed to
``NAME_archived_TIME``) when the new run never trained, however it ended. How both work: docs/robustness.md.
"""
import contextlib
import json
import os
import shutil
import socket
import sys
import time
from os import path as osp

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

from basicsr.utils import get_time_str

_launch = {'folders': [], 'training': False}  # this process's record (rank 0 writes it to the lock file)
_lock = {}  # fd, path, parent made for the lock (to remove when empty)


def _try_lock(fd):
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _read_record(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 20).decode('utf-8', 'replace')
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _write_record():
    fd = _lock.get('fd')
    if fd is None:
        return
    data = json.dumps(_launch, indent=1).encode()
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)
    os.fsync(fd)


def lock_run(opt):
    """Take the lock of the run ``opt`` describes (its experiments or results folder + ``.lock``), or stop in one
    line when a live process holds it; then put back what a launch of this run that died before training archived.
    Call on rank 0 only (the other ranks write nothing)."""
    folder = osp.abspath(opt['path']['experiments_root' if opt.get('is_train') else 'results_root'])
    path, parent = f'{folder}.lock', osp.dirname(folder)
    made_parent = None if osp.isdir(parent) else parent
    os.makedirs(parent, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # (a folder of that name, no permission): the command says so in one line
            if made_parent:
                shutil.rmtree(made_parent, ignore_errors=True)
            raise
        if not _try_lock(fd):
            holder = _read_record(fd) or {}
            os.close(fd)
            if made_parent:
                shutil.rmtree(made_parent, ignore_errors=True)
            who = (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (started {holder.get('since', '?')})"
                   if holder else 'another process')
            raise SystemExit(f"error: run '{opt['name']}' is in use by {who}, which holds {path}: wait for it to end "
                             'or stop it, or give this run another name (--force_yml name=...)')
        try:  # the file may have been removed by its holder between our open and our lock: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    left = _read_record(fd)
    _lock.update(fd=fd, path=path, made_parent=made_parent)
    if left and not left.get('training'):
        _restore(left.get('folders') or [],
                 f"the launch of '{opt['name']}' by process {left.get('pid', '?')} ({left.get('since', '?')}) ended "
                 'before its first iteration')
    _launch.update(pid=os.getpid(), host=socket.gethostname(), since=time.strftime('%Y-%m-%d %H:%M:%S'),
                   command=' '.join(sys.argv), folders=[], training=False)
    _write_record()
    _lock['opt'] = opt


def launch_options():
    """The options of the run this process holds the lock of (rank 0), or None."""
    return _lock.get('opt')


def unlock_run():
    """Remove the lock file and release the lock (rank 0, at the end of the command)."""
    fd = _lock.pop('fd', None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.remove(_lock['path'])  # while holding the lock: a waiting launch re-checks the inode (lock_run)
    os.close(fd)
    made_parent = _lock.pop('made_parent', None)
    if made_parent and osp.isdir(made_parent) and not os.listdir(made_parent):
        os.rmdir(made_parent)
    _lock.clear()


def forget_launch():
    """A new run in this process (the tests run several): no folders made yet, training not started."""
    _launch.clear()
    _launch.update(folders=[], training=False)


def mkdir_and_rename(path):
    """BasicSR's ``mkdir_and_rename`` (archive an existing run folder, make a new one) that records what it did in
    the launch record, so that :func:`restore_run_folders` (or the next launch) can undo it."""
    archived, made = None, osp.abspath(path)
    while not osp.exists(osp.dirname(made)):  # the topmost folder this call creates (tb_logger/ on a first run)
        made = osp.dirname(made)
    if osp.exists(path):
        archived = f'{path}_archived_{get_time_str()}'
        print(f'Path already exists. Rename it to {archived}', flush=True)
    _launch['folders'].append([made, osp.abspath(path), archived and osp.abspath(archived)])
    _write_record()  # before the rename: a launch killed right after it is undone by the next one
    if archived:
        os.rename(path, archived)
    os.makedirs(path, exist_ok=True)


def mark_training_started():
    """The first iteration has run: the run folders are this run's now (its checkpoints)."""
    _launch['training'] = True
    _write_record()


def training_started():
    return _launch['training']


def restore_run_folders():
    """After a run failed before its first iteration (or a test run failed): remove the folders it made and move the
    archived ones back, so that the folders are as the user left them and ``--auto_resume`` finds their states."""
    if not _launch['training']:
        _restore(_launch['folders'], 'The run stopped before training')
        _launch['folders'] = []
        _write_record()


def _restore(folders, why):
    """Remove each made folder and move its archive back, newest first. A made folder holding a checkpoint or a
    state (so more than a launch writes before training) is left alone, and so is its archive, with a note."""
    for made, path, archived in reversed(folders):
        if osp.isdir(made) and any(f.endswith(('.pth', '.state')) for _, _, files in os.walk(made) for f in files):
            print(f'note: {why}, but {made} holds checkpoints now: left as it is'
                  + (f' (the earlier run is in {archived})' if archived else ''), flush=True)
            continue
        shutil.rmtree(made, ignore_errors=True)
        back = bool(archived) and osp.isdir(archived) and not osp.exists(path)
        if back:
            os.rename(archived, path)
        print(f'{why}: removed {made}' + (f' and moved {archived} back' if back else ''), flush=True)

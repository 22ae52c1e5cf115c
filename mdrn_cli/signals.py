"""The one way a command stops on a signal: SIGTERM (a scheduler's preemption, ``kill``) unwinds like Ctrl-C, and
either ends the command in one line with exit code 128 + the signal's number. Imports nothing of the project, so every
layer may use it (``.importlinter``)."""
import signal
import sys


def sigterm_as_interrupt(signum, frame):
    """SIGTERM unwinds like Ctrl-C: a KeyboardInterrupt naming the signal."""
    raise KeyboardInterrupt('SIGTERM')


def run_stoppable(run, stopped):
    """``run()`` with SIGTERM handled as Ctrl-C; stopped by either, ``stopped(signal name)`` (the line saying what the
    stop left and how to go on; None: say nothing) is printed to stderr and the command exits 128 + the signal's
    number."""
    previous = signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    try:
        return run()
    except KeyboardInterrupt as exc:
        name = exc.args[0] if exc.args else 'SIGINT'
        message = stopped(name)
        if message:
            print(message, file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.Signals[name]) from None
    finally:
        signal.signal(signal.SIGTERM, previous)

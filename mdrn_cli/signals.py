"""The one SIGTERM handler of the project: the commands, the tools and datasets_prep install it so that a
scheduler's preemption ends them the way Ctrl-C does (in one line, outputs accounted for). Imports nothing of the
project: every layer may use it (``.importlinter``)."""


def sigterm_as_interrupt(signum, frame):
    """SIGTERM (a scheduler's preemption, ``kill``) unwinds like Ctrl-C: a KeyboardInterrupt naming the signal, which
    every command (and datasets_prep) turns into its one line."""
    raise KeyboardInterrupt('SIGTERM')

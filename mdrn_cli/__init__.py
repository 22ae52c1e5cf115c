"""The ``basicsr`` command (``mdrn_cli.command``: the dispatcher), its argument parsers and command table
(``mdrn_cli.parsers``) and how a command stops on a signal (``mdrn_cli.signals``). Nothing here imports torch:
``--help`` and usage errors answer at once."""
from .command import main, physical_cores, refuse_unsafe_loads, set_default_threads  # noqa: F401
from .signals import sigterm_as_interrupt  # noqa: F401

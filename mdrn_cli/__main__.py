"""``python -m mdrn_cli``: the ``basicsr`` command without the console script."""
import sys

from mdrn_cli import main

sys.exit(main())

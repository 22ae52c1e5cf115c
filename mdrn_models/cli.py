"""``python -m mdrn_models.cli ...`` is the whole ``basicsr`` command (``mdrn_cli.main``), e.g. for
``torchrun --nproc_per_node=N -m mdrn_models.cli train -opt X.yml --launcher pytorch``. It imports torch before
parsing anything; the ``basicsr`` console script (``mdrn_cli``) does not."""
import sys

from mdrn_cli import main

if __name__ == '__main__':
    sys.exit(main())

"""BasicSR plugin pieces of MDRN: importing this package registers every plugin class (arch, dataset, models)."""
import mdrn_arch  # noqa: F401  (first: applies the basicsr compatibility alias and registers MDRN)
from mdrn_models.data import awgn_dataset  # noqa: F401
from mdrn_models.models import hkd_model  # noqa: F401

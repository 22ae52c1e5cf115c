"""BasicSR plugins: this project and every module that an installed distribution declares in the entry-point group
``basicsr.plugins`` are imported before a command runs (docs/cli.md#other-plugins)."""
from importlib.metadata import entry_points

PLUGIN_GROUP = 'basicsr.plugins'


def load_plugins():
    import mdrn_models  # noqa: F401
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # one broken plugin must say which one it is
            raise RuntimeError(f"BasicSR plugin '{ep.name}' ({ep.value}) failed to import: {exc}") from exc

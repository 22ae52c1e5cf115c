"""BasicSR plugins: besides this project, every installed distribution that declares an entry point in the group
``basicsr.plugins`` (value: a module to import, e.g. ``mypkg = mypkg.archs``) is imported before a command runs, so
its archs, models, datasets and losses can be used in the same option files."""
from importlib.metadata import entry_points

PLUGIN_GROUP = 'basicsr.plugins'


def load_plugins():
    """Import this project's plugin package and every module declared in the ``basicsr.plugins`` group."""
    import mdrn_models  # noqa: F401
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # one broken plugin must say which one it is
            raise RuntimeError(f"BasicSR plugin '{ep.name}' ({ep.value}) failed to import: {exc}") from exc

"""Import a script of ``tools/`` (not a package) as a module, for the tests.

A uniquely named module (not ``conftest``): several test folders have a conftest.py.
"""
import importlib.util
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(name):
    """Import ``tools/<name>.py`` as the module ``tools_<name>``."""
    spec = importlib.util.spec_from_file_location(f'tools_{name}',
                                                  osp.join(ROOT, 'tools', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

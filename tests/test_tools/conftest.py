"""Helpers of the tool tests: import tools/*.py, run them as a user would."""
import importlib.util
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool(name):
    """Import ``tools/<name>.py`` (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f'tools_{name}',
                                                  osp.join(ROOT, 'tools', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(args, timeout=600, env=None):
    """Run ``python tools/...`` from the repo root; return stdout+stderr (asserts rc 0)."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, f'{args} failed ({proc.returncode}):\n{proc.stdout[-6000:]}'
    return proc.stdout

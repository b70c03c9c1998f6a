"""Helpers of the tool tests: import tools/*.py, run them as a user would."""
import os.path as osp
import subprocess
import sys

from tools_loader import load_tool  # noqa: F401 (re-exported to the tests here)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_tool(args, timeout=600, env=None):
    """Run ``python tools/...`` from the repo root; return stdout+stderr (asserts rc 0)."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, f'{args} failed ({proc.returncode}):\n{proc.stdout[-6000:]}'
    return proc.stdout

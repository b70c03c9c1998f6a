"""benchmarks.common.RunCache: a finished run is reused, a different run or code is not."""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from benchmarks.common import RunCache  # noqa: E402


def test_stored_run_is_reused_and_other_keys_run(tmp_path):
    cache, calls = RunCache(str(tmp_path)), []

    def run(value):
        calls.append(value)
        return [value, 1.5]

    key = dict(bits='W4A4', seed=0, budget=dict(epochs=20))
    assert cache.run(key, lambda: run(90.0)) == [90.0, 1.5]
    # same arguments (a later call, a new process): the stored result, fn not called
    assert RunCache(str(tmp_path)).run(dict(key), lambda: run(-1.0)) == [90.0, 1.5]
    # any argument differs: a new run
    assert cache.run(dict(key, seed=1), lambda: run(80.0)) == [80.0, 1.5]
    assert cache.run(dict(key, budget=dict(epochs=21)), lambda: run(70.0)) == [70.0, 1.5]
    assert calls == [90.0, 80.0, 70.0]
    # another code version (the hash of maskaq_plugin/ and benchmarks/): not reused
    other = RunCache(str(tmp_path))
    other.code = 'changed'
    assert other.get(key) is None
    # disabled: always runs, stores nothing
    off = RunCache(str(tmp_path / 'off'), enabled=False)
    assert off.run(key, lambda: run(60.0)) == [60.0, 1.5] and calls[-1] == 60.0
    assert not (tmp_path / 'off').exists()
    # writes are atomic: no temporary file left behind
    assert not list(tmp_path.glob('*.tmp'))

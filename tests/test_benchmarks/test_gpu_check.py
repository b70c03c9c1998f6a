"""tools/gpu_check.sh's CPU smoke mode: every part runs and reports positive figures."""
import json
import subprocess
import sys

from tools_loader import ROOT


def _positive(tree):
    """Every number in ``tree`` (nested dicts) is > 0."""
    if isinstance(tree, dict):
        return all(_positive(v) for v in tree.values())
    return not isinstance(tree, (int, float)) or isinstance(tree, bool) or tree > 0


def test_gpu_check_smoke_on_cpu(tmp_path):
    out = tmp_path / 'gpu_check'
    # The per-part limits are for a GPU run; a busy 2-core CPU took 180 s for the smoke
    # synthesis part alone, so the test lifts them (it checks the figures, not the time).
    subprocess.run([sys.executable, '-m', 'benchmarks.gpu_check', '--device', 'cpu', '--smoke',
                    '--parts', 'synthesis', 'qat', 'memory', '--out', str(out),
                    '--timeouts', 'synthesis=1200', 'qat=1200', 'memory=1200'],
                   cwd=ROOT, check=True, timeout=3600)
    report = json.loads((out / 'gpu_check.json').read_text())
    assert (out / 'gpu_check.md').is_file()
    assert set(report['parts']) == {'synthesis', 'qat', 'memory'}
    for name, part in report['parts'].items():
        assert part['status'] == 'ok', (name, part.get('error'))
    synthesis = report['parts']['synthesis']['result']['models']
    assert len(synthesis) == 2
    for m in synthesis.values():
        assert m['paper_over_ours'] > 0 and set(m['median_s']) >= {'ours', 'paper'}
        assert _positive(m)
    for m in report['parts']['qat']['result']['models'].values():
        assert set(m['ms_per_step']) == {'FP', 'W8A8', 'W4A4'} and _positive(m)
    configs = report['parts']['memory']['result']['configs']
    assert set(configs) == {'det', 'seg'}
    for c in configs.values():
        assert c['synthesis_iter_peak_mib'] > 0 and c['qat_step_peak_mib'] > 0

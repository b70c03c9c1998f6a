"""Run the test suite one test folder per pytest process, then print one total.

Why one process per folder: it keeps one folder's crash or leaked state (registries,
threads, signal handlers) from failing the others, and is how users run the tools (one
process per train/test/export). It was introduced for a SIGSEGV that is now fixed: with
one ``openvino.Core`` per compile, OpenVINO 2026.4.1's CPU plugin left the main thread on
an unmapped alternate signal stack, and a later signal with a Python handler (torch's
DataLoader SIGCHLD handler in an mmseg Runner test) killed the process.
``maskaq_plugin.quant.export.openvino_core`` shares one Core; the regression test is
``tests/test_quant/test_export.py::test_compiles_leave_a_valid_signal_stack``.

Usage::

    python tools/run_tests.py [pytest args...]     # e.g. -k resume, -x
"""
import glob
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def main(argv):
    folders = sorted(d for d in glob.glob(osp.join(ROOT, 'tests', 'test_*')) if osp.isdir(d))
    totals = dict(passed=0, failed=0, skipped=0)
    bad = []
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for folder in folders:
            name = osp.basename(folder)
            xml = osp.join(tmp, name + '.xml')
            print(f'\n===== {name} =====', flush=True)
            rc = subprocess.call([sys.executable, '-m', 'pytest', osp.relpath(folder, ROOT),
                                  f'--junitxml={xml}', *argv], cwd=ROOT)
            if not osp.isfile(xml):  # crashed before writing its report
                bad.append(f'{name} (exit {rc}, no report)')
                totals['failed'] += 1
                continue
            suite = ET.parse(xml).getroot()
            suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
            n, f, e, s = (int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped'))
            totals['passed'] += n - f - e - s
            totals['failed'] += f + e
            totals['skipped'] += s
            if rc not in (0, 5) or f or e:
                bad.append(f'{name} (exit {rc})')
    print(f'\n{len(folders)} test folders in {time.time() - start:.0f} s'
          + (f'; failing: {", ".join(bad)}' if bad else ''))
    print(f'total: {totals["passed"]} passed, {totals["failed"]} failed, '
          f'{totals["skipped"]} skipped')
    ran = totals['passed'] + totals['failed']
    return 1 if bad or ran == 0 else 0


if __name__ == '__main__':
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))

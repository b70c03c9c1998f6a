import json
import os
import os.path as osp

from maskaq_plugin.utils import last_logged_metrics


def _write(work_dir, stamp, rows):
    vis = osp.join(work_dir, stamp, 'vis_data')
    os.makedirs(vis)
    with open(osp.join(vis, 'scalars.json'), 'w') as f:
        for row in rows:
            f.write(json.dumps(row) + '\n')


def test_last_value_wins_across_resumed_runs(tmp_path):
    work_dir = str(tmp_path)
    # Written out of time order on purpose: the later timestamp must win.
    _write(work_dir, '20261128_120000', [{'mIoU': 30.0, 'step': 3}, {'loss': 0.5}])
    _write(work_dir, '20261128_110000', [{'mIoU': 10.0, 'step': 1}, {'mIoU': 20.0, 'aAcc': 90.0}])
    found = last_logged_metrics(work_dir, ['mIoU', 'aAcc', 'mAcc'])
    assert found == {'mIoU': 30.0, 'aAcc': 90.0}


def test_no_logs_gives_empty(tmp_path):
    assert last_logged_metrics(str(tmp_path), ['mIoU']) == {}

"""Read back what MMEngine's ``LocalVisBackend`` logged for a run."""
import json
import os
import os.path as osp
from typing import Dict, Sequence


def last_logged_metrics(work_dir: str, keys: Sequence[str]) -> Dict[str, float]:
    """The last logged value of each of ``keys`` among the runs under ``work_dir``.

    MMEngine writes one JSON line per logging step to
    ``<work_dir>/<timestamp>/vis_data/scalars.json``; a resumed run adds a new timestamp
    folder. The folders are read in name (i.e. time) order, so a later run's value wins.
    Keys never logged are absent from the result.
    """
    found = {}
    paths = []
    for root, dirs, files in os.walk(work_dir):
        dirs.sort()
        if osp.basename(root) == 'vis_data' and 'scalars.json' in files:
            paths.append(osp.join(root, 'scalars.json'))
    for path in sorted(paths):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                found.update({k: row[k] for k in keys if k in row})
    return found

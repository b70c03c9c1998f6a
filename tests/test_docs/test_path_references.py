"""Paths quoted in the code's docstrings and comments exist in the repository.

Scans the ``.py`` files of ``maskaq_plugin/``, ``tools/`` and ``benchmarks/`` for
repo-relative file paths (``docs/method.md``, ``tools/train.py``,
``configs/_base_/maskaq_*.py``, ...), for upper-case root documents (``README.md``) and for
paths that climb out of the checkout (``../shared/...``); each must exist in the
repository (STYLE.md 13: no file points outside the repository).
"""
import glob
import os.path as osp
import re

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCANNED = ('maskaq_plugin', 'tools', 'benchmarks')
TOP_DIRS = ('maskaq_plugin', 'tools', 'benchmarks', 'docs', 'configs', 'tests',
            'requirements', 'checkpoints')
EXTENSIONS = ('py', 'md', 'sh', 'json', 'txt', 'yaml', 'yml', 'png', 'pth', 'cfg', 'ini')
_START = r'(?<![\w./-])'  # not the tail of a longer path or of a URL
REPO_PATH = re.compile(_START + r'((?:%s)/[\w./*-]*\.(?:%s))\b' % ('|'.join(TOP_DIRS),
                                                                   '|'.join(EXTENSIONS)))
ROOT_DOC = re.compile(_START + r'([A-Z][A-Z0-9_-]*\.md)\b')
OUTSIDE = re.compile(r'(?<![\w.])((?:\.\./)+[\w.-]+(?:/[\w.-]+)*)')


def dead_path_references(root, dirs=SCANNED):
    """``[(file, line number, reference)]`` for every quoted path missing under ``root``.

    Globs (``configs/_base_/maskaq_*.py``) count when they match a file; a path that
    leaves ``root`` (``../shared/...``) is always reported.
    """
    dead = []
    for folder in dirs:
        for path in sorted(glob.glob(osp.join(root, folder, '**', '*.py'), recursive=True)):
            rel = osp.relpath(path, root)
            with open(path, encoding='utf-8') as f:
                for number, line in enumerate(f, 1):
                    for pattern in (REPO_PATH, ROOT_DOC):
                        for ref in pattern.findall(line):
                            if not glob.glob(osp.join(root, ref)):
                                dead.append((rel, number, ref))
                    dead.extend((rel, number, ref) for ref in OUTSIDE.findall(line))
    return dead


def test_no_dead_path_references():
    dead = dead_path_references(ROOT)
    assert not dead, 'paths that are not in the repository:\n' + '\n'.join(
        f'  {rel}:{number}: {ref}' for rel, number, ref in dead)


def test_a_planted_bad_reference_is_caught(tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'method.md').write_text('# method\n')
    (tmp_path / 'README.md').write_text('# readme\n')
    tools = tmp_path / 'tools'
    (tools / 'sub').mkdir(parents=True)
    (tools / 'ok.py').write_text('"""See docs/method.md, README.md and tools/ok.py."""\n'
                                 "# docs/*.md; https://example.org/docs/gone.md\n"
                                 "ROOT = osp.join(here, '..')\n")
    (tools / 'sub' / 'bad.py').write_text('"""Shapes follow METHOD.md (docs/gone.md)."""\n'
                                          'x = 1  # see ../shared/DESIGN.md, tools/nope.py\n')
    assert dead_path_references(str(tmp_path), dirs=('tools', )) == [
        ('tools/sub/bad.py', 1, 'docs/gone.md'), ('tools/sub/bad.py', 1, 'METHOD.md'),
        ('tools/sub/bad.py', 2, 'tools/nope.py'), ('tools/sub/bad.py', 2, '../shared/DESIGN.md')]

"""tools/benchmark.py rewrites only its own sections of docs/benchmarks.md."""
import importlib.util
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, *path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_section_replaces_own_section_and_keeps_the_others(tmp_path):
    common = _load('bench_common', ('benchmarks', 'common.py'))
    doc = tmp_path / 'benchmarks.md'
    doc.write_text('# Benchmarks\n\n## Classification (digits, tiny ViT)\n\nacc 90 %\n\n'
                   '## QAT cost\n\nold table\n\n## Deployment\n\nold\n')
    common.write_section('QAT cost', 'new table\n\n### details\n\nx', str(doc))
    common.write_section('Synthesis speed', 'fast', str(doc))
    text = doc.read_text()
    assert text == ('# Benchmarks\n\n## Classification (digits, tiny ViT)\n\nacc 90 %\n\n'
                    '## QAT cost\n\nnew table\n\n### details\n\nx\n\n## Deployment\n\nold\n\n'
                    '## Synthesis speed\n\nfast\n')
    common.write_section('Deployment', 'newer', str(doc))
    assert text.replace('## Deployment\n\nold', '## Deployment\n\nnewer') == doc.read_text()


def test_cli_defaults():
    tool = _load('tools_benchmark', ('tools', 'benchmark.py'))
    args = tool.parse_args([])
    assert args.what == 'all' and args.threads == 1 and args.iters == 20
    assert tool.parse_args(['synthesis', '--before', 'HEAD:x.py']).before == 'HEAD:x.py'

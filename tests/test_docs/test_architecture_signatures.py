"""The public signatures quoted in docs/architecture.md are those of the code.

Format (docs/architecture.md, "How to read the signatures"): every fenced ``python`` block
parses as Python. A block whose first statement is ``from maskaq_plugin... import a, B``
(one or more such lines) is a block of stubs: each top-level ``def``/``class`` in it must
be one of the imported names, and is compared with the real object:

* ``def f(...)``: parameter names, kinds (positional, ``*args``, keyword-only,
  ``**kwargs``) and defaults equal ``inspect.signature(f)``'s; annotations and return
  types are prose, not compared;
* ``class C:``: each ``def`` in its body is compared with ``C``'s attribute of that name
  (``@property`` must be a property, ``@classmethod`` drops ``cls``); annotated names
  (``x: int``) in the body of a dataclass must be its fields, in order.

Other ``python`` blocks (config examples) may hold no ``def``/``class``.
"""
import ast
import dataclasses
import importlib
import inspect
import os.path as osp
import re

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DOC = osp.join(ROOT, 'docs', 'architecture.md')
FENCE = re.compile(r'^```python\n(.*?)^```', re.S | re.M)
_EMPTY = inspect.Parameter.empty


def _doc_params(args: ast.arguments, drop_first: bool = False):
    """``[(name, kind, default)]`` of a stub's parameters (default: value or source)."""

    def value(node):
        if node is None:
            return _EMPTY
        try:
            return ast.literal_eval(node)
        except ValueError:
            return ast.unparse(node)

    P = inspect.Parameter
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = [(a.arg, P.POSITIONAL_ONLY if a in args.posonlyargs else P.POSITIONAL_OR_KEYWORD,
               value(d)) for a, d in zip(positional, defaults)]
    if args.vararg:
        params.append((args.vararg.arg, P.VAR_POSITIONAL, _EMPTY))
    params += [(a.arg, P.KEYWORD_ONLY, value(d)) for a, d in zip(args.kwonlyargs,
                                                                 args.kw_defaults)]
    if args.kwarg:
        params.append((args.kwarg.arg, P.VAR_KEYWORD, _EMPTY))
    return params[1:] if drop_first else params


def _real_params(obj):
    out = []
    for p in inspect.signature(obj).parameters.values():
        default = p.default
        if default is not _EMPTY and not isinstance(default, (int, float, str, bool, tuple,
                                                               list, dict, type(None))):
            default = repr(default)
        out.append((p.name, p.kind, default))
    return out


def _compare_def(where, node, real, drop_first=False):
    doc, code = _doc_params(node.args, drop_first), _real_params(real)
    if doc != code:
        fmt = lambda ps: ', '.join(f'{n}={d!r}' if d is not _EMPTY else n  # noqa: E731
                                   for n, _, d in ps)
        return [f'{where}: documented ({fmt(doc)}), code ({fmt(code)})'
                + ('' if [p[:2] for p in doc] == [p[:2] for p in code]
                   else ' [names or kinds differ]')]
    return []


def _compare_class(where, node, cls):
    problems = []
    fields = [s.target.id for s in node.body
              if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    if fields and dataclasses.is_dataclass(cls):
        real_fields = [f.name for f in dataclasses.fields(cls)]
        if fields != real_fields:
            problems.append(f'{where}: documented fields {fields}, code {real_fields}')
    for item in node.body:
        if not isinstance(item, ast.FunctionDef):
            continue
        decorators = {ast.unparse(d) for d in item.decorator_list}
        name = f'{where}.{item.name}'
        if item.name not in vars(cls) and not hasattr(cls, item.name):
            problems.append(f'{name}: not in the code')
        elif ('property' in decorators) != isinstance(inspect.getattr_static(cls, item.name),
                                                     property):
            problems.append(f'{name}: a property in only one of the doc and the code')
        elif 'property' not in decorators:
            problems += _compare_def(name, item, getattr(cls, item.name),
                                     drop_first='classmethod' in decorators)
    return problems


def signature_mismatches(markdown: str):
    """Every difference between the stubs of ``markdown`` and the code, as text lines."""
    problems = []
    for number, block in enumerate(FENCE.findall(markdown), 1):
        try:
            tree = ast.parse(block)
        except SyntaxError as e:
            problems.append(f'python block {number}: does not parse ({e.msg}, line {e.lineno})')
            continue
        source = {}  # name -> module, from the block's leading import lines
        for head in tree.body:
            if not (isinstance(head, ast.ImportFrom) and head.module.startswith('maskaq_plugin')):
                break
            source.update({alias.name: head.module for alias in head.names})
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        if not source:
            if defs:
                problems.append(f'python block {number}: stubs without a leading '
                                f'"from maskaq_plugin... import ..." line')
            continue
        for node in defs:
            if node.name not in source:
                problems.append(f'{node.name}: documented but not in the block\'s import lines')
                continue
            module = importlib.import_module(source[node.name])
            where = f'{source[node.name]}.{node.name}'
            if not hasattr(module, node.name):
                problems.append(f'{where}: not in the code')
            elif isinstance(node, ast.ClassDef):
                problems += _compare_class(where, node, getattr(module, node.name))
            else:
                problems += _compare_def(where, node, getattr(module, node.name))
    return problems


def test_architecture_md_matches_the_code():
    with open(DOC, encoding='utf-8') as f:
        text = f.read()
    assert len(FENCE.findall(text)) >= 5
    problems = signature_mismatches(text)
    assert not problems, 'docs/architecture.md differs from the code:\n' + '\n'.join(problems)


@pytest.mark.parametrize('stub, message', [
    ('def total_variation(x, y): ...', r'total_variation: documented \(x, y\), code \(x\)'),
    ('def masked_attention_ssim(context_fp, context_q, *, has_cls_token, top_ratio=0.2, '
     'w_high=2.0, w_low=1.0, mask_mode="informative", generator=None): ...',
     r'masked_attention_ssim: documented .*top_ratio=0\.2'),
    ('def gone(x): ...', r'^gone: documented but not in the block'),
])
def test_a_stale_signature_is_caught(stub, message):
    doc = ('```python\nfrom maskaq_plugin.losses.functional import masked_attention_ssim, '
           f'total_variation\n{stub}\n```\n')
    problems = signature_mismatches(doc)
    assert len(problems) == 1 and re.search(message, problems[0]), problems


def test_stale_class_members_are_caught():
    doc = ('```python\nfrom maskaq_plugin.attention import AttentionRecord, AttentionRecorder\n'
           'class AttentionRecorder:\n    def __init__(self, model): ...\n'
           'class AttentionRecord:\n    name: str\n    scores: object\n'
           '    def group(self): ...\n```\n'
           '```python\nx = 1\ndef loose(): ...\n```\n'
           '```python\nnot python (\n```\n')
    problems = signature_mismatches(doc)
    assert [p.split(':')[0] for p in problems] == [
        'maskaq_plugin.attention.AttentionRecorder.__init__',
        'maskaq_plugin.attention.AttentionRecord',
        'maskaq_plugin.attention.AttentionRecord.group', 'python block 2', 'python block 3']

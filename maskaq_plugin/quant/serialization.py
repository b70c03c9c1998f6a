"""Save and restore a quantized model as plain tensors and JSON text.

The checkpoint holds NNCF's quantizer placement (``nncf.torch.get_config``) as a JSON
string, the scheme as a dict of plain values and the full ``state_dict`` (model weights
and quantizer parameters): no pickled Python objects, so it loads with
``torch.load(..., weights_only=True)`` and inside MMEngine checkpoints.
"""
import copy
import json
from typing import Any, Dict

import nncf.torch
from torch import nn

from .calibrate import quantizers_disabled, run_model
from .inspect import iter_quantizers, wrapped_submodules
from .quantize import SCHEME_ATTR
from .scheme import QuantScheme

FORMAT = 'maskaq-nncf-v1'
# Quantizer classes a checkpoint may name: NNCF's and this package's (recipe 'lsq').
ALLOWED_MODULES = ('nncf.*', 'maskaq_plugin.quant.lsq')


def save_quantized(qmodel: nn.Module) -> Dict[str, Any]:
    """Serialisable state of a model from :func:`quantize_model`.

    Args:
        qmodel (nn.Module): The NNCF-wrapped quantized model.

    Returns:
        dict: ``{'format', 'nncf_config' (JSON str), 'scheme' (dict or None),
        'state_dict'}``; save it with ``torch.save``.
    """
    wrapped = dict(wrapped_submodules(qmodel))
    if '' not in wrapped:
        raise ValueError(f'{type(qmodel).__name__} is not an NNCF-wrapped model; pass the '
                         'model returned by quantize_model')
    scheme = getattr(qmodel, SCHEME_ATTR, None)
    return {
        'format': FORMAT,
        'nncf_config': json.dumps(nncf.torch.get_config(qmodel)),
        'scheme': scheme.to_dict() if scheme is not None else None,
        'state_dict': {k: v.detach().clone() for k, v in qmodel.state_dict().items()},
    }


def load_quantized(fp_model: nn.Module, state: Dict[str, Any], example_input: Any) -> nn.Module:
    """Rebuild the quantized model saved by :func:`save_quantized`.

    Args:
        fp_model (nn.Module): The full-precision model, prepared exactly as before
            quantizing (e.g. attention made explicit); it is copied, not modified.
        state (dict): Output of :func:`save_quantized` (possibly through
            ``torch.save``/``torch.load(weights_only=True)``).
        example_input: One input; the restored model runs it once to check that every
            quantizer sits on an operation that exists in ``fp_model``'s forward.

    Returns:
        nn.Module: The quantized model, with outputs identical to the saved one.

    Raises:
        ValueError: Unknown checkpoint format.
        RuntimeError: Some quantizers never run (the model differs from the saved one).
    """
    if state.get('format') != FORMAT:
        raise ValueError(f'not a {FORMAT} checkpoint (format={state.get("format")!r})')
    qmodel = nncf.torch.load_from_config(copy.deepcopy(fp_model), json.loads(state['nncf_config']),
                                         allowed_modules=ALLOWED_MODULES)
    qmodel.load_state_dict(state['state_dict'])
    if state.get('scheme') is not None:
        setattr(qmodel, SCHEME_ATTR, QuantScheme.from_dict(state['scheme']))
    _check_all_run(qmodel, example_input)
    return qmodel


def _check_all_run(qmodel: nn.Module, example_input: Any) -> None:
    ran = set()
    handles = [q.register_forward_pre_hook(lambda m, a, n=n: ran.add(n))
               for n, q in iter_quantizers(qmodel)]
    was_training = qmodel.training
    try:
        qmodel.eval()
        with quantizers_disabled(qmodel):
            import torch
            with torch.no_grad():
                run_model(qmodel, example_input)
    finally:
        qmodel.train(was_training)
        for h in handles:
            h.remove()
    idle = [n for n, _ in iter_quantizers(qmodel) if n not in ran]
    if idle:
        raise RuntimeError(
            f'{len(idle)} restored quantizer(s) never run, e.g. {idle[:3]}: fp_model does '
            'not execute the operations they were saved on. Prepare it as before '
            'quantizing (maskaq_plugin.attention.make_attention_explicit, same '
            'architecture and config).')

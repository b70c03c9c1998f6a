"""Set the quantizer ranges of a quantized model from a few batches, in place.

MMEngine builds the optimizer (and the DDP wrapper) before any hook runs, so the student's
quantizer parameters exist long before the first synthetic images do. Calibration must
therefore write into the *existing* ``nn.Parameter`` objects (``param.data.copy_``), so
an optimizer built earlier keeps training them.

Statistics are taken with every quantizer disabled (the full-precision activations, as
NNCF's post-training calibration does).

Recipe ``'lsq'`` (the authors' quantizers, :mod:`.lsq`), as in the released code:

* activations: initialised from the **first batch** only: step ``2·mean|x|/√Q_p``,
  zero point ``0.1·(min x − step·Q_p)``, signed when that batch has a negative value,
  LSQ's gradient scale ``1/√(N·Q_p)`` with N the elements of that batch's tensor;
* with ``act_init='minmax'`` *(ours)*, activations instead span the mean min-max range
  below (step ``(max − min)/(2^b − 1)``, the zero point placing the lowest code at the
  mean minimum), with LSQ's gradient scale;
* weights: nothing to learn (the range is recomputed from the weights on every forward);
  their NNCF ``scale`` is refreshed to show it.

Recipe ``'nncf'`` (NNCF's quantizers):

* weights: per output channel ``max |w|`` (symmetric, narrow range);
* activations: the mean over samples of the per-sample min and max ("mean min-max",
  robust to a few outliers). Symmetric quantizers become unsigned ``[0, s]`` when no
  negative value was seen (softmax output), signed ``[-s·2^(b-1)/(2^(b-1)-1), s]``
  otherwise, with ``s = max(|mean min|, mean max)``; asymmetric ones get
  ``low = mean min``, ``range = mean max - mean min``.

Under ``torch.distributed`` the statistics are averaged over ranks (``min`` takes the
minimum), so every rank holds the same ranges.
"""
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, Union

import torch
import torch.distributed as dist
from nncf.torch.quantization.layers import AsymmetricQuantizer
from torch import nn

from .inspect import iter_quantizers
from .lsq import LSQActivationQuantizer, MinMaxWeightQuantizer

DEFAULT_SUBSET_SIZE = 256
_MIN_RANGE = 1e-8


def run_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on one input: a tensor, a tuple of positional arguments or a dict."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def _batch_size(batch: Any) -> int:
    first = batch if isinstance(batch, torch.Tensor) else \
        next(iter(batch.values() if isinstance(batch, dict) else batch))
    return first.shape[0] if first.dim() else 1


def iter_batches(inputs: Any, subset_size: int = DEFAULT_SUBSET_SIZE) -> Iterator[Any]:
    """Batches of ``inputs`` up to ``subset_size`` samples.

    A tensor, a tuple (positional arguments) or a dict (keyword arguments) is one batch;
    a list or any other iterable (e.g. a DataLoader) yields batches. A tensor batch that
    would exceed ``subset_size`` is cut.
    """
    batches = [inputs] if isinstance(inputs, (torch.Tensor, tuple, dict)) else inputs
    seen = 0
    for batch in batches:
        if seen >= subset_size:
            break
        if isinstance(batch, torch.Tensor):
            batch = batch[:subset_size - seen]
        seen += _batch_size(batch)
        yield batch


@contextmanager
def quantizers_disabled(model: nn.Module):
    """Run ``model`` in full precision inside the block (its quantizers pass through).

    Only the quantizers' ``enabled`` flags change (restored afterwards); their parameters
    and ``requires_grad`` do not.
    """
    saved = [(q, q.enabled.clone()) for _, q in iter_quantizers(model)]
    try:
        for q, _ in saved:
            q.enabled.fill_(0)
        yield model
    finally:
        for q, flag in saved:
            q.enabled.copy_(flag)


def _all_reduce_(t, op=dist.ReduceOp.SUM):
    """``dist.all_reduce`` of a CPU statistic in place; NCCL reduces CUDA tensors only."""
    if dist.get_backend() != 'nccl':
        dist.all_reduce(t, op=op)
        return
    on_gpu = t.to(torch.device('cuda', torch.cuda.current_device()))
    dist.all_reduce(on_gpu, op=op)
    t.copy_(on_gpu)


class _Stats:
    """Running statistics of one quantizer's input."""

    def __init__(self, quantizer):
        self.q = quantizer
        self.count = torch.zeros(())
        self.sum_min = torch.zeros(())
        self.sum_max = torch.zeros(())
        self.min = torch.tensor(float('inf'))
        self.absmax = None
        self.first = None  # recipe 'lsq': (mean |x|, min x, numel) of the first batch
        self.first_numel = None  # act_init='minmax': N of LSQ's gradient scale

    def __call__(self, module, args):
        x = args[0].detach().float()
        if isinstance(self.q, MinMaxWeightQuantizer):  # range follows the weights
            self.weight = x  # only to show the current range in its `scale`
            self.count += 1
            return
        if isinstance(self.q, LSQActivationQuantizer) and int(self.q.minmax_init):
            if self.first_numel is None:
                self.first_numel = x.numel()
        elif isinstance(self.q, LSQActivationQuantizer):
            if self.first is None:
                self.first = torch.stack([x.abs().mean(), x.min()]).cpu(), x.numel()
            self.count += 1
            return
        if self.q.per_channel:  # weight: max |w| over every axis but the channel one
            dims = [d for d, s in enumerate(self.q.scale_shape) if s == 1]
            self.absmax = x.abs().amax(dim=dims, keepdim=True) if dims else x.abs()
            self.count += 1
            return
        per_sample = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
        mins, maxs = per_sample.amin(1), per_sample.amax(1)
        self.count += mins.numel()
        self.sum_min += mins.sum().cpu()
        self.sum_max += maxs.sum().cpu()
        self.min = torch.minimum(self.min, mins.min().cpu())

    def all_reduce(self):
        if self.first is not None:  # mean of mean|x| over ranks, min of min x
            total = torch.stack([self.first[0][0], torch.ones(())])  # (sum, ranks)
            minimum = self.first[0][1:].clone()
            _all_reduce_(total)
            _all_reduce_(minimum, op=dist.ReduceOp.MIN)
            self.first = torch.cat([(total[0] / total[1]).reshape(1), minimum]), self.first[1]
        elif self.absmax is None and not isinstance(self.q, MinMaxWeightQuantizer):
            for t in (self.count, self.sum_min, self.sum_max):
                _all_reduce_(t)
            _all_reduce_(self.min, op=dist.ReduceOp.MIN)

    @torch.no_grad()
    def apply(self):
        q = self.q
        if isinstance(q, MinMaxWeightQuantizer):
            q.refresh_scale(self.weight)
        elif isinstance(q, LSQActivationQuantizer) and int(q.minmax_init):
            lo, hi = (self.sum_min / self.count).item(), (self.sum_max / self.count).item()
            q.init_from_range(lo, max(hi, lo + _MIN_RANGE), bool(self.min < 0),
                              self.first_numel)
        elif isinstance(q, LSQActivationQuantizer):
            (abs_mean, minimum), numel = self.first[0].tolist(), self.first[1]
            q.init_from_batch(abs_mean, minimum, numel)
        elif q.per_channel:
            q.scale.copy_(self.absmax.clamp_min(_MIN_RANGE).reshape(q.scale_shape))
        else:
            lo, hi = self.sum_min / self.count, self.sum_max / self.count
            if isinstance(q, AsymmetricQuantizer):
                q.input_low.fill_(lo.item())
                q.input_range.fill_(max((hi - lo).item(), _MIN_RANGE))
            else:
                q.signed = bool(self.min < 0)
                scale = max(-lo.item(), hi.item()) if q.signed else hi.item()
                q.scale.fill_(max(scale, _MIN_RANGE))
        q.initialized = True


@torch.no_grad()
def calibrate_ranges_(qmodel: nn.Module, inputs: Union[torch.Tensor, Iterable, Any],
                      *, subset_size: int = DEFAULT_SUBSET_SIZE) -> nn.Module:
    """Set every quantizer's range of ``qmodel`` from ``inputs``, in place.

    The quantizer ``nn.Parameter`` objects keep their identity (an optimizer built
    before still trains them); the model's own weights are untouched.

    Args:
        qmodel (nn.Module): A model from :func:`quantize_model` (or one containing it).
        inputs: One batch (tensor / tuple / dict) or an iterable of batches.
        subset_size (int): At most this many samples are used. Defaults to 256.

    Returns:
        nn.Module: ``qmodel``.

    Raises:
        RuntimeError: Some quantizer never ran on ``inputs`` (the forward differs from
            the one traced at quantization; the message lists them).
    """
    stats: Dict[str, _Stats] = {}
    handles = []
    for name, q in iter_quantizers(qmodel):
        stats[name] = _Stats(q)
        handles.append(q.register_forward_pre_hook(stats[name]))
    was_training = qmodel.training
    qmodel.eval()
    try:
        with quantizers_disabled(qmodel):
            for batch in iter_batches(inputs, subset_size):
                run_model(qmodel, batch)
    finally:
        qmodel.train(was_training)
        for h in handles:
            h.remove()
    missing = [name for name, s in stats.items() if s.count == 0]
    if missing:
        raise RuntimeError(
            f'{len(missing)} quantizer(s) never ran on the calibration inputs: '
            f'{missing[:5]}{" ..." if len(missing) > 5 else ""}. The forward differs from '
            'the one traced by quantize_model (e.g. attention made explicit after '
            'quantizing, or another input type); quantize the model as it will run.')
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    for s in stats.values():
        if distributed:
            s.all_reduce()
        s.apply()
    return qmodel

"""RoundService on a stub synthesizer: what it synthesises, with which seeds, in what order."""
import doctest

import torch

from maskaq_plugin.synthesis import shards
from maskaq_plugin.synthesis.bank import SampleBank
from maskaq_plugin.synthesis.rounds import BOOTSTRAP_TAG, RoundService
from maskaq_plugin.synthesis.shards import shard_seed
from maskaq_plugin.synthesis.synthesizer import SynthesisResult
from maskaq_plugin.utils.seeding import derive_seed


class _Stub:
    """Records ``(with_student, options, num_samples, batch_size, seed)`` per call; the
    images are filled with the call's index."""

    def __init__(self, calls):
        self.calls = calls

    def build(self, with_student, **options):
        stub = self

        class Synth:
            def synthesize(self, n, batch_size, *, seed):
                stub.calls.append((with_student, options, n, batch_size, seed))
                images = torch.full((n, 3, 4, 4), float(len(stub.calls)))
                return SynthesisResult(images, [1] * n, None, dict(loss=float(seed % 7)))

        return Synth()


def _service(calls, calibrated, **kwargs):
    return RoundService(_Stub(calls).build,
                        lambda batches, subset_size: calibrated.append((batches, subset_size)),
                        **dict(dict(num_samples=5, batch_size=2, seed=7, rank=0, world=1,
                                    synthesis=dict(iters=3), bootstrap_iters=1), **kwargs))


def test_docstring_examples_run():
    result = doctest.testmod(shards)
    assert result.attempted >= 3 and result.failed == 0


def test_memory_rounds_seeds_and_calibration():
    calls, calibrated, scalars = [], [], {}
    service = _service(calls, calibrated, bootstrap_samples=3,
                       scalars=lambda key, value: scalars.__setitem__(key, value))
    boot = service.bootstrap()
    assert calls == [(False, dict(iters=1, progress=False), 3, 2,
                      derive_seed(7, BOOTSTRAP_TAG))]
    (batches, subset), = calibrated  # every bootstrap image, in batches of batch_size
    assert [b.shape[0] for b in batches] == [2, 1] and subset == 3
    assert torch.equal(torch.cat(batches), boot.images)
    images = service.run_round(0)  # 5 images: shards of 2, 2, 1, one call each
    assert images.shape == (5, 3, 4, 4) and service.round == 0
    assert [c[2:] for c in calls[1:]] == [(n, n, shard_seed(7, 0, 0, i))
                                         for i, n in enumerate((2, 2, 1))]
    assert all(c[0] and c[1] == dict(iters=3, progress=False) for c in calls[1:])
    service.refresh()
    assert service.round == 1 and calls[-1][4] == shard_seed(7, 1, 0, 2)
    assert 'synthesis/bootstrap_loss' in scalars and 'synthesis/loss' in scalars


def test_ranks_split_a_round_and_baselines_synthesise_without_student():
    calls = []
    _service(calls, [], rank=1, world=2, synthesis=dict(method='psaq')).run_round(0)
    # rank 1 of 2 takes 2 of the 5 images: one shard, seeded with its own rank
    assert [(c[0], c[2], c[4]) for c in calls] == [(False, 2, shard_seed(7, 0, 1, 0))]


def test_bank_round_is_committed_and_pruned(tmp_path):
    bank = SampleBank(str(tmp_path / 'bank'))
    service = _service([], [], bank=bank, state=torch.nn.Linear(1, 1),
                       manifest=dict(task='cls'))
    assert service.start() is None
    service.refresh()
    assert bank.rounds() == [1]  # keep_rounds=1
    manifest = bank.read_manifest(1)
    assert manifest['num_images'] == 5 and manifest['task'] == 'cls'
    assert [s['file'] for s in manifest['shards']] == [f'shard_r0_{i}.pt' for i in range(3)]
    assert manifest['state_key'] and bank.load_round(1)['targets'] == [1] * 5

"""The synthetic train dataloader of an MMEngine run, through public attributes only."""
import inspect

from torch.utils.data import BatchSampler, DataLoader

# DataLoader arguments that a new loader takes from the old one's attributes (the
# sampling ones are rebuilt: see `restart_train_iterator`).
_LOADER_SAMPLING = ('dataset', 'batch_size', 'shuffle', 'sampler', 'batch_sampler',
                    'drop_last')


def synthetic_dataset(loader):
    """The ``MaskAQSyntheticDataset`` of ``loader`` (unwrapping dataset wrappers)."""
    from ..datasets import MaskAQSyntheticDataset
    dataset = loader.dataset
    while not isinstance(dataset, MaskAQSyntheticDataset) and hasattr(dataset, 'dataset'):
        dataset = dataset.dataset
    if not isinstance(dataset, MaskAQSyntheticDataset):
        raise TypeError(f'SampleRefreshHook needs train_dataloader.dataset of type '
                        f'MaskAQSyntheticDataset, got {type(dataset).__name__}')
    return dataset


def _rebuilt(obj, **override):
    """A new object of ``obj``'s class, its ``__init__`` arguments read from the
    attributes of the same name (mmengine's and torch's samplers keep them)."""
    params = inspect.signature(type(obj).__init__).parameters
    kwargs = {name: getattr(obj, name) for name in params
              if name != 'self' and hasattr(obj, name)}
    return type(obj)(**dict(kwargs, **override))


def restart_train_iterator(loop) -> bool:
    """Give an iteration-based loop a new dataloader and iterator once the bank exists.

    ``IterBasedTrainLoop`` creates its infinite iterator when the loop is built, before
    any hook: with workers, they were forked (and started prefetching) with a dataset
    that had no bank yet, and they drew indices from the sampler. The loop gets a new
    ``DataLoader`` (same dataset, settings and sampler arguments; a new sampler, so the
    index sequence starts again) and a new iterator, whose workers see the bank; the old
    workers stop when the old loader is released. Returns whether it restarted.
    """
    iterator = getattr(loop, 'dataloader_iterator', None)
    loader = getattr(loop, 'dataloader', None)
    if iterator is None or getattr(loader, 'num_workers', 0) == 0:
        return False
    batches = loader.batch_sampler
    sampler = _rebuilt(batches.sampler)
    batches = _rebuilt(batches, sampler=sampler) if not isinstance(batches, BatchSampler) \
        else BatchSampler(sampler, batches.batch_size, batches.drop_last)
    kwargs = {name: getattr(loader, name) for name in inspect.signature(DataLoader).parameters
              if name not in _LOADER_SAMPLING and hasattr(loader, name)}
    loop.dataloader = DataLoader(loader.dataset, batch_sampler=batches, **kwargs)
    loop.dataloader_iterator = type(iterator)(loop.dataloader)
    return True

"""Datasets, samplers and the DataLoader with torch's names and semantics (``npconv.utils.data``).

npconv draws its random numbers from NumPy (PCG64): a seed reproduces npconv's shuffles and
splits, not torch's. Everything else - batching, collation, sampler protocols, worker processes
in order, ``get_worker_info`` - follows ``torch.utils.data``.
"""

from .collate import default_collate, default_convert
from .dataloader import DataLoader, WorkerInfo, get_worker_info
from .dataset import (
    ConcatDataset,
    Dataset,
    IterableDataset,
    StackDataset,
    Subset,
    TensorDataset,
    random_split,
)
from .distributed import DistributedSampler
from .sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

__all__ = [
    "Dataset", "IterableDataset", "TensorDataset", "StackDataset", "ConcatDataset", "Subset", "random_split",
    "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler",
    "BatchSampler", "DataLoader", "get_worker_info", "WorkerInfo", "default_collate", "default_convert",
    "DistributedSampler",
]

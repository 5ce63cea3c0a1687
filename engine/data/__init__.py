"""The data layer: reading/writing the mmbal Parquet format, the synthetic generator, and the
batch sources the trainer draws batches from: device-resident tensors (``TensorData``) or row
groups streamed from disk (``StreamData``), chosen by size against ``data.memory_budget``. A training
batch is a ``Batch`` (inputs, labels, train-split sample ids, dropped-modality masks); a method may
give an epoch's samples as an ``EpochPlan`` (resident data)."""

from .batch import Batch
from .config import DataConfig, SynthConfig
from .dataset import TensorData, batch_slices, epoch_permutation, load_data, select_modalities, to_tensors
from .inspect import inspect_dataset
from .memory import Placement
from .plan import EpochPlan
from .stream import StreamData
from .parquet import KINDS, ModalityInfo, RawDataset, peek_schema, read_dataset
from .split import SPLIT_NAMES, stratified_split
from .synthetic import generate
from .writer import write_dataset

__all__ = ["Batch", "EpochPlan", "DataConfig", "SynthConfig", "TensorData", "batch_slices", "epoch_permutation", "load_data",
           "select_modalities", "to_tensors", "inspect_dataset", "KINDS", "ModalityInfo", "RawDataset",
           "peek_schema", "read_dataset", "SPLIT_NAMES", "stratified_split", "generate", "write_dataset", "Placement", "StreamData"]

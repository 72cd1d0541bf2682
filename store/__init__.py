"""The attncmp attention store: an HDF5 file (or shard files) joining extraction and analysis.

h5py + numpy only; never imports torch, ``extract`` or ``analyze``. See ``store_schema.md``.
"""

from .batch import FlatBatch, SampleRecord
from .errors import (
    StoreConfigMismatch,
    StoreDiskFullError,
    StoreError,
    StoreInputError,
    StoreReadError,
    StoreVersionError,
)
from .info import StoreInfo, store_info
from .merge import MergeResult, merge_stores
from .reader import FlatBlocks, Sample, SiteChunk, SiteInfo, Store, open_store
from .schema import SCHEMA_VERSION, ModelSpec, SiteSpec, StoreSpec, shard_ids
from .validate import Problem, ValidationReport, validate_store
from .writer import StoreWriter

__all__ = [
    "SCHEMA_VERSION",
    "FlatBatch",
    "FlatBlocks",
    "MergeResult",
    "ModelSpec",
    "Problem",
    "Sample",
    "SampleRecord",
    "SiteChunk",
    "SiteInfo",
    "SiteSpec",
    "Store",
    "StoreConfigMismatch",
    "StoreDiskFullError",
    "StoreError",
    "StoreInfo",
    "StoreInputError",
    "StoreReadError",
    "StoreSpec",
    "StoreVersionError",
    "StoreWriter",
    "ValidationReport",
    "merge_stores",
    "open_store",
    "shard_ids",
    "store_info",
    "validate_store",
]

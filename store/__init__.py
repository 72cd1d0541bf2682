"""The attncmp attention store: an HDF5 file (or shard files) joining extraction and analysis.

h5py + numpy only; never imports torch, ``extract`` or ``analyze``. See ``store_schema.md``.
"""

from .batch import FlatBatch, SampleRecord
from .errors import StoreConfigMismatch, StoreError, StoreInputError, StoreVersionError
from .reader import FlatBlocks, Sample, SiteChunk, SiteInfo, Store, open_store
from .schema import SCHEMA_VERSION, ModelSpec, SiteSpec, StoreSpec, shard_ids
from .writer import StoreWriter

__all__ = [
    "SCHEMA_VERSION",
    "FlatBatch",
    "FlatBlocks",
    "ModelSpec",
    "Sample",
    "SampleRecord",
    "SiteChunk",
    "SiteInfo",
    "SiteSpec",
    "Store",
    "StoreConfigMismatch",
    "StoreError",
    "StoreInputError",
    "StoreSpec",
    "StoreVersionError",
    "StoreWriter",
    "open_store",
    "shard_ids",
]

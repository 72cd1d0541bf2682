"""Exceptions raised by the store. Every message is one line that names the file (and the HDF5
path or sample where relevant) and says what to do."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: a problem with a store file that the user can act on."""


class StoreVersionError(StoreError):
    """The store was written by a newer, incompatible schema version."""


class StoreConfigMismatch(StoreError):
    """An existing store was made with a different configuration than the one appending to it."""


class StoreInputError(StoreError):
    """Data handed to the writer is inconsistent (wrong sizes, unknown ids, duplicates...)."""


class StoreReadError(StoreError):
    """Stored data cannot be read back (a chunk fails its Fletcher-32 checksum, cannot be
    decompressed, or the file is damaged); the message names the file, the HDF5 dataset and the
    samples affected."""


class StoreDiskFullError(StoreError):
    """The disk holding the store is (about to be) full. Raised before HDF5 writes anything it
    could not finish: the committed samples are safe and the same command continues the store."""

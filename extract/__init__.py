"""Extraction stage (torch): adapters, attention capture, the engine, the reference model.

Importing ``extract`` itself is light (no torch); the engine is in :mod:`extract.engine`::

    from attncmp.extract.engine import ExtractConfig, run_extraction

The adapter protocol is documented in :mod:`extract.adapter`, the capture helpers in
:mod:`extract.capture`, the error types in :mod:`extract.errors`.
"""

from .errors import ExtractError

__all__ = ["ExtractError"]

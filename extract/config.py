"""What one extraction run is asked to do: :class:`ExtractConfig` (torch-free, so the command line
and the workflows can build it before deciding whether extraction, and torch, are needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import named_checkpoints
from .errors import ExtractError

__all__ = ["STORE_NAME", "ExtractConfig"]

STORE_NAME = "attention_store.h5"  # the store's file name inside a save directory


@dataclass
class ExtractConfig:
    """Everything one extraction run needs (the CLI builds this from its options)."""

    models: Sequence[tuple[str, str]]  # (variant name, checkpoint path), >= 2, baseline first
    adapter: Any = "reference"  # "reference", "pkg.module:object", "file.py:object" or an object
    adapter_options: Any = None  # {KEY: VALUE} or ["KEY=VALUE", ...] for the adapter's constructor
    out: str | os.PathLike = STORE_NAME  # store file (shards get a suffix)
    root_dir: str | None = None  # the adapter's data directory
    split: str = "test"  # which split's samples to extract; "valid,test" pools several
    num_samples: int | None = None  # seeded subset of the split; None = all of it
    batch_size: int = 32
    seed: int = 0  # selection seed (also torch.manual_seed)
    device: str = "auto"  # auto | cpu | cuda | cuda:k | mps
    dtype: str = "float16"  # stored attention dtype
    shard: tuple[int, int] | str | None = None  # (i, n) or "i/n"; None: RANK/WORLD_SIZE or 0/1
    baseline: str | None = None  # default: the first model
    allow_training_samples: bool = False
    trust_checkpoint: bool = False  # allow pickled objects in checkpoints (recorded)
    on_invalid: str = "fail"  # fail | warn
    quiet: bool = False  # no progress bar
    compression: str = "gzip"  # gzip | lzf | none
    queue_size: int = 2  # batches in flight between the device and the writer thread
    prefetch: int | None = None  # batches built ahead on a thread; None: 2 on GPU, 0 on CPU
    commit_every: float = 2.0  # seconds between commits (batches are grouped); 0: every batch
    progress_stream: Any = None  # default sys.stderr
    overwrite: bool = False  # replace an existing store (default: continue it)

    @classmethod
    def from_cli_args(
        cls,
        *,
        models: Sequence[str | tuple[str, str]] = (),
        checkpoint_full: str | None = None,
        checkpoint_no_middle: str | None = None,
        all_samples: bool = False,
        out: str | os.PathLike | None = None,
        save_dir: str | os.PathLike | None = None,
        **fields: Any,
    ) -> ExtractConfig:
        """The configuration of ``attncmp extract`` / ``attncmp compare`` from their options.

        ``models`` are ``"NAME=PATH"`` strings; the original spelling ``checkpoint_full`` /
        ``checkpoint_no_middle`` adds variants named ``full`` / ``no_middle`` (first).
        ``save_dir`` puts the store at ``save_dir/attention_store.h5``. ``all_samples`` conflicts
        with ``num_samples``. Any other keyword is a field. Raises :class:`ExtractError`.
        """
        pairs = named_checkpoints(models, checkpoint_full, checkpoint_no_middle)
        if all_samples and fields.get("num_samples") is not None:
            raise ExtractError("--all and --num-samples exclude each other; give one")
        if save_dir is not None and out is not None:
            raise ExtractError("--out and --save-dir exclude each other; give one")
        if save_dir is not None:
            out = Path(save_dir) / STORE_NAME
        return cls(models=pairs, out=out or STORE_NAME, **fields)

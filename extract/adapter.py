"""The adapter protocol: how ``attncmp extract`` talks to a user's own model code.

An adapter is a small object (or a class, instantiated once with no arguments) that the engine calls
in this order::

    handle = adapter.load_model(checkpoint_path, device, trust_checkpoint)   # once per variant
    adapter.sites(handle)             -> list[SiteSpec]     # attention sites of that variant
    adapter.sample_ids(split, root_dir) -> list[str]        # a split's ids, deterministic order
    adapter.training_ids(handle)      -> set[str] | None    # optional: ids the variant trained on
    adapter.model_info(handle)        -> dict               # optional: JSON config for provenance
    # then, per batch of selected ids:
    batch = adapter.make_batch(ids, root_dir)               # model independent, built once
    adapter.describe(batch)           -> list[SampleInfo]   # labels, tokens, targets, gold...
    adapter.forward(handle, batch, device) -> ForwardOutput # once per variant, same batch

``sample_ids`` and ``make_batch`` are called after every ``load_model``, so an adapter may keep
what the checkpoints record (a split, a tokenizer) on ``self``. The engine moves the batch to the
device once (anything with a ``.to(device)`` method, tensors, and dicts/lists/tuples of them) before
handing the same object to every variant's ``forward``; ``forward`` runs under
``torch.inference_mode()`` with the model in eval mode.

Attention reaches the engine as padded tensors ``[batch, layers, heads, query, key]`` (or
``[batch, heads, query, key]`` for one layer) per site. Only ``[:n_query, :n_key]`` of each sample
is kept, where the lengths come from ``ForwardOutput.n_nodes / n_tokens`` (or the masks) and
default to the lengths of ``SampleInfo.node_labels / tokens``. Three helpers in
:mod:`extract.capture` obtain attention without editing a model: a key path into its output dict,
forward hooks on ``torch.nn.MultiheadAttention`` modules, and Hugging Face ``cross_attentions``
tuples.

Optional attributes: ``name`` (recorded in provenance), ``has_gold`` (bool; otherwise inferred from
the first selected sample), ``meta_columns`` (``[(name, "float" | "int" | "str")]``; otherwise
inferred from the first selected sample's ``SampleInfo.meta``), ``target_names`` (default
``("target",)`` or ``target_0..`` for vector targets).

``--adapter module:object`` names the object; ``--adapter path/to/file.py:object`` loads a file.
``--adapter-opt KEY=VALUE`` (repeatable) settings are handed to the adapter class's constructor
as keyword arguments (values parsed as JSON scalars where they are one: ``0.5``, ``true``, ``3``;
else kept as strings); an adapter given as an instance receives them through its ``configure``
method. The options, the adapter's source file and that file's sha256 are recorded in every
model's provenance (:func:`adapter_source`).

Splits: ``--split valid,test`` calls ``sample_ids`` once per split and pools the ids into one
selection (an id in two splits is an error); each sample's split is what ``describe()`` says, or
the split whose ``sample_ids`` listed it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import AdapterError

__all__ = [
    "BUILTIN_ADAPTERS",
    "OPTIONAL_METHODS",
    "REQUIRED_METHODS",
    "Adapter",
    "ForwardOutput",
    "SampleInfo",
    "adapter_source",
    "parse_adapter_options",
    "resolve_adapter",
]

REQUIRED_METHODS = ("load_model", "sites", "sample_ids", "make_batch", "describe", "forward")
OPTIONAL_METHODS = ("training_ids", "model_info")
BUILTIN_ADAPTERS = {"reference": "attncmp.extract.adapters.reference:ReferenceAdapter"}


@dataclass
class SampleInfo:
    """What the store keeps about one sample besides attention and predictions.

    ``node_labels`` has one entry per valid node (e.g. the element symbol; the store keeps index
    order), ``tokens`` one string per valid token *as the model tokenised it*, ``special`` flags the
    special tokens ([CLS], [SEP], ...). ``gold`` is an optional bool ``[n_nodes, n_tokens]`` mask of
    true node-token alignments. ``split`` defaults to the run's ``--split``.
    """

    id: str
    node_labels: Sequence[str]
    tokens: Sequence[str]
    target: float | Sequence[float]
    special: Sequence[bool] | None = None  # default: no special tokens
    split: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    gold: Any = None  # numpy bool [n_nodes, n_tokens] or None


@dataclass
class ForwardOutput:
    """One variant's forward pass on one batch (tensors may live on the device).

    Lengths: give ``n_nodes``/``n_tokens`` (``[B]`` ints) or ``node_mask``/``token_mask``
    (``[B, N]``/``[B, T]`` bool, True on valid positions, valid positions first) when the model
    decides them itself (e.g. its own tokenizer); otherwise the lengths of ``describe()`` are used.
    Whatever is given must agree across variants, sample by sample.
    """

    attention: Mapping[str, Any]  # site -> [B, L, H, Q, K] or [B, H, Q, K], padded
    predictions: Any  # [B] or [B, n_targets]
    n_nodes: Any = None  # [B] valid nodes per sample, as this model saw them
    n_tokens: Any = None  # [B] valid tokens per sample, as this model saw them
    node_mask: Any = None  # [B, N] bool, alternative to n_nodes
    token_mask: Any = None  # [B, T] bool, alternative to n_tokens


@runtime_checkable
class Adapter(Protocol):
    """Structural type of an adapter (see the module docstring for the call order)."""

    def load_model(self, checkpoint_path: str, device: Any, trust_checkpoint: bool) -> Any: ...

    def sites(self, handle: Any) -> list[Any]: ...  # list[store.SiteSpec]

    def sample_ids(self, split: str, root_dir: str | None) -> list[str]: ...

    def make_batch(self, ids: list[str], root_dir: str | None) -> Any: ...

    def describe(self, batch: Any) -> list[SampleInfo]: ...

    def forward(self, handle: Any, batch: Any, device: Any) -> ForwardOutput: ...


def _load_file_module(path: Path) -> Any:
    name = f"attncmp_adapter_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AdapterError(f"adapter file {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise AdapterError(
            f"adapter file {path} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def parse_adapter_options(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["cutoff=5.0", "tokenizer=vocab.txt"]`` -> ``{"cutoff": 5.0, "tokenizer": "vocab.txt"}``.

    Values that parse as a JSON number, ``true``/``false`` or ``null`` become that value; others
    stay strings. Raises :class:`AdapterError` for an item without ``=`` or a repeated key.
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise AdapterError(
                f"--adapter-opt {item!r}: expected KEY=VALUE with KEY a Python identifier, e.g. "
                "cutoff=5.0"
            )
        if key in out:
            raise AdapterError(f"--adapter-opt {key!r} given twice; give each key once")
        try:
            val = json.loads(raw)
            if isinstance(val, (list, dict)):
                val = raw
        except ValueError:
            val = raw
        out[key] = val
    return out


def adapter_source(obj: Any) -> dict[str, Any]:
    """``{"file": path, "sha256": hex}`` of the source file that defines the adapter (its
    class's module), or ``{"file": None, "sha256": None}`` when there is none (e.g. a REPL)."""
    t = obj if isinstance(obj, type) else type(obj)
    mod = sys.modules.get(t.__module__)
    try:
        path = inspect.getsourcefile(mod) if mod is not None else None
    except TypeError:
        path = None
    if not path or not Path(path).is_file():
        return {"file": None, "sha256": None}
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"file": str(Path(path).resolve()), "sha256": digest}


def resolve_adapter(spec: str | Any, options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Turn ``--adapter`` into an adapter instance and the name recorded in provenance.

    ``spec`` is ``"reference"`` (the built-in adapter), ``"package.module:object"``,
    ``"path/to/file.py:object"``, or an adapter object/class itself. A class is instantiated with
    no arguments. Raises :class:`AdapterError` (one line) when the module cannot be imported, the
    object does not exist, or a required method is missing.
    """
    if not isinstance(spec, str):
        obj, label = spec, getattr(spec, "name", None) or _qualname(spec)
    else:
        text = BUILTIN_ADAPTERS.get(spec, spec)
        label = spec
        mod_name, sep, attr = text.rpartition(":")
        if not sep or not mod_name or not attr:
            raise AdapterError(
                f"--adapter {spec!r}: expected 'reference', 'package.module:object' or "
                "'path/to/file.py:object'"
            )
        if mod_name.endswith(".py") or "/" in mod_name or "\\" in mod_name:
            path = Path(mod_name)
            if not path.is_file():
                raise AdapterError(f"--adapter {spec!r}: file {path} does not exist")
            module = _load_file_module(path)
        else:
            try:
                module = importlib.import_module(mod_name)
            except ModuleNotFoundError as exc:
                raise AdapterError(
                    f"--adapter {spec!r}: module {mod_name!r} is not importable ({exc}); "
                    "check the name and that its directory is on PYTHONPATH"
                ) from exc
            except Exception as exc:
                raise AdapterError(
                    f"--adapter {spec!r}: importing {mod_name!r} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        obj = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                public = sorted(n for n in dir(module) if not n.startswith("_"))
                raise AdapterError(
                    f"--adapter {spec!r}: {mod_name!r} has no attribute {attr!r}; it has "
                    f"{public[:20]}"
                )
            obj = getattr(obj, part)
    options = dict(options or {})
    if isinstance(obj, type):
        try:
            obj = obj(**options)
        except TypeError as exc:
            if options:
                raise AdapterError(
                    f"--adapter {label!r}: {obj.__name__} does not take the settings "
                    f"{sorted(options)} ({exc}); check the --adapter-opt keys against its "
                    "constructor"
                ) from exc
            raise AdapterError(
                f"--adapter {label!r}: {obj.__name__}() failed: {type(exc).__name__}: {exc}"
            ) from exc
        except Exception as exc:
            raise AdapterError(
                f"--adapter {label!r}: {obj.__name__}() failed: {type(exc).__name__}: {exc}"
            ) from exc
    elif options:
        configure = getattr(obj, "configure", None)
        if not callable(configure):
            raise AdapterError(
                f"--adapter {label!r} is an instance without a configure() method, so it cannot "
                f"take --adapter-opt {sorted(options)}; point --adapter at its class instead"
            )
        try:
            configure(**options)
        except Exception as exc:
            raise AdapterError(
                f"--adapter {label!r}: configure({', '.join(sorted(options))}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(obj, m, None))]
    if missing:
        raise AdapterError(
            f"--adapter {label!r}: object {_qualname(obj)} lacks required method(s) "
            f"{', '.join(missing)} (an adapter needs {', '.join(REQUIRED_METHODS)})"
        )
    return obj, label


def _qualname(obj: Any) -> str:
    t = obj if isinstance(obj, type) else type(obj)
    return f"{t.__module__}:{t.__qualname__}"

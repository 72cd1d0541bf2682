"""Three small, reusable ways to get per-head attention out of a model without editing it.

1. :func:`get_key_path` - a dotted key path into a model's (nested) output, e.g.
   ``"fine_grained_attention_weights.atom_to_text"``; on a miss the error lists the keys that exist.
2. :func:`capture_mha` - a context manager installing temporary forward hooks on
   ``torch.nn.MultiheadAttention`` modules chosen by name pattern. It forces
   ``need_weights=True, average_attn_weights=False``, records the per-head weights
   ``[batch, heads, query, key]`` and hands the caller exactly what it asked for (``None`` or the
   head-averaged weights), so the model's own code sees no difference. Hooks are removed in
   ``finally``.
3. :func:`stack_cross_attentions` - Hugging Face style ``cross_attentions`` (a tuple with one
   ``[batch, heads, query, key]`` tensor per layer) stacked to
   ``[batch, layers, heads, query, key]``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .errors import CaptureError, KeyPathError

__all__ = ["MHACapture", "capture_mha", "get_key_path", "stack_cross_attentions"]


# ---------------------------------------------------------------------------------------------
# 1. key path
# ---------------------------------------------------------------------------------------------
def _keys_of(obj: Any) -> list[str]:
    if isinstance(obj, Mapping):
        return [str(k) for k in obj.keys()]
    if isinstance(obj, (tuple, list)):
        return [str(i) for i in range(len(obj))]
    if hasattr(obj, "keys") and callable(obj.keys):  # e.g. transformers ModelOutput
        return [str(k) for k in obj.keys()]
    if hasattr(obj, "__dict__"):
        return sorted(k for k in vars(obj) if not k.startswith("_"))
    return []


def get_key_path(output: Any, path: str | Sequence[str]) -> Any:
    """Follow a dotted ``path`` through nested dicts, attributes and tuple indices.

    >>> get_key_path({"a": {"b": 1}}, "a.b")
    1

    Raises :class:`KeyPathError` naming the first missing part and listing the keys that exist
    at that level.
    """
    parts = path.split(".") if isinstance(path, str) else list(path)
    label = ".".join(parts)
    obj = output
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "<output>"
        found, value = False, None
        if isinstance(obj, Mapping):
            if part in obj:
                found, value = True, obj[part]
        elif isinstance(obj, (tuple, list)):
            if re.fullmatch(r"-?\d+", part) and -len(obj) <= int(part) < len(obj):
                found, value = True, obj[int(part)]
        elif hasattr(obj, "keys") and callable(obj.keys) and part in obj.keys():
            found, value = True, obj[part]
        elif hasattr(obj, part):
            found, value = True, getattr(obj, part)
        if not found or value is None:
            have = _keys_of(obj)
            what = "is None" if found else "not found"
            raise KeyPathError(
                f"output key path {label!r}: {part!r} {what} under {where} "
                f"({type(obj).__name__}); keys there: {have}"
            )
        obj = value
    return obj


# ---------------------------------------------------------------------------------------------
# 2. hooks on nn.MultiheadAttention
# ---------------------------------------------------------------------------------------------
# positions of the two flags in nn.MultiheadAttention.forward(query, key, value, key_padding_mask,
# need_weights, attn_mask, average_attn_weights, is_causal)
_NEED_WEIGHTS_POS = 4
_AVERAGE_POS = 6


class MHACapture:
    """What :func:`capture_mha` yields: the per-head weights recorded during the ``with`` block."""

    def __init__(self, names: list[str]) -> None:
        self.names = names  # selected module names, in model order (= layer order)
        self.weights: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def clear(self) -> None:
        for v in self.weights.values():
            v.clear()

    def get(self, name: str, call: int = -1) -> torch.Tensor:
        """Weights ``[batch, heads, query, key]`` of module ``name`` (its last call by default)."""
        if name not in self.weights:
            raise CaptureError(f"module {name!r} is not captured; captured: {self.names}")
        calls = self.weights[name]
        if not calls:
            raise CaptureError(
                f"module {name!r} was not called inside the capture block (no weights recorded)"
            )
        return calls[call]

    def stacked(self, names: Sequence[str] | None = None) -> torch.Tensor:
        """The last call of each module, stacked as ``[batch, layers, heads, query, key]``."""
        names = list(names) if names is not None else self.names
        mats = [self.get(n) for n in names]  # each [B, H, Q, K]
        shapes = {tuple(m.shape) for m in mats}
        if len(shapes) != 1:
            raise CaptureError(
                "captured modules returned different shapes "
                f"{dict(zip(names, [tuple(m.shape) for m in mats], strict=True))}; "
                "capture them as separate sites"
            )
        return torch.stack(mats, dim=1)  # [B, L, H, Q, K]


def _force_argument(
    args: list[Any], kwargs: dict[str, Any], pos: int, name: str, value: bool
) -> bool:
    """Set the boolean argument ``name`` (positional index ``pos``) of an
    ``nn.MultiheadAttention.forward`` call to ``value`` in place; return what the caller passed
    (the default, True, when it passed nothing)."""
    if len(args) > pos:
        given, args[pos] = bool(args[pos]), value
    else:
        given, kwargs[name] = bool(kwargs.get(name, True)), value
    return given


def _select(
    model: nn.Module, pattern: str | Sequence[str] | Callable[[str, nn.Module], bool]
) -> list[tuple[str, nn.MultiheadAttention]]:
    mha = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if callable(pattern):
        chosen = [(n, m) for n, m in mha if pattern(n, m)]
    else:
        pats = [pattern] if isinstance(pattern, str) else list(pattern)
        chosen = [(n, m) for n, m in mha if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if not chosen:
        raise CaptureError(
            f"no torch.nn.MultiheadAttention module matches {pattern!r}; the model has "
            f"{[n for n, _ in mha] or 'none'}"
        )
    return chosen


@contextmanager
def capture_mha(
    model: nn.Module,
    pattern: str | Sequence[str] | Callable[[str, nn.Module], bool] = "*",
    *,
    detach: bool = True,
) -> Iterator[MHACapture]:
    """Record per-head weights of the ``nn.MultiheadAttention`` modules selected by ``pattern``.

    ``pattern`` is a glob on the dotted module name (``"decoder.layers.*.cross_attn"``), a list
    of globs, or a predicate ``(name, module) -> bool``. Inside the block every selected module is
    called with ``need_weights=True, average_attn_weights=False``; the weights it returns to the
    model are converted back to what the caller asked for (``None``, or the head average), so the
    model computes the same thing. (PyTorch's fused "fast path" is skipped while weights are
    requested; results agree to floating-point rounding.)

    >>> with capture_mha(model, "cross_layers.*") as cap:
    ...     out = model(x)
    >>> att = cap.stacked()  # [batch, layers, heads, query, key]
    """
    chosen = _select(model, pattern)
    cap = MHACapture([n for n, _ in chosen])
    handles = []
    asked: dict[str, list[tuple[bool, bool]]] = {n: [] for n, _ in chosen}

    def make_pre(name: str):
        def pre(module, args, kwargs):
            args = list(args)
            need = _force_argument(args, kwargs, _NEED_WEIGHTS_POS, "need_weights", True)
            avg = _force_argument(args, kwargs, _AVERAGE_POS, "average_attn_weights", False)
            asked[name].append((need, avg))
            return tuple(args), kwargs

        return pre

    def make_post(name: str):
        def post(module, args, kwargs, output):
            need, avg = asked[name].pop() if asked[name] else (True, True)
            out, weights = output  # weights [B, H, Q, K] (or [H, Q, K] unbatched)
            if weights is None:
                return None
            cap.weights[name].append(weights.detach() if detach else weights)
            if not need:
                return out, None
            if avg:
                return out, weights.mean(dim=-3)  # what the caller would have got
            return None

        return post

    try:
        for name, module in chosen:
            handles.append(module.register_forward_pre_hook(make_pre(name), with_kwargs=True))
            handles.append(module.register_forward_hook(make_post(name), with_kwargs=True))
        yield cap
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------------------------
# 3. Hugging Face cross_attentions
# ---------------------------------------------------------------------------------------------
def stack_cross_attentions(
    cross_attentions: Sequence[torch.Tensor] | None, *, what: str = "cross_attentions"
) -> torch.Tensor:
    """Stack a per-layer tuple of ``[batch, heads, query, key]`` into ``[B, layers, H, Q, K]``.

    Accepts the ``cross_attentions`` (or ``attentions``) field of a Hugging Face model output
    called with ``output_attentions=True``; raises :class:`CaptureError` when it is missing.
    """
    if cross_attentions is None or len(cross_attentions) == 0:
        raise CaptureError(
            f"model output has no {what}: call the model with output_attentions=True "
            "(a decoder with add_cross_attention=True for cross_attentions) and "
            "attn_implementation='eager' (fused kernels return no weights)"
        )
    if any(a is None for a in cross_attentions):
        raise CaptureError(
            f"some layers returned no {what} (None): load the model with "
            "attn_implementation='eager'"
        )
    shapes = {tuple(a.shape) for a in cross_attentions}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise CaptureError(
            f"{what} must be one [batch, heads, query, key] tensor per layer, got shapes "
            f"{[tuple(a.shape) for a in cross_attentions]}"
        )
    return torch.stack(tuple(cross_attentions), dim=1)  # [B, L, H, Q, K]

"""Seed-to-seed noise floor from replicate groups (skeleton)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

__all__ = ["NoiseFloor", "noise_floor", "parse_groups"]


@dataclass
class NoiseFloor:
    groups: dict[str, list[str]]
    frame: pl.DataFrame

    def summary(self) -> pl.DataFrame:
        raise NotImplementedError


def parse_groups(specs: Sequence[str]) -> dict[str, list[str]]:
    raise NotImplementedError


def noise_floor(tables, groups: Mapping[str, Sequence[str]], *, metrics=None,
                site: str | None = None) -> NoiseFloor:
    raise NotImplementedError

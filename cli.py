"""The ``attncmp`` command line.

Thin by design: every command parses its options, then calls into ``store``, ``extract`` or
``analyze``. Stage packages are imported lazily inside the command bodies so that, e.g.,
``attncmp analyze --help`` never loads torch.
"""

from __future__ import annotations

import click

__all__ = ["main"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("attncmp")
    except Exception:  # pragma: no cover - not installed
        return "0.0.0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="attncmp")
def main() -> None:
    """Compare the attention of model variants: extract once, analyze many times."""


# ---------------------------------------------------------------------------------------------
# store: info / validate / merge
# ---------------------------------------------------------------------------------------------
@main.group()
def store() -> None:
    """Inspect, validate and merge attention stores (HDF5)."""


# === store commands (owner: store) ===
# === end store commands ===


# ---------------------------------------------------------------------------------------------
# extract
# ---------------------------------------------------------------------------------------------
# === extract commands (owner: extract) ===
# === end extract commands ===


# ---------------------------------------------------------------------------------------------
# train / demo (reference model)
# ---------------------------------------------------------------------------------------------
# === reference commands (owner: reference) ===
# === end reference commands ===


# ---------------------------------------------------------------------------------------------
# analyze / plot / compare
# ---------------------------------------------------------------------------------------------
# === analyze commands (owner: analyze) ===
# === end analyze commands ===


if __name__ == "__main__":  # pragma: no cover
    main()

"""The worked example adapter of the README, as the CLI tests name it (its data and checkpoints:
the ``example`` fixture in conftest.py)."""

from pathlib import Path

EXAMPLE_ADAPTER = (
    f"{Path(__file__).resolve().parents[2] / 'examples' / 'original_style_adapter.py'}"
    ":OriginalStyleAdapter"
)

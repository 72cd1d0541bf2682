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
@main.command("extract")
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME=PATH",
    help="A model variant and its checkpoint; repeat for each (>= 2). The first is the baseline.",
)
@click.option(
    "--checkpoint_full",
    "--checkpoint-full",
    "checkpoint_full",
    type=click.Path(exists=True, dir_okay=False),
    help="Original spelling: the full model's checkpoint (variant name 'full').",
)
@click.option(
    "--checkpoint_no_middle",
    "--checkpoint-no-middle",
    "checkpoint_no_middle",
    type=click.Path(exists=True, dir_okay=False),
    help="Original spelling: the ablation's checkpoint (variant name 'no_middle').",
)
@click.option("--baseline", default=None, help="Baseline variant name.  [default: the first]")
@click.option(
    "--adapter",
    default="reference",
    show_default=True,
    help="'reference' (built-in), 'package.module:object' or 'path/to/file.py:object'.",
)
@click.option(
    "--root-dir",
    "--root_dir",
    "root_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="The adapter's data directory.  [default: none; the reference data is embedded]",
)
@click.option("--split", default="test", show_default=True, help="Which split's samples.")
@click.option(
    "--num-samples",
    "--num_samples",
    "num_samples",
    type=click.IntRange(min=1),
    default=None,
    help="Extract a seeded random subset of N samples of the split.  [default: all]",
)
@click.option("--all", "all_samples", is_flag=True, help="Extract every sample of the split.")
@click.option(
    "--batch-size",
    "--batch_size",
    "batch_size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
)
@click.option("--seed", type=int, default=0, show_default=True, help="Selection seed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:k.")
@click.option(
    "--dtype",
    type=click.Choice(["float16", "float32"]),
    default="float16",
    show_default=True,
    help="Stored attention dtype.",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Extract shard I of N into its own file.  [default: torchrun's RANK/WORLD_SIZE, else 0/1]",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Store file.  [default: attention_store.h5]",
)
@click.option(
    "--save-dir",
    "--save_dir",
    "save_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Original spelling: write SAVE_DIR/attention_store.h5 instead of --out.",
)
@click.option(
    "--allow-training-samples",
    is_flag=True,
    help="Allow samples the checkpoints record as training samples (refused by default).",
)
@click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="Allow pickled Python objects in checkpoints (torch.load weights_only=False); recorded.",
)
@click.option(
    "--on-invalid",
    type=click.Choice(["fail", "warn"]),
    default="fail",
    show_default=True,
    help="NaN/negative attention or rows not summing to 1: stop, or record and continue.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def extract_cmd(**kw) -> None:
    """Run >= 2 model variants over the same samples and store their attention (HDF5).

    \b
    attncmp extract --model full=runs/full/best.pt --model no_middle=runs/nomid/best.pt \\
        --adapter reference --split test --out attention_store.h5

    Re-running the same command after a crash continues where the store's commit marker says.
    """
    try:
        from extract.engine import extract_from_cli_args
        from extract.errors import ExtractError
        from store import StoreError
    except ImportError as exc:  # pragma: no cover - torch missing
        raise click.ClickException(
            f'extraction needs torch ({exc}); install it with: pip install "attncmp[extract]"'
        ) from None
    try:
        result = extract_from_cli_args(**kw)
    except (ExtractError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted; committed samples are kept: re-run the same command to continue"
        ) from None
    click.echo(result.summary())


# === end extract commands ===


# ---------------------------------------------------------------------------------------------
# train / demo (reference model)
# ---------------------------------------------------------------------------------------------
# === reference commands (owner: reference) ===
@main.command()
@click.option(
    "--variant",
    type=click.Choice(["full", "no_middle"]),
    required=True,
    help="Model variant: 'full' (middle fusion on) or 'no_middle' (middle fusion off).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Maximum epochs; early stopping on validation MAE usually ends sooner. "
    "[default: 120, or 3 with --quick]",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed.")
@click.option(
    "--split-seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the recorded 80/10/10 train/val/test split.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=True, writable=True),
    default="runs/reference",
    show_default=True,
    help="Checkpoint file, or a directory (then reference_<variant>.pt inside it).",
)
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda:0.")
@click.option("--quick", is_flag=True, help="Smoke-test mode: 3 epochs, a few seconds.")
@click.option("--quiet", is_flag=True, help="No per-epoch progress on stderr.")
def train(variant, epochs, seed, split_seed, out, device, quick, quiet) -> None:
    """Train a reference model variant on the embedded FreeSolv molecules.

    Writes a checkpoint (loadable with torch.load(weights_only=True)) that records the split,
    seeds, tokenizer, config and test metrics; prints the checkpoint path on stdout.
    """
    try:
        from extract.reference.errors import ReferenceModelError
        from extract.reference.train import train_variant
    except ImportError as exc:
        raise click.ClickException(
            f"training needs the extract extra ({exc.name} missing): pip install 'attncmp[extract]'"
        ) from None
    try:
        result = train_variant(
            variant,
            epochs=epochs,
            seed=seed,
            split_seed=split_seed,
            out=out,
            device=device,
            quick=quick,
            quiet=quiet,
        )
    except (ReferenceModelError, ValueError, OSError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    m = result.metrics
    click.echo(
        f"{variant}: test MAE {m['test_mae']:.3f} RMSE {m['test_rmse']:.3f} kcal/mol "
        f"(mean predictor {m['mean_predictor_test_mae']:.3f} / "
        f"{m['mean_predictor_test_rmse']:.3f}), {m['epochs_run']} epochs, "
        f"{m['train_seconds']:.0f}s",
        err=True,
    )
    click.echo(str(result.checkpoint))


# === end reference commands ===


# ---------------------------------------------------------------------------------------------
# analyze / plot / compare
# ---------------------------------------------------------------------------------------------
# === analyze commands (owner: analyze) ===
# === end analyze commands ===


if __name__ == "__main__":  # pragma: no cover
    main()

"""The ``attncmp`` command line.

Thin by design: every command parses its options, then calls into ``store``, ``extract``,
``analyze`` or ``workflows``. Packages are imported lazily inside the command bodies so that, e.g.,
``attncmp analyze --help`` never loads torch.

Errors: an :class:`~attncmp.store.errors.AttncmpError` (anything a user can cause) is printed as
one line with exit status 1, as are click's own usage errors (status 2). Any other exception is a
bug: its traceback is shown, followed by one line asking for a report.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import traceback

import click

__all__ = ["main"]

_BUG_LINE = (
    "attncmp: internal error ({what}); this is a bug in attncmp, not a problem with your input. "
    "Please report it with the traceback above."
)


# choice lists are literals (importing the packages' vocabularies would make `--help` slow);
# tests/cli/test_choices.py keeps each equal to the package's
_REPORT_LANGS = click.Choice(["en", "zh"])  # analyze.i18n.LANGS

_INTERRUPTED = "interrupted; committed samples are kept: re-run the same command to continue"


class _Cli(click.Group):
    """The command group: maps :class:`AttncmpError` to one line, shows bugs as bugs."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            from attncmp.store.errors import AttncmpError, one_line

            if isinstance(exc, AttncmpError):
                raise click.ClickException(one_line(exc)) from None
            traceback.print_exc(file=sys.stderr)
            click.echo(_BUG_LINE.format(what=one_line(exc, limit=120, with_type=True)), err=True)
            ctx.exit(70)  # EX_SOFTWARE: internal software error


@contextlib.contextmanager
def _extract_extra(what: str):
    """Imports inside need the extraction extra: a missing torch/tokenizers is one line."""
    try:
        yield
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("torch", "tokenizers"):
            raise
        raise click.ClickException(
            f"{what} needs the extraction extra ({exc.name} is missing): "
            'pip install "attncmp[extract]"'
        ) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="attncmp", prog_name="attncmp")
def main() -> None:
    """Compare the attention of model variants: extract once, analyze many times."""


def _dual_option(flag: str, **kw):
    """A click option spelled both ways, ``flag`` first: ``--root_dir`` (the original script's
    spelling) and ``--root-dir``; the value goes to ``root_dir``. Shared by ``extract`` and
    ``compare`` so the two spellings cannot drift apart."""
    name = flag[2:]
    other = name.replace("_", "-") if "_" in name else name.replace("-", "_")
    return click.option(flag, f"--{other}", name.replace("-", "_"), **kw)


# The extraction options that `extract` and `compare` share, each declared once (its type,
# default, metavar; `dual`: both spellings, see _dual_option). Each command words the help for
# itself and spells the flag the way it shows it first; see _extraction_option.
_CHECKPOINT = click.Path(exists=True, dir_okay=False)
_EXTRACTION_OPTIONS: dict[str, dict] = {
    "model": {"dest": "models", "multiple": True, "metavar": "NAME=PATH"},
    "checkpoint_full": {"dual": True, "type": _CHECKPOINT, "default": None},
    "checkpoint_no_middle": {"dual": True, "type": _CHECKPOINT, "default": None},
    "adapter": {"default": "reference", "show_default": True},
    "root_dir": {"dual": True, "type": click.Path(exists=True, file_okay=False), "default": None},
    "adapter_opt": {"dest": "adapter_options", "multiple": True, "metavar": "KEY=VALUE"},
    "split": {"default": "test", "show_default": True},
    "num_samples": {"dual": True, "type": click.IntRange(min=1), "default": None},
    "batch_size": {
        "dual": True,
        "type": click.IntRange(min=1),
        "default": 32,
        "show_default": True,
    },
    "device": {"default": "auto", "show_default": True},
    "allow_training_samples": {"is_flag": True},
    "trust_checkpoint": {"is_flag": True},
}


def _extraction_option(flag: str, help: str | None = None, **override):
    """One of :data:`_EXTRACTION_OPTIONS` as a click option: ``flag`` spelled as the command
    shows it first, ``help`` in the command's words, ``override`` its own keywords (e.g. another
    default); the value goes to the matching :class:`ExtractConfig` field."""
    spec = {**_EXTRACTION_OPTIONS[flag[2:].replace("-", "_")], **override}
    dest = spec.pop("dest", None)
    if spec.pop("dual", False):
        return _dual_option(flag, help=help, **spec)
    return click.option(flag, *([dest] if dest else []), help=help, **spec)


# ---------------------------------------------------------------------------------------------
# store: info / validate / merge
# ---------------------------------------------------------------------------------------------
@main.group()
def store() -> None:
    """Inspect, validate and merge attention stores (HDF5)."""


# === store commands (owner: store) ===
_STORE_PATHS = click.Path(exists=True, dir_okay=False, readable=True)


@store.command("info")
@click.argument("paths", nargs=-1, required=True, type=_STORE_PATHS)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (default: text).")
def store_info_cmd(paths: tuple[str, ...], as_json: bool) -> None:
    """Summarise a store (or the shard files of one run): models, sites, samples, sizes on disk
    and the compression ratio vs a dense padded float32 layout."""
    from attncmp.store.info import store_info

    info = store_info(list(paths))
    if as_json:
        import json

        click.echo(json.dumps(info.to_dict(), indent=2, default=str))
    else:
        click.echo(info.render())


@store.command("validate")
@click.argument("paths", nargs=-1, required=True, type=_STORE_PATHS)
@click.option(
    "--max-problems",
    default=50,
    show_default=True,
    help="Problems listed in full (the rest are counted).",
)
def store_validate_cmd(paths: tuple[str, ...], max_problems: int) -> None:
    """Check a store (or the shard files of one run) against store_schema.md: structure, offsets,
    counts, ids, dtypes, checksums of every chunk and attention sanity. Exit code 0 only when
    valid, 1 otherwise."""
    from attncmp.store.validate import validate_store

    report = validate_store(list(paths))
    click.echo(report.summary(max_problems=max_problems))
    if not report.ok:
        n = len(report.problems)
        click.echo(f"error: {n} problem(s) found; the store is invalid", err=True)
        raise SystemExit(1)


@store.command("merge")
@click.argument("out", type=click.Path(dir_okay=False, writable=True))
@click.argument("shards", nargs=-1, required=True, type=_STORE_PATHS)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (default: refuse).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar (default: show one).")
def store_merge_cmd(out: str, shards: tuple[str, ...], overwrite: bool, quiet: bool) -> None:
    """Join the shard files of one extraction run into the single store OUT, in the run's recorded
    sample order. Refuses overlapping or incompatible shards."""
    import contextlib
    import sys
    from pathlib import Path

    from attncmp.store.merge import merge_stores

    Path(out).parent.mkdir(parents=True, exist_ok=True)  # before any work (issue 11)
    with contextlib.ExitStack() as stack:
        bars: list = []

        def progress(done: int, total: int) -> None:
            if not bars:
                bar = click.progressbar(length=total, label="merging", file=sys.stderr)
                bars.append(stack.enter_context(bar))
            bars[0].update(done - bars[0].pos)

        result = merge_stores(
            out, list(shards), overwrite=overwrite, progress=None if quiet else progress
        )
    click.echo(
        f"merged {len(result.shards)} shard(s): {result.n_samples} samples -> {result.out} "
        f"({result.seconds:.1f} s)"
    )
    if result.partial:
        click.echo(
            f"warning: the shards hold {result.n_samples} of the run's {result.n_planned} "
            "planned samples; the merged store is partial (a shard is missing or unfinished)",
            err=True,
        )


# === end store commands ===


# ---------------------------------------------------------------------------------------------
# extract
# ---------------------------------------------------------------------------------------------
# === extract commands (owner: extract) ===
@main.command("extract")
@_extraction_option(
    "--model",
    "A model variant and its checkpoint; repeat for each (>= 2). The first is the baseline.",
)
@_extraction_option(
    "--checkpoint_full", "Original spelling: the full model's checkpoint (variant name 'full')."
)
@_extraction_option(
    "--checkpoint_no_middle",
    "Original spelling: the ablation's checkpoint (variant name 'no_middle').",
)
@click.option("--baseline", default=None, help="Baseline variant name.  [default: the first]")
@_extraction_option(
    "--adapter", "'reference' (built-in), 'package.module:object' or 'path/to/file.py:object'."
)
@_extraction_option(
    "--root-dir",
    "The adapter's data directory.  [default: none; the reference data is embedded]",
)
@_extraction_option(
    "--adapter-opt",
    "A setting handed to the adapter's constructor (e.g. cutoff=5.0); repeatable; recorded "
    "in the store.",
)
@_extraction_option(
    "--split",
    "Which split's samples; several pool into one store (valid,test), each sample keeping "
    "its split.",
)
@_extraction_option(
    "--num-samples", "Extract a seeded random subset of N samples of the split.  [default: all]"
)
@click.option("--all", "all_samples", is_flag=True, help="Extract every sample of the split.")
@_extraction_option("--batch-size")
@click.option("--seed", type=int, default=0, show_default=True, help="Selection seed.")
@_extraction_option("--device", "auto, cpu, cuda or cuda:k.")
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
@_dual_option(
    "--save-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Original spelling: write SAVE_DIR/attention_store.h5 instead of --out.",
)
@_extraction_option(
    "--allow-training-samples",
    "Allow samples the checkpoints record as training samples (refused by default).",
)
@_extraction_option(
    "--trust-checkpoint",
    "Allow pickled Python objects in checkpoints (torch.load weights_only=False); recorded.",
)
@click.option(
    "--on-invalid",
    type=click.Choice(["fail", "warn"]),
    default="fail",
    show_default=True,
    help="NaN/negative attention or rows not summing to 1: stop, or record and continue.",
)
@click.option(
    "--commit-every",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Commit computed batches to the store at least this often (0: after every batch).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing store file.  [default: continue it if made with the same settings]",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def extract_cmd(**kw) -> None:
    """Run >= 2 model variants over the same samples and store their attention (HDF5).

    \b
    attncmp extract --model full=runs/full/best.pt --model no_middle=runs/nomid/best.pt \\
        --adapter reference --split test --out attention_store.h5

    Re-running the same command after a crash continues where the store's commit marker says.
    """
    from attncmp.extract.config import ExtractConfig

    config = ExtractConfig.from_cli_args(**kw)
    with _extract_extra("extraction"):
        from attncmp.extract.engine import run_extraction
    try:
        result = run_extraction(config)
    except OSError as exc:  # an unusable --out path (name too long, read-only, no permission)
        if exc.errno not in (errno.ENAMETOOLONG, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        name = str(exc.filename or config.out)
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise click.ClickException(
            f"{shown}: {exc.strerror}; choose another --out / --save-dir"
        ) from None
    except KeyboardInterrupt:
        raise click.ClickException(_INTERRUPTED) from None
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
    with _extract_extra("training"):
        from attncmp.extract.reference.train import train_variant
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


@main.command()
@click.option(
    "--save-dir",
    default="./attention_comparison",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for checkpoints, the store and every analysis output.",
)
@click.option(
    "--device", default="cpu", show_default=True, help="Torch device (cpu, cuda, cuda:k)."
)
@click.option(
    "--quick", is_flag=True, help="Smoke test: a few epochs and few samples (what CI runs)."
)
@click.option(
    "--epochs", type=int, default=None, help="Maximum training epochs (default: the trainer's)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Training and selection seed.")
@click.option(
    "--lang",
    type=_REPORT_LANGS,
    default="en",
    show_default=True,
    help="Language of report.md.",
)
@click.option("--quiet", is_flag=True, help="No progress output.")
def demo(
    save_dir: str, device: str, quick: bool, epochs: int | None, seed: int, lang: str, quiet: bool
) -> None:
    """Train two reference models on embedded FreeSolv, extract, analyze (no GPU, no network)."""
    from attncmp.workflows import format_demo, run_demo

    with _extract_extra("the demo"):
        result = run_demo(
            save_dir, device=device, quick=quick, epochs=epochs, seed=seed, quiet=quiet, lang=lang
        )
    click.echo(format_demo(result))


# ---------------------------------------------------------------------------------------------
# analyze / plot / compare
# ---------------------------------------------------------------------------------------------
# === analyze commands (owner: analyze) ===
def _csv_list(values) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out += [x.strip() for x in str(v).split(",") if x.strip()]
    return out


def _parse_groups(specs) -> dict[str, list[str]]:
    from attncmp.analyze.errors import AnalysisInputError
    from attncmp.analyze.noise import parse_groups

    try:
        return parse_groups(list(specs or ()))
    except AnalysisInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--group") from None


def _print_outcome(res) -> None:
    """The verdict and headline numbers on stdout (data); progress went to stderr."""
    s = res.summary
    click.echo(
        f"verdict: {s['verdict']['overall']} ({s['baseline']} vs {', '.join(s['variants'])}, "
        f"n = {s['n_samples']}{', PARTIAL store' if s.get('is_partial') else ''})"
    )
    st = s["statistics"]
    click.echo(
        f"  confirmatory family: {st.get('family_size')} tests ({st['correction']}), site "
        f"{s['selection']['site']}, layer(s) {st.get('hypothesis_layers')}, head-mean"
    )
    for r in s.get("main_results", []):
        click.echo(
            f"  {r['metric']:<17} {r['mean_baseline']:.4g} -> {r['mean_variant']:.4g} "
            f"({r['pct_change']:+.1f}%) p_{s['statistics']['correction']} = {r['p_corrected']:.3g}"
            f"  [{r['variant']}]"
            if r.get("pct_change") is not None and r.get("p_corrected") is not None
            else f"  {r['metric']}: n/a"
        )
    pred = s.get("prediction") or {}
    for m, r in (pred.get("per_model") or {}).items():
        click.echo(f"  MAE {m}: {r['mae']:.4g}")
    click.echo(f"report: {res.save_dir / 'report.md'}")


_analyze_options = [
    click.option("--baseline", default=None, help="Baseline model.  [default: the store's]"),
    click.option(
        "--site",
        default=None,
        help="Headline attention site.  [default: the first nodes -> tokens site]",
    ),
    click.option(
        "--threshold",
        type=float,
        default=0.1,
        show_default=True,
        help="Effective tokens count weights above this.",
    ),
    click.option(
        "--exclude-special/--include-special",
        default=True,
        show_default=True,
        help="Drop [CLS]/[SEP]... and renormalise rows before the metrics.",
    ),
    click.option(
        "--heads",
        type=click.Choice(["each", "mean", "both"]),
        default="both",
        show_default=True,
        help="Per-head metrics, head-mean, or both.",
    ),
    click.option(
        "--examples",
        type=click.IntRange(min=0),
        default=3,
        show_default=True,
        help="Number of heatmap examples (attention_heatmap_example_K.png).",
    ),
    click.option(
        "--example-strategy",
        type=click.Choice(["divergent", "random", "ids"]),
        default="divergent",
        show_default=True,
        help="divergent: largest baseline-vs-variant JSD; random: seeded; ids: --ids.",
    ),
    click.option(
        "--ids",
        "example_ids",
        multiple=True,
        metavar="ID[,ID...]",
        help="Sample ids for the heatmap examples (implies --example-strategy ids).",
    ),
    click.option(
        "--format",
        "formats",
        default="png",
        show_default=True,
        help="Figure formats, comma-separated: png, pdf, svg.",
    ),
    click.option(
        "--correction",
        type=click.Choice(["holm", "bh"]),
        default="holm",
        show_default=True,
        help="Multiple-comparison correction, within each family of tests.",
    ),
    click.option(
        "--hypothesis-layers",
        default="last",
        show_default=True,
        metavar="last|all|I[,J...]",
        help="Layers of the headline site in the confirmatory family (the verdict).",
    ),
    click.option(
        "--head-matching",
        type=click.Choice(["sorted", "crossfit", "index", "hungarian"]),
        default="sorted",
        show_default=True,
        help="Pairing of heads across models for per-head tests (hungarian: exploratory only).",
    ),
    click.option(
        "--ci-method",
        type=click.Choice(["t", "BCa", "percentile"]),
        default="t",
        show_default=True,
        help="Interval of the mean paired difference (t: paired t interval).",
    ),
    click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Seed of bootstrap and random examples.",
    ),
    click.option(
        "--n-boot",
        type=click.IntRange(min=100),
        default=2000,
        show_default=True,
        help="Bootstrap resamples.",
    ),
    click.option(
        "--lang",
        type=_REPORT_LANGS,
        default="en",
        show_default=True,
        help="Report language (figures keep English labels).",
    ),
    click.option(
        "--group",
        "groups",
        multiple=True,
        metavar="NAME=M1,M2",
        help="Replicates of one configuration (other seeds) for the noise floor.",
    ),
    click.option(
        "--strata",
        "strata",
        multiple=True,
        metavar="NAME[,NAME...]",
        help="Stratifiers of the per-stratum comparison: n_nodes, n_tokens, target, "
        "baseline_error, split, a target's name or any per-sample metadata column (numeric: "
        "quantile bins; text: one stratum per value, e.g. a sample type).  [default: n_nodes, "
        "n_tokens, target, baseline_error (+ split when the store pools several)]",
    ),
    click.option(
        "--node-groups/--no-node-groups",
        default=True,
        show_default=True,
        help="Write per_group_metrics.csv (metrics per node label group, e.g. all O atoms).",
    ),
    click.option(
        "--jobs",
        "-j",
        type=click.IntRange(min=0),
        default=None,
        help="Worker processes of the metric engine (0: every available core); the results do "
        "not depend on it.  [default: every available core]",
    ),
    click.option("--quiet", "-q", is_flag=True, help="No progress on stderr."),
]


def _with_analyze_options(fn):
    for opt in reversed(_analyze_options):
        fn = opt(fn)
    return fn


def _options_from(kw: dict):
    """The :class:`AnalysisOptions` of the analyze options in ``kw`` (popped: each option's value
    goes to the field of its name; what is left belongs to the command)."""
    from dataclasses import fields

    from attncmp.analyze.options import AnalysisOptions

    values = {f.name: kw.pop(f.name) for f in fields(AnalysisOptions) if f.name in kw}
    ids = _csv_list(values.pop("example_ids", ()))
    if ids:
        values.update(examples=len(ids), example_strategy="ids")
    values["example_ids"] = ids or None
    values["groups"] = _parse_groups(values.get("groups"))
    values["strata"] = _csv_list(values.get("strata")) or None
    return AnalysisOptions(**values)


@main.command("analyze")
@click.argument("stores", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@_dual_option(
    "--save-dir",
    required=True,
    help="Output directory (created if needed).",
)
@_with_analyze_options
def analyze_cmd(stores, save_dir, **kw) -> None:
    """Analyse an attention store (or its shard files): metrics, tests, figures, report.

    \b
    attncmp analyze attention_store.h5 --save-dir ./attention_comparison
    attncmp analyze shard_*.h5 --save-dir out --format png,pdf --lang zh

    Torch-free. A store still being written is analysed as far as it is committed.
    """
    from attncmp.analyze.outputs import run_analysis

    res = run_analysis(list(stores), save_dir, _options_from(kw))
    _print_outcome(res)


@main.group("plot")
def plot_group() -> None:
    """Re-draw figures from cached tables (no model, no store scan)."""


@plot_group.command("stats")
@click.argument("save_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", default=None, help="Figure formats.  [default: as analysed]")
@click.option(
    "--lang",
    type=_REPORT_LANGS,
    default=None,
    help="Report language.  [default: as analysed]",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Processes drawing figures (1: draw in this process).  [default: the available cores]",
)
@click.option(
    "--force",
    is_flag=True,
    help="Recompute the statistics and draw every figure again, also what could not have "
    "changed (same cache, options, code and library versions).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def plot_stats_cmd(save_dir, fmt, lang, jobs, force, quiet) -> None:
    """Re-render every figure, table and report.md of an analysis from its cache (seconds).

    What could not change is kept: a figure whose file already holds what it would draw (same
    inputs, drawing code and library versions), and the statistics with their tables when the
    cache, options and code are those they were computed with (e.g. after --lang, which changes
    only the report). report.md and summary.json are always written again; --force recomputes
    and redraws everything."""
    import sys

    if force and jobs != 1:
        _start_figure_server()
    from attncmp.analyze.outputs import replot
    from attncmp.analyze.plotstyle import parse_formats

    res = replot(
        save_dir,
        formats=parse_formats(fmt) if fmt else None,
        lang=lang,
        quiet=quiet,
        log=None if quiet else (lambda m: print(m, file=sys.stderr, flush=True)),
        workers=jobs,
        force=force,
    )
    kept = len(res.kept)
    note = f" ({kept} unchanged files kept)" if kept else ""
    click.echo(f"re-rendered {len(res.files) - kept} files in {res.save_dir}{note}")


# the modules the figure workers' forkserver preloads: analyze.render._PRELOAD (pinned equal by
# tests/cli/test_choices.py; named here so that the server starts before attncmp.analyze loads)
FIGURE_PRELOAD = (
    "attncmp.analyze.figures",
    "attncmp.analyze.heatmap",
    "attncmp.analyze.textview",
    "attncmp.analyze.groups",
    "numpy.random",
    "attncmp.analyze.figure_warmup",
)


def _start_figure_server() -> None:
    """Start the figure workers' forkserver now, before ``attncmp.analyze`` is imported (about
    0.4 s here), when every figure is to be drawn (``plot stats --force``): it imports matplotlib
    while this process imports the analysis and computes the statistics. The analysis adopts
    the running server (analyze.render.prestart_workers). Our own entry point is the main module
    here, which does nothing when a worker imports it."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(FIGURE_PRELOAD))
    from multiprocessing import forkserver

    forkserver.ensure_running()


def _sample_options(first: str, second: str):
    """The options that pick one sample's attention (``plot heatmap`` and ``plot text``):
    STORE, --id, --site, --layer, --head, --baseline, --variant."""
    opts = [
        click.argument("store", type=click.Path(exists=True, dir_okay=False)),
        click.option("--id", "sample_id", required=True, help="Sample id."),
        click.option(
            "--site", default=None, help="Attention site.  [default: first nodes -> tokens]"
        ),
        click.option(
            "--layer",
            type=int,
            default=None,
            help="Layer (negative from the end).  [default: last]",
        ),
        click.option("--head", default="mean", show_default=True, help="Head index, or 'mean'."),
        click.option(
            "--baseline", default=None, help=f"{first} model.  [default: the store's baseline]"
        ),
        click.option(
            "--variant", default=None, help=f"{second} model.  [default: the first other model]"
        ),
    ]

    def apply(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return apply


@plot_group.command("heatmap")
@_sample_options("Left", "Right")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Output file (.png, .pdf, .svg).  [default: heatmap_<id>.png]",
)
def plot_heatmap_cmd(store, sample_id, site, layer, head, baseline, variant, out) -> None:
    """Draw one sample's node x token attention: both models, shared scale, difference."""
    from attncmp.analyze.heatmap import heatmap_data, plot_heatmap
    from attncmp.analyze.plotstyle import ensure_parent
    from attncmp.store import open_store

    out = out or f"heatmap_{sample_id}.png"
    ensure_parent(out)  # before any work: a missing directory is created, not an error
    with open_store(store) as st:
        data = heatmap_data(
            st, sample_id, site=site, baseline=baseline, variant=variant, layer=layer, head=head
        )
    paths = plot_heatmap(data, out)
    click.echo(str(paths[0]))


@plot_group.command("text")
@_sample_options("First", "Second")
@click.option(
    "--node",
    "nodes",
    type=click.IntRange(min=0),
    multiple=True,
    metavar="INDEX",
    help="Also show the attention of this node (0-based index); repeatable.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="LABEL",
    help="Also show the mean attention of the nodes with this label (e.g. O); repeatable.",
)
@click.option(
    "--all-groups",
    is_flag=True,
    help="Also show every node group, smallest first, as far as one A4 page allows.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Output file (.png, .pdf, .svg).  [default: text_<id>.png]",
)
def plot_text_cmd(
    store, sample_id, site, layer, head, baseline, variant, nodes, groups, all_groups, out
) -> None:
    """Draw one sample's text as a wrapped paragraph, each token's background its attention
    (both models on one scale, and the difference): mean over nodes, and chosen nodes/groups."""
    from attncmp.analyze.heatmap import heatmap_data
    from attncmp.analyze.plotstyle import ensure_parent
    from attncmp.analyze.textview import plot_text
    from attncmp.store import open_store

    out = out or f"text_{sample_id}.png"
    ensure_parent(out)  # before any work
    with open_store(store) as st:
        data = heatmap_data(
            st, sample_id, site=site, baseline=baseline, variant=variant, layer=layer, head=head
        )
    paths = plot_text(data, out, nodes=nodes, groups=groups, auto_groups=all_groups)
    click.echo(str(paths[0]))


@main.command("view")
@click.argument("source", type=click.Path(exists=True))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="The HTML file.  [default: SOURCE/explorer.html for a save dir, else ./explorer.html]",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The store (repeat for shards), when SOURCE is a save dir whose store has moved.",
)
@click.option(
    "--max-samples",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Embed the attention of at most N samples: the heatmap examples plus a seeded random "
    "selection; every sample stays listed (0: embed all).",
)
@click.option(
    "--max-mb",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Embed at most about this many MiB of attention, the same way (0: no budget; "
    "`attncmp analyze` uses 64).",
)
@click.option(
    "--seed", type=int, default=None, help="Seed of that selection.  [default: the analysis' seed]"
)
@click.option(
    "--site", "sites", multiple=True, help="Embed only this site (repeat).  [default: all]"
)
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def view_cmd(source, out, stores, max_samples, max_mb, seed, sites, quiet) -> None:
    """Write explorer.html: one offline HTML file to browse every sample.

    \b
    attncmp view ./attention_comparison            # an analysis: statistics + report + attention
    attncmp view attention_store.h5 --out x.html   # a store alone: samples and attention
    attncmp view big_run/ --max-samples 300        # cap the embedded attention

    Opens from disk in any current browser; no server, no network.
    """
    import sys
    from pathlib import Path

    from attncmp.analyze.explorer import write_explorer

    src = Path(source)
    is_dir = src.is_dir()
    if seed is None and is_dir and (src / "summary.json").is_file():
        import json

        opts = json.loads((src / "summary.json").read_text()).get("options") or {}
        seed = int(opts.get("seed") or 0)
    res = write_explorer(
        out or (src / "explorer.html" if is_dir else Path("explorer.html")),
        save_dir=src if is_dir else None,
        stores=list(stores) or (None if is_dir else [src]),
        max_samples=max_samples,
        max_mb=max_mb or None,
        seed=seed or 0,
        sites=list(sites) or None,
        log=None if quiet else (lambda m: print(m, file=sys.stderr, flush=True)),
    )
    click.echo(res.describe())


@main.command("compare")
@_extraction_option(
    "--checkpoint_full", "The full model's checkpoint (variant 'full', the baseline)."
)
@_extraction_option("--checkpoint_no_middle", "The ablation's checkpoint (variant 'no_middle').")
@_extraction_option(
    "--model", "More variants (or instead of the two flags); the first is the baseline."
)
@_extraction_option("--root_dir", "The adapter's data directory.")
@_dual_option(
    "--save_dir",
    default="./attention_comparison",
    show_default=True,
    help="Output directory; the store is kept there.",
)
@_extraction_option("--num_samples", "Seeded subset of the split.", default=100, show_default=True)
@_extraction_option("--batch_size")
@_extraction_option("--adapter", "'reference', 'package.module:object' or 'file.py:object'.")
@_extraction_option(
    "--adapter-opt",
    "A setting handed to the adapter's constructor; repeatable; recorded in the store.",
)
@_extraction_option("--split", "Which split's samples (valid,test pools several).")
@_extraction_option("--device", "auto, cpu, cuda, cuda:k.")
@_extraction_option(
    "--allow-training-samples", "Allow samples the checkpoints record as training samples."
)
@_extraction_option(
    "--trust-checkpoint", "Allow pickled objects in checkpoints (weights_only=False); recorded."
)
@_with_analyze_options
def compare_cmd(save_dir, **kw) -> None:
    """Extract then analyse in one go (the original compare_attention_weights.py command).

    \b
    attncmp compare --checkpoint_full A.pt --checkpoint_no_middle B.pt --root_dir DATA \\
        --save_dir ./attention_comparison --num_samples 100 --batch_size 32

    The store is kept as SAVE_DIR/attention_store.h5; a later run with the same checkpoints and
    selection skips extraction, and an interrupted one continues it.
    """
    from attncmp.extract.config import ExtractConfig

    options = _options_from(kw)  # what the analysis options leave are the extraction's
    config = ExtractConfig.from_cli_args(
        save_dir=save_dir, seed=options.seed, quiet=options.quiet, **kw
    )
    if len(config.models) < 2:
        raise click.UsageError(
            "give two checkpoints: --checkpoint_full A.pt --checkpoint_no_middle B.pt "
            "(or --model NAME=PATH twice)"
        )
    from attncmp.workflows import run_compare

    try:
        with _extract_extra("extraction"):
            result = run_compare(config, save_dir, options)
    except KeyboardInterrupt:
        raise click.ClickException(_INTERRUPTED) from None
    _print_outcome(result.analysis)


# === end analyze commands ===


if __name__ == "__main__":  # pragma: no cover
    main()

"""The ``msd-triplet`` command line: thin wrappers over functions a user can import.

Each command parses its options, calls one function of a stage module and
prints what it wrote where. Every error is one ``error: ...`` line on stderr,
never a traceback: an :class:`~msd_triplet.errors.MsdTripletError` or an
``OSError`` (a folder that cannot be created, a full disk) exits with code 1,
a usage error (unknown option, missing argument, bad choice) with code 2 and
Ctrl-C with ``error: interrupted`` and code 130. A bare ``msd-triplet`` shows
the help (code 2, as click does).

TensorFlow's C++ start-up log (oneDNN, cpu_feature_guard, absl) is silenced
when a command starts (``TF_CPP_MIN_LOG_LEVEL=2`` unless the user set a level;
the absl lines that ignore it are filtered from stderr), and so are
libmpg123's complaints about mp3 frames read after a seek; importing this
module changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Optional

import click

from msd_triplet import __version__
from msd_triplet.errors import MsdTripletError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
PROG = "msd-triplet"


# TensorFlow's start-up lines that TF_CPP_MIN_LOG_LEVEL does not reach: since TF 2.18 they are logged
# through absl before absl::InitializeLog() runs, so they go to stderr whatever the level
# (tensorflow/tensorflow#100442); the command's stderr filter drops them.
_TF_START_UP_NOISE = (
    b"All log messages before absl::InitializeLog() is called",
    b"port.cc:",
    b"oneDNN custom operations are on",
    b"cpu_feature_guard",
    b"rebuild TensorFlow with the appropriate compiler flags",
)


def _quiet_tensorflow() -> tuple[bytes, ...]:
    """``TF_CPP_MIN_LOG_LEVEL=2`` unless the user set a level; the start-up lines to filter from stderr
    (none when the user asked for TensorFlow's info log with level 0). Called by the command line only;
    importing ``msd_triplet`` changes nothing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return () if os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("", "0") else _TF_START_UP_NOISE


# What libmpg123 (inside libsndfile) writes straight to stderr when it decodes an mp3 from the middle:
# a frame whose bit reservoir lies before the seek point, or a broken file's resync. The file is read
# anyway, or skipped and listed with its reason in the skip manifest; these lines only alarm.
_DECODER_NOISE = (
    b"libmpg123",
    b"part2_3_length",
    b"big_values too large",
    b"Illegal Audio-MPEG-Header",
    b"Trying to resync",
    b"Hit end of (available) data during resync",
    b"Xing stream size off by more than",
)
# What importing Apache Beam logs when Google Cloud's optional clients are not installed (only needed
# for BigQuery, which no pipeline here uses), and what the DirectRunner's local worker processes log
# about themselves before our log level reaches them.
_BEAM_NOISE = (
    b"apitools not found, and bigquery client libraries",
    b"No semi_persistent_directory found",
    b"Discarding unparseable args: ['--pipeline_type_check', '--direct_runner_use_stacked_bundle']",
    b"Resource module is not available for current platform",
    b"INFO:__main__:Logging handler created.",
)


@contextlib.contextmanager
def _stderr_without(noise: tuple[bytes, ...]):
    """While the block runs, pass on everything written to file descriptor 2 (C code and child processes
    included) except lines holding one of ``noise``; lines are forwarded as they come (``\r`` ends a
    line too, so progress bars keep moving), a partial line after 0.1 s without more output."""
    import re
    import select
    import threading

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    ends = re.compile(rb"(?<=[\r\n])")

    def forward(data: bytes) -> None:
        kept = b"".join(part for part in ends.split(data) if part and not any(n in part for n in noise))
        if kept:
            os.write(saved, kept)

    def pump() -> None:
        pending = b""
        try:
            while True:
                ready, _, _ = select.select([read_end], [], [], 0.1)
                if not ready:
                    if pending:
                        forward(pending)
                        pending = b""
                    continue
                chunk = os.read(read_end, 65_536)
                if not chunk:
                    break
                pending += chunk
                cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
                if cut:
                    forward(pending[:cut])
                    pending = pending[cut:]
            forward(pending)
        except OSError:
            pass

    thread = threading.Thread(target=pump, name="msd-triplet-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # our write end of the pipe closes; the pump drains it and stops
        thread.join(2.0)
        if not thread.is_alive():  # else a child process still holds the pipe: the pump keeps forwarding
            os.close(read_end)
            os.close(saved)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _os_error(exc: OSError) -> str:
    """``<file>: <reason>`` of an OSError (both files of a failed rename or link)."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    files = f"{exc.filename}" + (f" → {exc.filename2}" if exc.filename2 is not None else "")
    return f"{files}: {reason}"


def _help_hint(ctx: Optional[click.Context]) -> str:
    """``msd-triplet fit --help`` for an error in ``fit`` (whatever name the program was started by)."""
    words = ctx.command_path.split()[1:] if ctx is not None else []
    return " ".join([PROG, *words, "--help"])


class _Group(click.Group):
    """A click group that reports every error as one ``error:`` line on stderr and a non-zero exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        noise = _quiet_tensorflow() + _DECODER_NOISE + _BEAM_NOISE  # before any command imports TensorFlow
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            with _stderr_without(noise):
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare `msd-triplet`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(f"error: {_one_line(exc.format_message())} (see {_help_hint(exc.ctx)})", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("error: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        # without standalone mode click returns the code of ctx.exit (--help, --version, our errors), else
        # the command's return value (None)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MsdTripletError as exc:
            click.echo(f"error: {_one_line(str(exc))}", err=True)
            ctx.exit(EXIT_ERROR)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # stdout closed early (| head): click's main exits quietly
                raise
            click.echo(f"error: {_one_line(_os_error(exc))}", err=True)
            ctx.exit(EXIT_ERROR)


def _config_option(help_text: str = "Experiment YAML, e.g. experiments/demo.yaml.", **kwargs):
    """``--config FILE`` (required unless a default is given)."""
    kwargs.setdefault("required", True)
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help=help_text, **kwargs
    )


def _checkpoint_option(help_text: str = "Which checkpoint of the run."):
    return click.option(
        "--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True, help=help_text
    )


def _split_option(help_text: str):
    """``--split`` over the run's tracks, ``all`` for every prepared track."""
    return click.option(
        "--split",
        type=click.Choice(["train", "validation", "test", "all"]),
        default="test",
        show_default=True,
        help=help_text,
    )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="msd-triplet")
def main() -> None:
    """Music representations from a triplet network whose triplets are chosen
    by the LSI relatedness of expert tags (Schindler & Knees 2019)."""


@main.command("make-demo-data")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/demo"),
    show_default=True,
    help="Folder to write the data set into.",
)
@click.option("--tracks", type=int, default=None, help="Number of tagged tracks [default: 2000].")
@click.option("--seed", type=int, default=None, help="Seed of the catalogue and audio [default: 2019].")
@click.option("--workers", type=int, default=None, help="Audio rendering processes [default: CPUs].")
@click.option("--force", is_flag=True, help="Overwrite a finished data set made with other arguments.")
@click.option(
    "--artist-strength",
    type=float,
    default=None,
    help="Scale of each artist's own sound (timbre, register, tempo) [default: 1].",
)
@click.option(
    "--album-strength",
    type=float,
    default=None,
    help="Scale of each album's production sound (EQ, reverb, noise floor) [default: 1].",
)
@click.option(
    "--layer-db", type=float, default=None, help="Level of the theme layers relative to the band, dB [default: -10]."
)
@click.option(
    "--coupling",
    type=float,
    default=None,
    help="How strongly genre and styles steer the mood and theme profiles; 0 = independent [default: 1].",
)
def make_demo_data_cmd(
    out: Path, tracks, seed, workers, force, artist_strength, album_strength, layer_db, coupling
) -> None:
    """Write the synthetic MSD-like data set (tags, metadata, audio) in the real formats."""
    from msd_triplet import synthetic

    kwargs = {k: v for k, v in (("tracks", tracks), ("seed", seed)) if v is not None}
    knobs = {
        k: v
        for k, v in (
            ("artist_strength", artist_strength),
            ("album_strength", album_strength),
            ("layer_db", layer_db),
            ("coupling", coupling),
        )
        if v is not None
    }
    world = synthetic.WorldParams(**knobs)
    bar, progress = _progress_bar("rendering audio", unit="file")
    with bar:
        summary = synthetic.make_demo_data(out, workers=workers, force=force, progress=progress, world=world, **kwargs)
    click.echo(
        f"wrote {summary.n_tracks} tracks ({summary.n_artists} artists, {summary.n_albums} albums, "
        f"{len(summary.broken)} broken on purpose; {summary.written} audio files new) "
        f"in {summary.seconds:.1f} s to {out}"
    )


def _progress_bar(desc: str, unit: str = "clip"):
    """A tqdm bar and a ``progress(done, total)`` callback that drives it."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit=unit, desc=desc, disable=None, smoothing=0.1)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return bar, progress


def _shard_option(_ctx, _param, value):
    if value is None:
        return None
    from msd_triplet.features import parse_shard

    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_BEAM_COMMAND = {"ignore_unknown_options": True, "allow_extra_args": True}


def _runner_options(what: str):
    """``--runner``, ``--workers``, ``--staging`` (shared by prepare and embed); unknown ``--name=value`` go to Beam."""
    from msd_triplet.pipelines import RUNNERS

    def decorate(command):
        for option in reversed(
            [
                click.option(
                    "--runner",
                    type=click.Choice(RUNNERS),
                    default=None,
                    help=f"{what} on Apache Beam with this runner (needs the [beam] extra). Further "
                    "--name=value options are Beam pipeline options, e.g. --project=… --region=… "
                    "--temp_location=gs://… for Dataflow.",
                ),
                click.option(
                    "--workers",
                    type=click.IntRange(min=1),
                    default=None,
                    help="Decoding threads; with --runner DirectRunner, worker processes [default: usable CPUs].",
                ),
                click.option(
                    "--staging",
                    default=None,
                    metavar="DIR_OR_URL",
                    help="With --runner: where workers write finished pieces (e.g. gs://bucket/tmp/x) "
                    "[default: beside the output].",
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


def _beam_run(ctx: click.Context, runner, staging, workers, extra: list, **settings):
    """A :class:`~msd_triplet.pipelines.BeamRun` from the options, or None; usage errors for stray options."""
    if runner is None:
        if extra:
            raise click.UsageError(f"no such option: {extra[0]} (Beam pipeline options need --runner)", ctx=ctx)
        given = [f"--{k.replace('_', '-')}" for k, v in {"staging": staging, **settings}.items() if v is not None]
        if given:
            raise click.UsageError(f"{' and '.join(given)} need(s) --runner", ctx=ctx)
        return None
    import logging

    from msd_triplet.pipelines import BeamRun, require_beam

    require_beam()
    # Beam's launcher and local workers log their internals at WARNING (flags Beam itself does not
    # parse, a missing semi-persistent directory); failures still arrive as exceptions
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    bad = [a for a in extra if not a.startswith("--")]
    if bad:
        raise click.UsageError(f"unexpected argument {bad[0]!r}; write Beam pipeline options as --name=value", ctx=ctx)
    run = BeamRun(runner, tuple(extra), workers, staging, **{k: v for k, v in settings.items() if v is not None})
    run.options()  # unknown pipeline options fail here, before any work
    return run


@main.command("prepare", context_settings=_BEAM_COMMAND)
@_config_option()
@click.option("--resplit", is_flag=True, help="Recompute the train/validation/test splits.")
@click.option(
    "--shard",
    callback=_shard_option,
    metavar="I/N",
    help="Only extract features of shard I of N (0-based), for many machines sharing one cache; "
    "then run prepare once without --shard.",
)
@click.option("--no-features", is_flag=True, help="Skip feature extraction (only check that audio files exist).")
@_runner_options("Extract the features")
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="With --runner: feature-cache rows per work item [default: 500].",
)
@click.option(
    "--audio-root",
    default=None,
    metavar="DIR_OR_URL",
    help="With --runner: where the workers find data.root's audio (e.g. gs://bucket/msd) [default: data.root].",
)
@click.pass_context
def prepare_cmd(
    ctx: click.Context,
    config_path: Path,
    resplit: bool,
    shard,
    workers,
    no_features: bool,
    runner,
    staging,
    chunk_size,
    audio_root,
) -> None:
    """Read tag sets and metadata, filter, extract log-mel features, split; print Table I."""
    from msd_triplet import prepare
    from msd_triplet.config import load_config

    beam = _beam_run(ctx, runner, staging, workers, ctx.args, chunk_size=chunk_size, audio_root=audio_root)
    if beam is not None and (shard is not None or no_features):
        raise click.UsageError("--runner extracts every shard: leave out --shard and --no-features", ctx=ctx)
    config = load_config(config_path)
    # a Beam pipeline reports no per-clip progress to the launcher (its runner's UI shows it)
    bar, progress = _progress_bar("extracting features") if beam is None else (contextlib.nullcontext(), None)
    with bar:
        if shard is not None:
            report = prepare.extract_shard(
                config, shard, workers=workers, progress=click.echo, extraction_progress=progress
            )
        else:
            prepared = prepare.prepare_dataset(
                config,
                resplit=resplit,
                extract=not no_features,
                workers=None if beam else workers,
                progress=click.echo,
                extraction_progress=progress,
                beam=beam,
            )
    if shard is not None:
        click.echo(
            f"shard {shard[0]}/{shard[1]}: {report.extracted:,} extracted, {report.skipped_now:,} skipped "
            f"in {report.seconds:.1f} s; whole cache: {report.ok:,} done, {report.skipped:,} skipped, "
            f"{report.todo:,} to do. When every shard is done, run prepare without --shard."
        )
        click.echo(f"wrote {report.directory}")
        return
    skipped = prepared.stats.get("skipped", {})
    if skipped:
        click.echo("skipped: " + ", ".join(f"{reason} {n}" for reason, n in skipped.items()))


@main.command("topics")
@_config_option()
@click.option(
    "--combination",
    default=None,
    metavar="SETS",
    help="Tag sets joined by '-', e.g. genres-moods [default: lsi.tag_sets of the config].",
)
@click.option("--k", "k", type=click.IntRange(min=1), default=None, help="Topics [default: lsi.k].")
@click.option("--topics", "topic_list", default=None, metavar="I,J,…", help="Topics to print [default: 0-4].")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Tags per sign and topic.")
@click.option(
    "--sample",
    type=click.IntRange(min=2),
    default=2_000,
    show_default=True,
    help="Training tracks whose pairwise similarities make the histogram.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG of the similarity histogram [default: <prepared>/lsi/<sets>-<weighting>-k<k>-similarity.png, "
    "beside the LSI model <sets>-<weighting>-k<k>.npz].",
)
def topics_cmd(config_path: Path, combination, k, topic_list, top, sample, out) -> None:
    """Fit the LSI on the training split; print topics' strongest tags; plot pairwise similarities."""
    import dataclasses

    from msd_triplet import lsi, topics
    from msd_triplet.config import load_config
    from msd_triplet.prepare import load_prepared

    config = load_config(config_path)
    lsi_config = config.lsi
    if combination:
        lsi_config = dataclasses.replace(lsi_config, tag_sets=lsi.parse_combination(combination))
    prepared = load_prepared(config)
    model, vectors = lsi.fit_prepared(prepared, lsi_config, config.seed, k)
    try:
        chosen = topics.parse_topics(topic_list, model.k)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--topics") from None
    click.echo(topics.format_topics(model, chosen, top, colour=sys.stdout.isatty()))
    folder = config.data.prepared_dir / "lsi"
    stem = f"{model.name}-{model.weighting}-k{model.k}"
    model_path = model.save(folder / f"{stem}.npz")
    from msd_triplet.splits import split_positions

    train = split_positions(prepared.tracks, "train")
    loss = config.loss
    stats = topics.similarity_histogram(
        vectors[train],
        out or folder / f"{stem}-similarity.png",
        positive=loss.positive_threshold,
        negative=loss.negative_threshold,
        sample=sample,
        seed=config.seed,
        title=f"{model.name}, k = {model.k}",
        albums=prepared.tracks["album_id"].to_numpy()[train],
    )
    click.echo(
        f"{stats.pairs:,} pairs of training tracks: {stats.share_positive:.1%} ≥ {stats.positive_threshold:g} "
        f"(positives), {stats.share_negative:.1%} < {stats.negative_threshold:g} (negatives); "
        f"pairs from different albums only: {stats.share_positive_other_album:.1%} / "
        f"{stats.share_negative_other_album:.1%}; {stats.zero_vectors} zero vectors"
    )
    click.echo(f"wrote {model_path} and {out or folder / f'{stem}-similarity.png'}")


@main.command("fit")
@_config_option()
@click.option("--resume", is_flag=True, help="Continue the run after its last finished epoch.")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder [default: <training.runs>/<name>].",
)
@click.option("--dry-run", is_flag=True, help="Build the model and loss, time one step on a random batch; no data.")
def fit_cmd(config_path: Path, resume: bool, run_dir: Optional[Path], dry_run: bool) -> None:
    """Train the DPNN with the LSI triplet loss on the prepared data and cached features."""
    from msd_triplet import training
    from msd_triplet.config import load_config

    config = load_config(config_path)
    if dry_run:
        report = training.dry_run(config)
        click.echo(
            f"DPNN {report.input_shape} → {report.embedding_dim}: {report.parameters:,} parameters "
            f"({report.trainable_parameters:,} trainable)"
        )
        click.echo(
            f"batch {report.batch_size}: first step {report.compile_seconds:.1f} s (tracing"
            f"{' + XLA' if report.jit_compile else ''}, {report.precision}), "
            f"next step {report.step_seconds:.2f} s "
            f"({report.batch_size / report.step_seconds:.0f} samples/s); loss {report.loss:.4f}"
        )
        click.echo("statistics: " + ", ".join(f"{k} {v:.3f}" for k, v in report.statistics.items()))
        return
    result = training.fit(config, resume=resume, run_dir=run_dir, say=click.echo)
    best = (
        f"; best validation P@k (mean of tag facets) {result.best_value:.4f} at epoch {result.best_epoch}"
        if result.best_epoch
        else ""
    )
    click.echo(f"{result.epochs} epochs{' (stopped early)' if result.stopped_early else ''}{best}")
    click.echo(f"wrote {result.run_dir}")


@main.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test"]),
    default=None,
    help="Split to embed and search [default: evaluation.split of the run's config].",
)
@_checkpoint_option()
@click.option(
    "--match",
    type=click.Choice(["identical", "overlap"]),
    default=None,
    help="Tag-facet relevance [default: evaluation.facet_match of the run's config].",
)
@click.option("--no-untrained", is_flag=True, help="Skip the untrained-model baseline and the difference column.")
def evaluate_cmd(run_dir: Path, split, checkpoint, match, no_untrained: bool) -> None:
    """Precision@k per facet (genre, style, mood, theme, artist, album) of a run with bootstrap intervals,
    beside an untrained model (and the paired interval of the difference) and chance."""
    from msd_triplet import runs

    report = runs.evaluate_run(
        run_dir, split=split, checkpoint=checkpoint, match=match, untrained=not no_untrained, say=click.echo
    )
    click.echo(
        f"P@{report.k} on the {report.split} split ({report.tracks:,} tracks, {report.match} tag sets, "
        f"{report.checkpoint}); {report.bootstrap.describe()}"
    )
    click.echo(report.table)
    metrics, table, per_query = report.paths
    click.echo(f"wrote {metrics}, {table} and {per_query}")


@main.command("demo")
@_config_option("The demo experiment.", required=False, default=Path("experiments/demo.yaml"), show_default=True)
@click.option(
    "--tracks", type=click.IntRange(min=60), default=None, help="Tracks of a newly written data set [default: 2000]."
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes/threads for audio work.")
def demo_cmd(config_path: Path, tracks, workers) -> None:
    """The whole pipeline on the synthetic data set: make data, prepare, fit, evaluate; one table."""
    from msd_triplet.config import load_config
    from msd_triplet.demo import run_demo

    config = load_config(config_path)
    audio_bar, audio_progress = _progress_bar("rendering audio", unit="file")
    feature_bar, feature_progress = _progress_bar("extracting features")
    with audio_bar, feature_bar:
        report = run_demo(
            config,
            tracks=tracks,
            workers=workers,
            say=click.echo,
            audio_progress=audio_progress,
            extraction_progress=feature_progress,
            verbose=2,
        )
    evaluation = report.evaluation
    click.echo(
        f"\nP@{evaluation.k} on the {evaluation.split} split ({evaluation.tracks} tracks): trained, untrained, "
        f"their difference, chance; {evaluation.bootstrap.describe()}"
    )
    click.echo(evaluation.table)
    click.echo(
        "time: "
        + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in report.seconds.items())
        + f"; total {sum(report.seconds.values()):.0f} s"
    )
    click.echo(f"wrote {report.run_dir} (SavedModel in {report.export_dir})")
    click.echo(f"listen to the neighbours and see the map: msd-triplet serve {report.run_dir}")


@main.command("export-savedmodel")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to create.")
@_checkpoint_option()
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in --out.")
def export_savedmodel_cmd(run_dir: Path, out: Path, checkpoint: str, overwrite: bool) -> None:
    """Export a run's model as a TensorFlow SavedModel (log-mel and raw-waveform signatures)."""
    from msd_triplet.export import export_savedmodel

    path = export_savedmodel(run_dir, out, checkpoint=checkpoint, overwrite=overwrite)
    click.echo(
        f"wrote SavedModel (signatures serving_default = log_mel, waveform) to {path}; see {path / 'README.txt'}"
    )


@main.command("probe")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--facet", type=click.Choice(["genre", "style", "mood", "theme"]), default="genre", show_default=True)
@_checkpoint_option()
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Most epochs of the head (early stopping on the validation split).",
)
@click.option("--seed", type=int, default=None, help="Seed of the head [default: the run's seed].")
@click.option("--no-untrained", is_flag=True, help="Skip the untrained-model baseline.")
def probe_cmd(run_dir: Path, facet: str, checkpoint: str, epochs: int, seed, no_untrained: bool) -> None:
    """Linear probe: a Dense head on the run's frozen embeddings, trained on train, scored on test."""
    from msd_triplet.probe import probe_run
    from msd_triplet.runfolder import RunFolder

    report = probe_run(
        run_dir, facet, checkpoint=checkpoint, epochs=epochs, seed=seed, untrained=not no_untrained, say=click.echo
    )
    click.echo(report.table)
    click.echo(f"wrote {RunFolder(run_dir).probe(facet)}")


@main.command("embed", context_settings=_BEAM_COMMAND)
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))  # str: a Path would turn gs:// into gs:/
@click.option(
    "--files-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A text file listing audio files or folders, one per line (added to PATHS).",
)
@click.option(
    "--model",
    "source",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A run folder, an exported SavedModel folder or a .keras file (--runner: a SavedModel).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="embeddings.npy (+ .tracks.csv beside it) or embeddings.csv.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_checkpoint_option("Which checkpoint of a run folder.")
@click.option(
    "--projector",
    "projector_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write TensorBoard Embedding Projector files here (needs --out X.npy).",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=None,
    help="Files per shard; finished shards survive a crash and are not redone [default: 1000].",
)
@click.option("--keep-shards", is_flag=True, help="Keep the shard files (<out>.shards/) after joining them.")
@_runner_options("Embed")
@click.pass_context
def embed_cmd(
    ctx: click.Context,
    paths,
    files_from,
    source: Path,
    out: Path,
    batch_size: int,
    workers,
    checkpoint: str,
    projector_dir,
    shard_size,
    keep_shards: bool,
    runner,
    staging,
) -> None:
    """Embed audio files, folders and glob patterns (mp3, wav, flac, ogg, aiff) with a trained model.

    With --runner, PATHS may also be URLs the workers can read (gs://bucket/audio/*.mp3)."""
    from msd_triplet.embed import DEFAULT_SHARD_SIZE, embed_files, read_file_list

    if projector_dir is not None and out.suffix != ".npy":
        raise click.BadParameter(f"{out}: --projector needs the .npy output (--out X.npy)", param_hint="--projector")
    # unknown options land among the paths (nargs=-1): with --runner they are Beam's
    extra = [str(p) for p in paths if str(p).startswith("--")]
    paths = [p for p in paths if not str(p).startswith("--")]
    beam = _beam_run(ctx, runner, staging, workers, extra)
    if files_from is not None:
        paths += read_file_list(files_from)
    if not paths:
        raise click.UsageError("missing argument PATHS: give audio files, folders or --files-from", ctx=ctx)
    if beam is not None:
        from msd_triplet.pipelines import embed_files_beam

        report = embed_files_beam(
            paths,
            source,
            out,
            beam,
            batch_size=batch_size,
            shard_size=shard_size,
            keep_shards=keep_shards,
            say=click.echo,
        )
    else:
        bar, progress = _progress_bar("embedding", unit="file")
        with bar:
            report = embed_files(
                paths,
                source,
                out,
                batch_size=batch_size,
                workers=workers,
                checkpoint=checkpoint,
                shard_size=shard_size or DEFAULT_SHARD_SIZE,
                keep_shards=keep_shards,
                progress=progress,
            )
    click.echo(
        f"embedded {report.embedded:,} files, skipped {report.skipped:,} (reasons in "
        f"{report.skipped_manifest}) in {report.seconds:.1f} s"
        + (f"; {report.shards_resumed} of {report.shards} shards from an earlier run" if report.shards_resumed else "")
    )
    click.echo(f"wrote {report.out}" + (f" and {report.tracks}" if report.tracks != report.out else ""))
    if projector_dir is not None and report.embedded:
        from msd_triplet.projector import write_files_projector

        folder = write_files_projector(report.out, projector_dir)
        click.echo(f"wrote projector files to {folder}; view them with `tensorboard --logdir {folder}`")


@main.command("projector")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write.")
@_split_option("Tracks to write.")
@_checkpoint_option()
def projector_cmd(run_dir: Path, out: Path, split: str, checkpoint: str) -> None:
    """TensorBoard Embedding Projector files of a run's split: vectors, names and tags of every facet."""
    from msd_triplet.projector import write_run_projector

    folder = write_run_projector(run_dir, out, split=split, checkpoint=checkpoint)
    click.echo(f"wrote projector files to {folder}; view them with `tensorboard --logdir {folder}`")


@main.command("similar")
@click.argument("query")
@click.option(
    "--index",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A run folder: its model embeds the query and the tracks searched.",
)
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="Tracks to list.")
@_split_option("Tracks to search among.")
@_checkpoint_option()
def similar_cmd(query: str, run_dir: Path, n: int, split: str, checkpoint: str) -> None:
    """The tracks most similar to QUERY (a track id of the prepared data, or an audio file)."""
    from msd_triplet.embed import similar

    table = similar(query, run_dir, n=n, split=split, checkpoint=checkpoint)
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}", max_colwidth=40))


@main.command("serve")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on; anything but loopback exposes the run's audio to the network.",
)
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=8765,
    show_default=True,
    help="TCP port (0: any free port).",
)
@_split_option("Tracks to search, play and map.")
@_checkpoint_option()
@click.option(
    "-n", "n", type=click.IntRange(min=1, max=100), default=10, show_default=True, help="Neighbours per query."
)
@click.option(
    "--max-upload-mb",
    type=click.IntRange(min=1, max=2048),
    default=50,
    show_default=True,
    help="Largest audio upload accepted.",
)
def serve_cmd(run_dir: Path, host: str, port: int, split: str, checkpoint: str, n: int, max_upload_mb: int) -> None:
    """Listen to a run's neighbours in a browser: track search, uploads, a map of the split, the metrics."""
    from msd_triplet.browse import RunBrowser
    from msd_triplet.webapp import serve

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}: anyone who can reach it can play the run's audio", err=True)
    browser = RunBrowser(run_dir, split=split, checkpoint=checkpoint, say=click.echo)
    browser.warm_up()
    serve(browser, host=host, port=port, say=click.echo, neighbours=n, max_upload_bytes=max_upload_mb * 2**20)


@main.command("grid")
@_config_option("Experiment YAML with a grid section, e.g. experiments/demo-grid.yaml.")
@click.option(
    "--only", default=None, metavar="COMBINATION:K", help="Run one cell (for every seed), e.g. genres-moods:160."
)
@click.option(
    "--compare",
    "paper_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The paper's numbers (experiments/paper_table2.csv): write compare.md beside the results.",
)
def grid_cmd(config_path: Path, only, paper_path) -> None:
    """Train and evaluate every tag-set combination × LSI size × seed of the grid (paper Table II), with
    intervals; test the paper's claims; resumable."""
    from msd_triplet import grid, gridreport
    from msd_triplet.config import load_config

    config = load_config(config_path)
    paper = gridreport.read_paper(paper_path) if paper_path is not None else None
    report = grid.run_grid(config, only=grid.parse_only(only) if only else None, paper=paper, say=click.echo)
    for name in ("compare.md", "table2.md", "claims.md"):
        path = report.folder / name
        if path in report.written:
            click.echo(path.read_text(encoding="utf-8"))
    click.echo(f"{report.trained_now} cells trained now, {report.skipped} were done; wrote {report.folder}")


@main.command("ablate")
@_config_option("Experiment YAML with an ablation section, e.g. experiments/demo-ablation.yaml.")
@click.option(
    "--only", default=None, metavar="SOURCE:MINING", help="Run one cell (for every seed), e.g. jaccard:batch_all."
)
def ablate_cmd(config_path: Path, only) -> None:
    """Compare triplet-selection rules: relatedness source (LSI, Jaccard, main genre, artist) × mining,
    on identical data, model, budget and seeds, with intervals; resumable."""
    from msd_triplet import ablation
    from msd_triplet.config import load_config

    config = load_config(config_path)
    report = ablation.run_ablation(config, only=ablation.parse_only(only, config) if only else None, say=click.echo)
    path = report.folder / "ablation.md"
    if path in report.written:
        click.echo(path.read_text(encoding="utf-8"))
    click.echo(f"{report.trained_now} cells trained now, {report.skipped} were done; wrote {report.folder}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Experiment configuration: frozen dataclasses, loaded from and saved to YAML.

Every default of the package lives here, once. A YAML file under
``experiments/`` overrides any subset of the fields; unknown keys, wrong types
and out-of-range values are :class:`~msd_triplet.errors.ConfigError` s that
name the key and the file. The resolved ("operative") configuration is saved
beside every output so that any result can be traced back to what made it.

Example
-------
>>> from msd_triplet.config import load_config
>>> cfg = load_config("experiments/demo.yaml")      # doctest: +SKIP
>>> cfg.loss.positive_threshold                     # doctest: +SKIP
0.8
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from msd_triplet.errors import ConfigError
from msd_triplet.tagnames import TAG_SETS, parse_combination  # TAG_SETS re-exported: config.TAG_SETS

# The paper's artist-stratified split sizes (section VI): train / validation / test.
PAPER_SPLIT_SIZES: tuple[int, int, int] = (122_766, 6_461, 14_358)
PAPER_SPLIT_PROPORTIONS: tuple[float, float, float] = tuple(n / sum(PAPER_SPLIT_SIZES) for n in PAPER_SPLIT_SIZES)


@dataclass(frozen=True)
class DataConfig:
    """Where the tag sets, metadata and audio are, and how tracks are split.

    Relative paths in ``tags``, ``metadata``, ``albums``, ``audio`` and
    ``prepared`` are relative to ``root``; ``root`` is relative to the
    working directory.
    """

    root: str = "data/demo"
    # Tag-set files. Each entry is a path, or ``SET=path`` for a file that holds
    # a single set but does not say which (a long CSV without a ``tagset``
    # column, a ``.cls`` file). Formats: see ``msd_triplet.prepare``.
    tags: tuple[str, ...] = ("msd_amglabels_all.h5",)
    # Track metadata: MSD ``track_metadata.db`` (SQLite), ``unique_tracks.txt``
    # (then ``albums`` should name a track -> album CSV) or a CSV with
    # ``track_id, artist_id, album_id``.
    metadata: str = "track_metadata.db"
    albums: Optional[str] = None
    # Audio: a CSV ``track_id, path`` or a template such as
    # ``audio/{track_id[2]}/{track_id[3]}/{track_id[4]}/{track_id}.mp3``.
    audio: str = "audio_paths.csv"
    # Tag sets a track needs >= 1 tag in to survive the intersection filter.
    tag_sets: tuple[str, ...] = TAG_SETS
    prepared: str = "prepared"
    split_proportions: tuple[float, ...] = PAPER_SPLIT_PROPORTIONS

    def path(self, relative: str) -> Path:
        """Resolve ``relative`` against :attr:`root` (absolute paths pass through)."""
        p = Path(os.path.expanduser(relative))
        return p if p.is_absolute() else Path(self.root) / p

    @property
    def prepared_dir(self) -> Path:
        return self.path(self.prepared)

    def __post_init__(self) -> None:
        _check_tag_sets("data.tag_sets", self.tag_sets)
        if len(self.split_proportions) != 3 or any(p <= 0 for p in self.split_proportions):
            raise ConfigError(
                "data.split_proportions: expected three positive numbers "
                f"(train, validation, test), got {list(self.split_proportions)}"
            )
        if not self.tags:
            raise ConfigError("data.tags: expected at least one tag-set file, got none")


@dataclass(frozen=True)
class FeatureConfig:
    """Audio segment and log-mel parameters (paper IV-B-2, SPEC section 3)."""

    sample_rate: int = 22_050
    offset: float = 3.0
    duration: float = 6.0
    n_fft: int = 2_048
    hop_length: int = 1_024
    n_mels: int = 80
    fmin: float = 16.0
    fmax: float = 11_000.0
    log_floor: float = 1e-6
    # dtype of the FFT and mel projection: float32 matches librosa to 2e-4 on music (1e-3 on
    # full-scale pure tones); float64 to 2e-5, at 15-30 % lower extraction speed on CPU.
    precision: Literal["float32", "float64"] = "float32"
    # Zero-pad audio shorter than offset + duration instead of skipping it.
    pad_short: bool = False
    cache: str = "features"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            _check_positive(f"features.{name}", getattr(self, name))
        _check_positive("features.duration", self.duration)
        _check_positive("features.log_floor", self.log_floor)
        if self.offset < 0:
            raise ConfigError(f"features.offset: must be >= 0 seconds, got {self.offset}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(
                f"features.fmin/fmax: need 0 <= fmin < fmax <= sample_rate/2 "
                f"({self.sample_rate / 2:g} Hz), got fmin={self.fmin:g}, fmax={self.fmax:g}"
            )


@dataclass(frozen=True)
class LsiConfig:
    """Which tag sets form the LSI matrix and how many topics are kept (SPEC section 4)."""

    tag_sets: tuple[str, ...] = TAG_SETS
    k: int = 340
    weighting: Literal["binary", "tfidf"] = "binary"
    solver: Literal["auto", "gram", "svds"] = "auto"
    # LSI rows whose norm is at most this fraction of the largest singular value count as zero (no topic).
    zero_norm_rtol: float = 1e-6

    def __post_init__(self) -> None:
        _check_tag_sets("lsi.tag_sets", self.tag_sets)
        _check_positive("lsi.k", self.k)
        _check_positive("lsi.zero_norm_rtol", self.zero_norm_rtol)


@dataclass(frozen=True)
class ModelConfig:
    """The DPNN (SPEC section 5): conv widths of both stacks and the embedding."""

    widths: tuple[int, ...] = (16, 32, 64, 128)
    embedding_dim: int = 256
    l2_normalize: bool = True

    def __post_init__(self) -> None:
        if len(self.widths) != 4:
            raise ConfigError(f"model.widths: expected four conv widths, got {list(self.widths)}")
        for w in self.widths:
            _check_positive("model.widths", w)
        _check_positive("model.embedding_dim", self.embedding_dim)


@dataclass(frozen=True)
class LossConfig:
    """The LSI-masked triplet loss (SPEC section 6)."""

    positive_threshold: float = 0.8
    negative_threshold: float = 0.2
    margin: float = 0.2
    # batch_hard (the paper's method as SPEC section 6 reads it), paper_literal, batch_all, semi_hard,
    # sct (batch-hard with selectively contrastive hard triplets, Xuan et al. 2020)
    mining: Literal["batch_hard", "paper_literal", "batch_all", "semi_hard", "sct"] = "batch_hard"
    album_filter: bool = True
    # softplus(d_ap - d_an) instead of max(0, d_ap - d_an + margin) (Hermans et al. 2017)
    soft_margin: bool = False
    # What relates two tracks: "lsi" cosine of LSI vectors (the paper), "jaccard" overlap of the binary
    # tags of lsi.tag_sets, "genre" equality of the main genre, "artist" equality of the artist.
    relatedness: Literal["lsi", "jaccard", "genre", "artist"] = "lsi"

    def __post_init__(self) -> None:
        if not -1.0 <= self.negative_threshold <= self.positive_threshold <= 1.0:
            raise ConfigError(
                "loss thresholds: need -1 <= negative_threshold <= positive_threshold <= 1, "
                f"got negative={self.negative_threshold}, positive={self.positive_threshold}"
            )
        if self.margin < 0:
            raise ConfigError(f"loss.margin: must be >= 0, got {self.margin}")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation, checkpoints and distribution (SPEC section 7)."""

    batch_size: int = 600
    epochs: int = 100
    learning_rate: float = 1e-3
    early_stopping_patience: int = 10
    # Numeric precision of the network (Keras dtype policies): "auto" = mixed_float16 with a GPU,
    # mixed_bfloat16 on a CPU with bfloat16 instructions, float32 elsewhere (msd_triplet.devices).
    # The loss, the input normalisation, the embedding layer and the L2 normalisation stay float32.
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    # Compile the train step with XLA: "auto" = on with a GPU, off on CPU (slower there, measured).
    jit_compile: Union[bool, Literal["auto"]] = "auto"
    distribution: Literal["default", "mirrored", "multi_worker"] = "default"
    runs: str = "runs"
    # Train the first epochs with batch_all mining, then with loss.mining (0: no warm-up).
    warmup_epochs: int = 0
    # How batches are drawn: "random" (a shuffled permutation per epoch) or "related": groups of
    # group_size tracks, a seed track and its positives, so every anchor has a positive in its batch.
    batch_composition: Literal["random", "related"] = "random"
    group_size: int = 4

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "learning_rate"):
            _check_positive(f"training.{name}", getattr(self, name))
        if self.warmup_epochs < 0:
            raise ConfigError(f"training.warmup_epochs: must be >= 0, got {self.warmup_epochs}")
        if self.batch_size < 2:
            raise ConfigError(f"training.batch_size: a triplet needs >= 2 tracks, got {self.batch_size}")
        if self.batch_composition == "related" and not 2 <= self.group_size <= self.batch_size:
            raise ConfigError(
                f"training.group_size: with related batches it must lie between 2 and "
                f"training.batch_size ({self.batch_size}), got {self.group_size}"
            )
        if self.early_stopping_patience < 0:
            raise ConfigError(f"training.early_stopping_patience: must be >= 0, got {self.early_stopping_patience}")


@dataclass(frozen=True)
class EvaluationConfig:
    """Precision@k retrieval evaluation (SPEC section 8)."""

    k: int = 100
    facet_match: Literal["identical", "overlap"] = "identical"
    split: Literal["train", "validation", "test"] = "test"
    chunk_size: int = 4_096
    # Every P@k comes with a percentile bootstrap interval at this confidence, from this many
    # resamples (seeded with the config's seed; SPEC section 11).
    bootstrap_resamples: int = 1_000
    confidence: float = 0.95
    # What one resample draws. "query": single queries (SPEC section 11). "album" / "artist":
    # every query of a drawn album / artist (cluster bootstrap). Tags are given per album and an
    # album's tracks sound alike, so queries of one album are not independent and "query"
    # intervals are too narrow; "album" (or "artist", wider still) is the honest choice then.
    bootstrap_unit: Literal["query", "album", "artist"] = "query"

    def __post_init__(self) -> None:
        _check_positive("evaluation.k", self.k)
        _check_positive("evaluation.chunk_size", self.chunk_size)
        if self.bootstrap_resamples < 100:
            raise ConfigError(
                f"evaluation.bootstrap_resamples: must be >= 100 (1,000 or more for a 95 % "
                f"interval), got {self.bootstrap_resamples}"
            )
        if not 0 < self.confidence < 1:
            raise ConfigError(
                f"evaluation.confidence: must lie strictly between 0 and 1 (e.g. 0.95), got {self.confidence}"
            )


@dataclass(frozen=True)
class GridConfig:
    """The experiment grid of paper Table II: tag-set combinations × LSI sizes (``msd-triplet grid``)."""

    # combination names like genres-moods; empty = all 15 of the paper
    combinations: tuple[str, ...] = ()
    ks: tuple[int, ...] = tuple(range(10, 401, 10))
    folder: str = "grids"
    # training seeds: every cell is trained once per seed (figures: mean ± sd over seeds);
    # empty = just the config's seed
    seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in self.combinations:
            parse_combination(name)
        if not self.ks:
            raise ConfigError("grid.ks: give at least one LSI size")
        for k in self.ks:
            _check_positive("grid.ks", k)
        if len(set(self.ks)) != len(self.ks):
            raise ConfigError(f"grid.ks: repeated sizes in {list(self.ks)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"grid.seeds: repeated seeds in {list(self.seeds)}")
        if any(seed < 0 for seed in self.seeds):
            raise ConfigError(f"grid.seeds: seeds must be >= 0, got {list(self.seeds)}")


def mining_variant(text: str) -> tuple[str, int]:
    """``"batch_hard"`` → ("batch_hard", 0); ``"batch_hard+warmup3"`` → ("batch_hard", 3) (batch_all warm-up epochs).

    ConfigError naming the text for an unknown mining or a malformed suffix.
    """
    allowed = typing.get_args(typing.get_type_hints(LossConfig)["mining"])
    mining, plus, suffix = str(text).partition("+")
    warmup = suffix[len("warmup") :] if suffix.startswith("warmup") else ""
    if mining not in allowed or (plus and not (warmup.isdigit() and int(warmup) >= 1)):
        raise ConfigError(
            f"unknown mining {text!r} (allowed: {', '.join(allowed)}, each optionally with "
            "+warmupN: N epochs of batch_all first, e.g. batch_hard+warmup3)"
        )
    return mining, int(warmup) if plus else 0


@dataclass(frozen=True)
class AblationConfig:
    """The triplet-selection ablation: relatedness source × mining × seed (``msd-triplet ablate``)."""

    sources: tuple[str, ...] = ("lsi", "jaccard", "genre", "artist")
    # mining modes; "+warmupN" trains the first N epochs with batch_all (training.warmup_epochs)
    minings: tuple[str, ...] = ("batch_hard", "batch_all", "semi_hard", "paper_literal")
    # the cell every other one is compared to, paired: SOURCE:MINING
    reference: str = "lsi:batch_hard"
    folder: str = "ablations"
    # training seeds (empty = just the config's seed)
    seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        from msd_triplet.relatedness import SOURCES

        for key, values in (("sources", self.sources), ("minings", self.minings)):
            if not values:
                raise ConfigError(f"ablation.{key}: give at least one")
            if len(set(values)) != len(values):
                raise ConfigError(f"ablation.{key}: repeated entries in {list(values)}")
        for source in self.sources:
            if source not in SOURCES:
                raise ConfigError(f"ablation.sources: unknown source {source!r} (allowed: {', '.join(SOURCES)})")
        for mining in self.minings:
            try:
                mining_variant(mining)
            except ConfigError as exc:
                raise ConfigError(f"ablation.minings: {exc}") from None
        source, _, mining = self.reference.partition(":")
        try:
            mining_variant(mining)
        except ConfigError:
            source = None
        if source not in SOURCES:
            raise ConfigError(
                f"ablation.reference: expected SOURCE:MINING such as lsi:batch_hard, got {self.reference!r}"
            )
        if len(set(self.seeds)) != len(self.seeds) or any(seed < 0 for seed in self.seeds):
            raise ConfigError(f"ablation.seeds: seeds must be distinct and >= 0, got {list(self.seeds)}")


@dataclass(frozen=True)
class Config:
    """A whole experiment. ``seed`` controls every random process (paper VI)."""

    # the run folder <training.runs>/<name> (and <grid.folder>/<name>): one folder name, checked
    name: str = "experiment"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    lsi: LsiConfig = field(default_factory=LsiConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)

    def __post_init__(self) -> None:
        _check_run_name(self.name)
        missing = sorted(set(self.lsi.tag_sets) - set(self.data.tag_sets))
        if missing:
            raise ConfigError(
                f"lsi.tag_sets: {missing} not in data.tag_sets {list(self.data.tag_sets)}; "
                "the intersection filter must keep only tracks tagged in every LSI set"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), ready for YAML or JSON."""
        return _plain(dataclasses.asdict(self))


# ---------------------------------------------------------------------------
# loading and saving


def config_from_dict(raw: Any, source: str = "<dict>") -> Config:
    """Build a :class:`Config` from nested plain values, validating every key.

    Parameters
    ----------
    raw : mapping
        Nested dict as read from YAML; missing keys take their defaults.
    source : str
        Shown in error messages (usually the YAML path).
    """
    if raw is None:
        raw = {}
    try:
        return _build(Config, raw, "", source)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None


def load_config(path: str | os.PathLike) -> Config:
    """Read a YAML experiment file; every error names the file and the key."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}: byte {exc.start} (line {line}, 0x{exc.object[exc.start]:02x}) is not UTF-8; "
            "a config file must be UTF-8 text (YAML)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:  # valid UTF-8, but control characters: a binary file
        raise ConfigError(
            f"{path}: character {exc.position} (#x{exc.character:04x}) is not allowed in YAML; "
            "a config file must be UTF-8 text (YAML)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return config_from_dict(raw, str(path))


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Write ``config`` as YAML, atomically; returns the path written."""
    import yaml

    from msd_triplet.fileio import atomic_write_text

    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
    return atomic_write_text(path, text)


def with_overrides(config: Config, overrides: dict[str, Any], source: str = "<overrides>") -> Config:
    """Return ``config`` with dotted keys replaced, e.g. ``{"training.epochs": 2}``."""
    raw = config.to_dict()
    for dotted, value in overrides.items():
        node = raw
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{source}: unknown section '{part}' in '{dotted}'")
            node = node[part]
        node[parts[-1]] = value
    return config_from_dict(raw, source)


# ---------------------------------------------------------------------------
# validation helpers


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"{source}: '{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown key '{prefix}{key}' (allowed: {', '.join(names)}){hint}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}", source)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``hint``; return it in canonical form."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", source)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, key, source)
        for hint_i in inner:  # the first alternative that accepts the value
            try:
                return _coerce(hint_i, value, key, source)
            except ConfigError:
                pass
        raise ConfigError(
            f"{source}: '{key}' must be {' or '.join(_expected(a) for a in inner)}, got {_describe(value)}"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: '{key}' must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {_describe(value)}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"config field '{key}' has an unsupported annotation {hint!r}")  # our bug


def _expected(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return ", ".join(map(repr, typing.get_args(hint)))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}: must be > 0, got {value}")


def _check_run_name(name: str) -> None:
    """``name`` becomes one folder under ``training.runs`` (and ``grid.folder``): it must not leave it."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"name: must be one folder name (not empty, '.' or '..'; no '/', '\\' or NUL), got {name!r}")


def _check_tag_sets(key: str, names: tuple[str, ...]) -> None:
    if not names:
        raise ConfigError(f"{key}: expected at least one of {', '.join(TAG_SETS)}, got none")
    for name in names:
        if name not in TAG_SETS:
            raise ConfigError(f"{key}: unknown tag set {name!r} (allowed: {', '.join(TAG_SETS)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}: tag sets repeat in {list(names)}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

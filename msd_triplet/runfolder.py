"""The run folder: the one place that names every file and folder of a run.

:func:`msd_triplet.training.fit` trains a config into a run folder
(``<training.runs>/<name>``); the later stages read it and add to it::

    config.yaml       the resolved config (every default written out)
    run.json          seed, library versions, data sizes, the LSI model used
    lsi.npz           the LSI model whose vectors were the targets
    state.json        epochs done, the best validation figure and its epoch, whether finished
    log.csv           one row per finished epoch: loss, statistics, validation P@k
    checkpoints/
      last.keras      model + optimizer after the last finished epoch (resume starts here)
      best.keras      the model of the best validation epoch
      epoch-NNN.weights.h5   the weights after every epoch
    tensorboard/      scalars per epoch

    metrics.json, metrics.md, per_query.npz    ``msd-triplet evaluate`` of the test split
    metrics-<split>.json, …                    … of another split (:func:`split_file`)
    index-<split>-<checkpoint>.npz             embeddings of a split (``similar``, ``serve``, ``project``)
    map-<split>-<checkpoint>.npz               their 2-d t-SNE map (``serve``)
    probe-<facet>.json                         a linear probe of the embeddings (``probe``)
    savedmodel/                                the demo's SavedModel export

:class:`RunFolder` gives the path of each; it reads nothing but
:meth:`RunFolder.is_run` and :meth:`RunFolder.loaded_checkpoint` (whether a
file exists), and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"
STATE_FILE = "state.json"
RUN_INFO_FILE = "run.json"
LOG_FILE = "log.csv"
LSI_FILE = "lsi.npz"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
SAVEDMODEL_DIR = "savedmodel"
#: Evaluation files of the test split; another split's carry its name (:func:`split_file`).
METRICS_FILE = "metrics.json"
METRICS_TABLE_FILE = "metrics.md"
PER_QUERY_FILE = "per_query.npz"


def split_file(name: str, split: str) -> str:
    """The file ``name`` of an evaluation of ``split``: ``name`` itself for the test split, else the split
    after the stem (``split_file("metrics.json", "validation")`` is ``metrics-validation.json``)."""
    if split == "test":
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}-{split}{dot}{suffix}"


def _member(name: str, doc: str) -> property:
    """A read-only attribute of :class:`RunFolder`: the path of ``name`` inside the run folder."""
    return property(lambda self: self.path / name, doc=doc)


@dataclass(frozen=True)
class RunFolder:
    """The paths of a run folder at ``path`` (which need not exist)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ------------------------------------------------------------------ written by fit

    config = _member(CONFIG_FILE, "``config.yaml``: the resolved config of the run.")
    state = _member(STATE_FILE, "``state.json``: epochs done, the best validation figure and its epoch.")
    run_info = _member(RUN_INFO_FILE, "``run.json``: seed, library versions, data sizes, the LSI model used.")
    log = _member(LOG_FILE, "``log.csv``: one row per finished epoch.")
    lsi = _member(LSI_FILE, "``lsi.npz``: the LSI model whose vectors were the targets.")
    tensorboard = _member(TENSORBOARD_DIR, "``tensorboard/``: scalars per epoch.")
    checkpoints = _member(CHECKPOINTS_DIR, "``checkpoints/``: last, best and per-epoch weights.")
    savedmodel = _member(SAVEDMODEL_DIR, "``savedmodel/``: where the demo exports the run's SavedModel.")

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/<which>.keras`` (``best`` or ``last``), whether or not it exists."""
        return self.checkpoints / f"{which}.keras"

    def epoch_weights(self, epoch: int) -> Path:
        """``checkpoints/epoch-NNN.weights.h5``: the weights after epoch ``epoch`` (from 1)."""
        return self.checkpoints / f"epoch-{epoch:03d}.weights.h5"

    def loaded_checkpoint(self, which: str = "best") -> Path:
        """The checkpoint a run's model is loaded from: ``checkpoint(which)``, ``best`` falling back to
        ``last`` when there is no ``best.keras`` (a run without validation). The file may not exist."""
        path = self.checkpoint(which)
        return path if path.is_file() or which != "best" else self.checkpoint("last")

    def is_run(self) -> bool:
        """Whether this is a run folder (its ``config.yaml`` exists)."""
        return self.config.is_file()

    # ------------------------------------------------------------------ written by later stages

    def metrics(self, split: str = "test") -> Path:
        """``metrics.json`` of an evaluation of ``split`` (``metrics-<split>.json`` for a split other than test)."""
        return self.path / split_file(METRICS_FILE, split)

    def metrics_md(self, split: str = "test") -> Path:
        """``metrics.md`` of an evaluation of ``split`` (``metrics-<split>.md`` for a split other than test)."""
        return self.path / split_file(METRICS_TABLE_FILE, split)

    def per_query(self, split: str = "test") -> Path:
        """``per_query.npz`` of an evaluation of ``split`` (``per_query-<split>.npz`` for another split)."""
        return self.path / split_file(PER_QUERY_FILE, split)

    def index(self, split: str, checkpoint: str) -> Path:
        """``index-<split>-<checkpoint>.npz``: the cached embeddings of ``split``
        (:func:`msd_triplet.embed.split_index`)."""
        return self.path / f"index-{split}-{checkpoint}.npz"

    def map(self, split: str, checkpoint: str) -> Path:
        """``map-<split>-<checkpoint>.npz``: the cached 2-d map of that index
        (:class:`msd_triplet.browse.RunBrowser`)."""
        return self.path / f"map-{split}-{checkpoint}.npz"

    def probe(self, facet: str) -> Path:
        """``probe-<facet>.json``: the linear probe of ``facet`` (:func:`msd_triplet.probe.probe_run`)."""
        return self.path / f"probe-{facet}.json"

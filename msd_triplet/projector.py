"""Files for TensorBoard's Embedding Projector: the vectors, their metadata and the config that links them.

After :func:`write_projector` has written into a folder, ``tensorboard --logdir
FOLDER`` shows the embeddings in its Projector tab, labelled and coloured by
the metadata columns:

``<name>.tsv``
    float32 [N, d], one vector a line, values tab-separated ("%.9g": float32 round-trips);
``metadata.tsv``
    a header row of column names, then one row a vector (a single column has no header,
    as the projector expects);
``projector_config.pbtxt``
    TensorBoard's own ``ProjectorConfig`` naming the two files, relative to the folder.

:func:`write_run_projector` writes a trained run's split with names and tags from
:func:`msd_triplet.catalogue.track_table`; :func:`write_files_projector` the output
of ``msd-triplet embed … --out X.npy``.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from msd_triplet.errors import ArgumentError, DataError
from msd_triplet.fileio import atomic_write_text

CONFIG_FILE = "projector_config.pbtxt"
METADATA_FILE = "metadata.tsv"
#: What an empty metadata value is shown as (the projector would leave the point uncoloured).
EMPTY = "(none)"
#: The name columns of :func:`projector_metadata`, before the tag columns.
TRACK_COLUMNS = ("track_id", "title", "artist", "album")

# Characters that end a field or a line for the projector or for a reader of the TSV.
_SEPARATORS = re.compile(r"[\t\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def write_projector(folder: str | os.PathLike, embeddings, metadata: pd.DataFrame, *, name: str = "embeddings") -> Path:
    """Write ``embeddings`` and ``metadata`` into ``folder`` (created if missing) for the projector.

    Parameters
    ----------
    embeddings : float [N, d], finite, N >= 1 and d >= 1; written as float32
    metadata : DataFrame [N, columns], row i describes vector i. Tabs and line breaks
        inside values and column names become spaces; empty values are shown as :data:`EMPTY`.
    name : the tensor's name in the projector and its file ``<name>.tsv``

    Every file is written atomically, the config last. Returns ``folder``.
    ArgumentError if a value is not allowed.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == Path(METADATA_FILE).stem:
        raise ArgumentError(
            f"name: {name!r} is not allowed; use letters, digits, '_', '.' and '-' "
            f"(not starting with '_', '.' or '-'), other than {Path(METADATA_FILE).stem!r}"
        )
    vectors = _checked_vectors(embeddings, metadata)
    from google.protobuf import text_format
    from tensorboard.plugins.projector import ProjectorConfig

    folder = Path(folder)
    text = io.StringIO()
    np.savetxt(text, vectors, fmt="%.9g", delimiter="\t")
    atomic_write_text(folder / f"{name}.tsv", text.getvalue())
    atomic_write_text(folder / METADATA_FILE, _metadata_tsv(metadata))
    config = ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = name
    embedding.tensor_path = f"{name}.tsv"
    embedding.metadata_path = METADATA_FILE
    embedding.tensor_shape.extend(vectors.shape)
    atomic_write_text(folder / CONFIG_FILE, text_format.MessageToString(config))
    return folder


def projector_metadata(table: pd.DataFrame, tag_sets: Sequence[str], *, separator: str = "; ") -> pd.DataFrame:
    """The projector's metadata columns of a track table (:func:`msd_triplet.catalogue.track_table`).

    Columns: :data:`TRACK_COLUMNS`, then per tag set a single-label column to colour
    by, its first tag (``genre`` for ``genres``, as the evaluation names the facets),
    and the full list (``genres``, tags joined by ``separator``). One row per table
    row, in table order.
    """
    from msd_triplet.evaluation import FACET_TAG_SETS

    missing = [c for c in (*TRACK_COLUMNS, *tag_sets) if c not in table.columns]
    if missing:
        raise ArgumentError(
            f"projector_metadata: table has no column {', '.join(missing)}; it has {', '.join(map(str, table.columns))}"
        )
    facet_of = {tag_set: facet for facet, tag_set in FACET_TAG_SETS.items()}
    out = table.loc[:, list(TRACK_COLUMNS)].reset_index(drop=True)
    for tag_set in tag_sets:
        tags = table[tag_set].fillna("").astype(str).reset_index(drop=True)
        out[facet_of.get(tag_set, f"first of {tag_set}")] = tags.str.split(separator, n=1).str[0]
        out[tag_set] = tags
    return out


def write_run_projector(
    run: str | os.PathLike, out: str | os.PathLike, *, split: str = "test", checkpoint: str = "best"
) -> Path:
    """Write the projector files of a trained run's ``split`` ("all" for every track) into ``out``.

    The embeddings are the run's cached split index (:func:`msd_triplet.embed.split_index`);
    the metadata its tracks' names and tags, one :func:`projector_metadata` column pair per
    ``data.tag_sets``. Returns ``out``.
    """
    from msd_triplet.catalogue import track_table
    from msd_triplet.embed import split_index

    ids, embeddings, prepared, config = split_index(Path(run), split, checkpoint)
    table = track_table(config, prepared).set_index("track_id", drop=False).loc[ids]
    return write_projector(out, embeddings, projector_metadata(table, config.data.tag_sets))


def write_files_projector(embeddings_npy: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the projector files of ``msd-triplet embed … --out X.npy`` into ``out``.

    Reads ``X.npy`` (float32 [N, d]) and ``X.tracks.csv`` (row, path) beside it; the
    metadata columns are ``path`` and ``file`` (its base name). Returns ``out``.
    """
    npy = Path(embeddings_npy)
    tracks_csv = Path(f"{npy.with_suffix('')}.tracks.csv")
    try:
        embeddings = np.load(npy, allow_pickle=False)
        tracks = pd.read_csv(tracks_csv, dtype={"path": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{npy}: cannot read it or {tracks_csv.name} beside it ({exc}); give the .npy written by "
            "`msd-triplet embed … --out X.npy`"
        ) from None
    if list(tracks.columns) != ["row", "path"] or not np.array_equal(tracks["row"], np.arange(len(tracks))):
        raise DataError(f"{tracks_csv}: need columns row, path with rows 0 … N-1 in order")
    if len(embeddings) == 0:
        raise DataError(f"{npy}: holds no vectors (embed could read none of the files; its .skipped.csv says why)")
    if len(tracks) != len(embeddings):
        raise DataError(f"{npy}: {len(embeddings)} vectors, but {tracks_csv.name} lists {len(tracks)} files")
    metadata = pd.DataFrame({"path": tracks["path"], "file": [os.path.basename(p) for p in tracks["path"]]})
    return write_projector(out, embeddings, metadata)


def _checked_vectors(embeddings, metadata: pd.DataFrame) -> np.ndarray:
    if not isinstance(metadata, pd.DataFrame):
        raise ArgumentError(f"metadata: got {type(metadata).__name__}; need a pandas DataFrame, one row per vector")
    if metadata.shape[1] == 0:
        raise ArgumentError("metadata: has no columns; need at least one")
    header = [_cell(c) for c in metadata.columns]
    if len(set(header)) != len(header):
        raise ArgumentError(
            f"metadata: column names {header} repeat (tabs and line breaks read as spaces); need distinct names"
        )
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            vectors = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"embeddings: not numbers ({exc}); need a float array [N, d]") from None
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise ArgumentError(f"embeddings: shape {vectors.shape}; need 2-D [N, d] with N >= 1 and d >= 1")
    bad = np.argwhere(~np.isfinite(vectors))
    if len(bad):
        row, column = bad[0]
        raise ArgumentError(
            f"embeddings: not finite in float32 at {len(bad)} of {vectors.size} values, "
            f"the first at row {row}, column {column} ({vectors[row, column]}); need finite values"
        )
    if len(vectors) != len(metadata):
        raise ArgumentError(
            f"embeddings: {len(vectors)} rows, but metadata has {len(metadata)}; need one metadata row per vector"
        )
    return vectors


def _cell(value) -> str:
    """A metadata value as one TSV field: separators become spaces, empty becomes :data:`EMPTY`."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return EMPTY
    return _SEPARATORS.sub(" ", str(value)).strip() or EMPTY


def _metadata_tsv(metadata: pd.DataFrame) -> str:
    """The text of ``metadata.tsv``: header (if more than one column) and rows, tab-separated, "\\n"-ended."""
    header = [_cell(c) for c in metadata.columns]
    rows = [[_cell(v) for v in row] for row in metadata.itertuples(index=False, name=None)]
    lines = ([header] if len(header) > 1 else []) + rows
    return "".join("\t".join(line) + "\n" for line in lines)

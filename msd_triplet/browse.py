"""What ``msd-triplet serve`` shows, without the web: a run's tracks, neighbours, audio, map and metrics.

:class:`RunBrowser` loads a trained run folder once (the split's embeddings
from the cached index, the track table with names and tags, the model for
uploaded audio, the 2-D map) and then answers every question of the web app
from memory. Files are only ever reached through a track id of the run's data:
no parameter is ever used as a path, and every audio path is checked to lie in
the data or audio folders before it is opened (:meth:`RunBrowser.audio_file`).
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from msd_triplet.embed import AUDIO_TYPES  # the audio files we read, with their media types (re-exported)
from msd_triplet.errors import ArgumentError, AudioError, DataError
from msd_triplet.runfolder import RunFolder

#: Labels a map colours by name; the rest of a facet's tags are "other".
MAP_LABELS = 12


class NotFound(DataError):
    """A track id, facet or file the run does not have (the web app answers 404)."""


@dataclass
class Query:
    """What neighbours are searched for: a track of the run or an uploaded clip."""

    vector: np.ndarray  # float32 [d]
    track_id: Optional[str] = None  # None for uploaded audio
    label: str = ""


class RunBrowser:
    """A trained run, ready to browse.

    Parameters
    ----------
    run : run folder written by ``msd-triplet fit``
    split : "test", "validation", "train" or "all": the tracks searched and mapped
    checkpoint : "best" or "last"
    say : progress messages while loading (the map takes seconds the first time)
    """

    def __init__(
        self,
        run: str | Path,
        *,
        split: str = "test",
        checkpoint: str = "best",
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        from msd_triplet import embed as embedding
        from msd_triplet.catalogue import track_table

        if split not in ("train", "validation", "test", "all"):
            raise ArgumentError(f"split: {split!r} is not one of train, validation, test, all")
        self.run = Path(run).resolve()
        self.split, self.checkpoint = split, checkpoint
        started = time.perf_counter()
        ids, self.embeddings, prepared, self.config = embedding.split_index(self.run, split, checkpoint)
        self.track_ids = np.asarray(ids, dtype=object)  # plain str, as JSON wants them
        self.track_ids[:] = [str(t) for t in ids]
        self.embeddings = np.ascontiguousarray(self.embeddings, np.float32)
        table = track_table(self.config, prepared)
        self.tracks = table.set_index("track_id").loc[self.track_ids]
        self.row = {t: i for i, t in enumerate(self.track_ids)}
        self.facets = tuple(self.config.data.tag_sets)
        self._tag_sets = {f: [frozenset(filter(None, s.split("; "))) for s in self.tracks[f]] for f in self.facets}
        self.roots = self._allowed_roots()
        say(
            f"{len(self.track_ids):,} tracks of the {split} split loaded with their embeddings "
            f"({time.perf_counter() - started:.1f} s)"
        )
        self._embedder = None
        self._points: dict[str, dict] = {}
        self.map = self._load_map(say)

    # ------------------------------------------------------------------ tracks

    def search(self, text: str, limit: int = 50) -> list[dict]:
        """Tracks whose id, title, artist, album or tags contain ``text`` (case-insensitive), at most ``limit``."""
        text = str(text).strip().casefold()
        if not text:
            rows = np.arange(min(limit, len(self.track_ids)))
        else:
            haystack = self._haystack()
            rows = np.flatnonzero(haystack.str.contains(text, regex=False).to_numpy())[:limit]
        return [self.describe(self.track_ids[i]) for i in rows]

    def _haystack(self) -> pd.Series:
        if not hasattr(self, "_text"):
            columns = ["title", "artist", "album", *self.facets]
            joined = pd.Series(self.track_ids, dtype=object).str.cat(
                [self.tracks[c].reset_index(drop=True).astype(str) for c in columns], sep=" | "
            )
            self._text = joined.str.casefold()
        return self._text

    def describe(self, track_id: str) -> dict:
        """Names, ids and tags of one track of the split."""
        row = self.tracks.loc[self._known(track_id)]
        return {
            "track_id": track_id,
            "title": row["title"],
            "artist": row["artist"],
            "album": row["album"],
            "artist_id": row["artist_id"],
            "album_id": row["album_id"],
            "tags": {f: [t for t in row[f].split("; ") if t] for f in self.facets},
        }

    def _known(self, track_id: str) -> str:
        if not isinstance(track_id, str) or track_id not in self.row:
            raise NotFound(f"track {str(track_id)[:40]!r} is not in the {self.split} split of this run")
        return track_id

    # ------------------------------------------------------------------ neighbours

    def track_query(self, track_id: str) -> Query:
        i = self.row[self._known(track_id)]
        return Query(self.embeddings[i], track_id, track_id)

    def neighbours(self, query: Query, n: int = 10) -> list[dict]:
        """The ``n`` tracks nearest to ``query`` (squared Euclidean, the query track left out), nearest first.

        Each row: rank, distance, the track's description, and ``shared``: per facet the
        tags it shares with the query track, plus ``artist`` / ``album`` (same or not);
        empty for uploaded audio, whose tags are unknown.
        """
        n = int(n)
        if not 1 <= n <= 100:
            raise ArgumentError(f"n: {n} neighbours asked; allowed 1 to 100")
        distances = np.einsum("ij,ij->i", self.embeddings - query.vector, self.embeddings - query.vector)
        if query.track_id is not None:
            distances[self.row[query.track_id]] = np.inf
        n = min(n, int(np.isfinite(distances).sum()))
        top = np.argpartition(distances, n - 1)[:n] if n < len(distances) else np.arange(len(distances))
        top = top[np.lexsort((top, distances[top]))]
        rows = []
        for rank, i in enumerate(top, start=1):
            entry = self.describe(self.track_ids[i])
            entry.update(rank=rank, distance=float(distances[i]), shared=self._shared(query, i))
            rows.append(entry)
        return rows

    def _shared(self, query: Query, i: int) -> dict:
        if query.track_id is None:
            return {}
        q = self.row[query.track_id]
        shared = {f: sorted(self._tag_sets[f][q] & self._tag_sets[f][i]) for f in self.facets}
        shared["artist"] = bool(self.tracks["artist_id"].iat[q] == self.tracks["artist_id"].iat[i])
        shared["album"] = bool(self.tracks["album_id"].iat[q] == self.tracks["album_id"].iat[i])
        return shared

    def audio_query(self, path: str | Path, label: str) -> Query:
        """Embed an audio file exactly as in training; AudioError (naming ``label``) if it cannot be used."""
        from msd_triplet.features import decoded_batches

        embedder = self._model()
        batch = next(decoded_batches([str(path)], [0], embedder.features, workers=1, batch_size=1))
        if batch.kinds[0]:
            message = str(batch.messages[0]).replace(str(path), label)
            raise AudioError(message, str(batch.kinds[0]))
        if batch.silent[0]:
            features = embedder.features
            raise AudioError(
                f"{label}: the segment the model reads ({features.offset:g}–"
                f"{features.offset + features.duration:g} s) is silent",
                "silent",
            )
        vector = embedder.embed(batch.log_mel[..., None])[0]
        return Query(np.asarray(vector, np.float32), None, label)

    def warm_up(self) -> None:
        """Load the model and trace decoding, log-mel and embedding once, so the first upload is as fast as the rest.

        Uses the first track of the split whose audio is readable; without one, only the model is loaded.
        """
        self._model()
        for track in self.track_ids[:5]:
            try:
                self.audio_query(self.audio_file(track), "warm-up")
                return
            except (NotFound, AudioError):
                continue

    def _model(self):
        """The run's :class:`msd_triplet.embed.Embedder` for uploads, loaded on first use."""
        if self._embedder is None:
            from msd_triplet.embed import load_embedder

            self._embedder = load_embedder(self.run, self.checkpoint)
        return self._embedder

    # ------------------------------------------------------------------ audio

    def _allowed_roots(self) -> tuple[Path, ...]:
        """The data folder and the folder holding the split's audio (their resolved forms)."""
        data = self.config.data
        roots = {Path(data.root).resolve()}
        folders = {os.path.dirname(os.path.abspath(p)) for p in self.tracks["audio_path"]}
        if folders:
            roots.add(Path(os.path.commonpath(sorted(folders))).resolve())
        return tuple(sorted(roots))

    def audio_file(self, track_id: str) -> Path:
        """The audio file of a track of the split; NotFound unless it exists inside the allowed folders."""
        path = Path(self.tracks.at[self._known(track_id), "audio_path"]).resolve()
        if not any(path.is_relative_to(root) for root in self.roots):
            raise NotFound(f"the audio of {track_id} lies outside the run's data and audio folders")
        if not path.is_file():
            raise NotFound(f"the audio of {track_id} is missing")
        return path

    def segment_wav(self, track_id: str) -> bytes:
        """The segment the model saw (mono, the configured offset and duration) as 16-bit WAV."""
        import soundfile as sf

        from msd_triplet.audio import SegmentSpec, read_segment

        spec = SegmentSpec.from_config(self.config.features)
        wave = read_segment(self.audio_file(track_id), spec)
        out = io.BytesIO()
        sf.write(out, wave, spec.sample_rate, format="WAV", subtype="PCM_16")
        return out.getvalue()

    # ------------------------------------------------------------------ map

    def _load_map(self, say: Callable[[str], None]) -> np.ndarray:
        """float32 [N, 2] t-SNE of the split's embeddings, cached in the run folder beside the index."""
        from msd_triplet.fileio import atomic_path

        path = RunFolder(self.run).map(self.split, self.checkpoint)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    if np.array_equal(stored["track_ids"], self.track_ids.astype(str)) and np.array_equal(
                        stored["source"], _digest(self.embeddings)
                    ):
                        return stored["xy"]
            except (OSError, KeyError, ValueError):
                pass
        started = time.perf_counter()
        xy = project_2d(self.embeddings, seed=self.config.seed)
        with atomic_path(path, ".npz") as tmp:
            np.savez(tmp, track_ids=self.track_ids.astype(str), xy=xy, source=_digest(self.embeddings))
        say(f"map of {len(xy):,} tracks (t-SNE, {time.perf_counter() - started:.1f} s), cached in {path.name}")
        return xy

    def map_points(self, facet: str) -> dict:
        """Points of the map coloured by ``facet``: each track's most common tag of that facet in the split.

        Returns {"facet", "labels": [names, "other" last if used], "counts": [points per label],
        "points": [[x, y, label index, track_id, title, artist], ...]}; coordinates scaled to [0, 1].
        The labels named are the :data:`MAP_LABELS` that colour the most points.
        """
        if facet not in self.facets:
            raise NotFound(f"facet {str(facet)[:40]!r}: not one of {', '.join(self.facets)}")
        if facet not in self._points:
            self._points[facet] = self._map_points(facet)
        return self._points[facet]

    def _map_points(self, facet: str) -> dict:
        sets = self._tag_sets[facet]
        counts = pd.Series([t for s in sets for t in s], dtype=object).value_counts()
        rank = {t: r for r, t in enumerate(counts.index)}
        dominant = [min(s, key=rank.__getitem__) if s else "(none)" for s in sets]
        # name the labels that colour the most points; a tag that is never a track's commonest colours none
        coloured = pd.Series(dominant, dtype=object).value_counts()
        named = [t for t in coloured.index if t != "(none)"][:MAP_LABELS]
        labels = named + (["other"] if len(named) < len(coloured) else [])
        index = {t: i for i, t in enumerate(named)}
        other = len(named)
        lo, hi = self.map.min(axis=0), self.map.max(axis=0)
        xy = (self.map - lo) / np.where(hi > lo, hi - lo, 1.0)
        points = [
            [
                round(float(x), 4),
                round(float(y), 4),
                index.get(label, other),
                t,
                self.tracks["title"].iat[i],
                self.tracks["artist"].iat[i],
            ]
            for i, ((x, y), label, t) in enumerate(zip(xy, dominant, self.track_ids))
        ]
        label_counts = np.bincount([p[2] for p in points], minlength=len(labels)).tolist()
        return {"facet": facet, "labels": labels, "counts": label_counts, "points": points}

    # ------------------------------------------------------------------ run summary

    def summary(self) -> dict:
        """Run name, split, counts, facets and the evaluation (metrics.json) if there is one."""
        metrics_path = RunFolder(self.run).metrics("test")
        metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
        metrics = _finite_or_none(metrics)  # NaN (e.g. a facet without queries) is not JSON
        return {
            "run": self.run.name,
            "split": self.split,
            "checkpoint": self.checkpoint,
            "tracks": len(self.track_ids),
            "dimensions": int(self.embeddings.shape[1]),
            "facets": list(self.facets),
            "metrics": metrics,
        }

    def curves_svg(self) -> Optional[str]:
        """Training curves (loss; validation P@k per facet) from ``log.csv`` as SVG text, or None."""
        return training_curves_svg(RunFolder(self.run).log)


def project_2d(embeddings: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """float32 [N, 2]: scikit-learn's t-SNE of the embeddings (PCA start, perplexity ≤ 30)."""
    from sklearn.manifold import TSNE

    n = len(embeddings)
    if n < 3:
        return np.zeros((n, 2), np.float32) + np.arange(n, dtype=np.float32)[:, None]
    perplexity = float(min(30.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto")
    return tsne.fit_transform(np.asarray(embeddings, np.float64)).astype(np.float32)


def training_curves_svg(log_csv: Path) -> Optional[str]:
    """Two panels from a run's ``log.csv``: the training loss and the validation P@k per facet, as SVG."""
    if not Path(log_csv).is_file():
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    log = pd.read_csv(log_csv)
    if log.empty or "epoch" not in log:
        return None
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    loss_axes, p_axes = figure.subplots(1, 2)
    for column in ("loss", "val_loss"):
        if column in log:
            loss_axes.plot(log["epoch"], log[column], marker=".", label=column)
    loss_axes.set(xlabel="epoch", title="triplet loss")
    loss_axes.legend(fontsize=8)
    for column in [c for c in log.columns if c.startswith("val_p@")]:
        p_axes.plot(log["epoch"], log[column], marker=".", label=column.removeprefix("val_"))
    p_axes.set(xlabel="epoch", title="validation precision")
    p_axes.legend(fontsize=7, ncols=2)
    out = io.StringIO()
    figure.savefig(out, format="svg")
    return out.getvalue()


def _finite_or_none(value):
    """``value`` with every non-finite float (NaN, inf) replaced by None, recursively through dicts and lists."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _digest(embeddings: np.ndarray) -> np.ndarray:
    """A cheap fingerprint of the embeddings (sums of columns and rows), to notice a changed checkpoint."""
    return np.concatenate([embeddings.sum(axis=0), embeddings.sum(axis=1)]).astype(np.float32)


def check_upload_name(filename: str, allowed: Sequence[str] = tuple(AUDIO_TYPES)) -> str:
    """The lower-case extension of an uploaded file's name; ArgumentError unless it is an audio type we read."""
    suffix = Path(str(filename or "")).suffix.lower()
    if suffix not in allowed:
        raise ArgumentError(
            f"{Path(str(filename or '(no name)')).name}: not an audio file type we read "
            f"(got {suffix or 'no extension'!r}; allowed {', '.join(allowed)})"
        )
    return suffix

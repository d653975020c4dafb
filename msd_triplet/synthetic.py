"""The embedded MSD-like demo data set (SPEC section 2.2), second version.

:func:`make_demo_data` writes, from a seed, a small data set in the same
on-disk formats as the real one, so the real ingestion path is exercised:

``msd_amglabels_all.h5``
    pandas HDFStore, key ``data``: index = track id, columns ``genres``,
    ``styles``, ``moods``, ``themes`` holding lists of tags or NaN.
``track_metadata.db``
    SQLite, table ``songs`` with the MSD columns (album = ``release`` within
    ``artist_id``; titles such as "Greatest Hits" repeat across artists).
``audio/…/TR….{mp3,wav,flac,ogg}`` and ``audio_paths.csv``
    10 s clips: 44.1 kHz stereo and 22.05 kHz mono mp3, 22.05 kHz mono wav
    and flac, 32 kHz mono ogg.
``demo_info.json``
    the generator's parameters, the world's tables (what every tag sounds
    like), the realised statistics (:mod:`msd_triplet.demostats`) and the
    list of deliberately broken inputs.

The world (:mod:`msd_triplet.demoworld`): genres and nested styles set the
band; every mood has its own performance signature and every theme its own
instrument layer, independent of genre, style, artist and album; albums draw
shared mood and theme profiles whose odds follow their genre and styles;
artists and albums add a nuisance sound of controlled strength
(:class:`~msd_triplet.synthcatalogue.WorldParams`). Tags are drawn per album
and inherited by its tracks. A few broken inputs are included on purpose
(empty, truncated, too short, silent and non-audio files, a missing file,
tracks without metadata, a malformed track id, a duplicated row). Same
arguments → byte-identical files.
"""

from __future__ import annotations

import functools
import json
import shutil
import sqlite3
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from msd_triplet import demoworld
from msd_triplet.errors import DataError
from msd_triplet.fileio import atomic_path, atomic_write_json, atomic_write_text
from msd_triplet.synthaudio import RENDER_SR, render
from msd_triplet.synthcatalogue import BROKEN_KINDS, FORMATS, DemoTrack, WorldParams, build_catalogue

__all__ = [
    "BROKEN_KINDS",
    "DEFAULT_SEED",
    "DEFAULT_TRACKS",
    "DemoSummary",
    "DemoTrack",
    "WorldParams",
    "build_catalogue",
    "make_demo_data",
]

GENERATOR_VERSION = 2
DEFAULT_TRACKS = 2_000
DEFAULT_SEED = 2019
CLIP_SECONDS = 10.0


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`make_demo_data` wrote."""

    out: Path
    n_tracks: int
    n_artists: int
    n_albums: int
    broken: dict  # track id -> kind
    seconds: float
    written: int  # audio files written in this call (the rest existed)
    statistics: dict  # demostats.world_statistics


def make_demo_data(
    out: str | Path,
    tracks: int = DEFAULT_TRACKS,
    seed: int = DEFAULT_SEED,
    workers: Optional[int] = None,
    force: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
    world: WorldParams = WorldParams(),
) -> DemoSummary:
    """Write the synthetic MSD-like data set into ``out``.

    Parameters
    ----------
    out : path
        Target folder. A finished data set with other parameters is an error
        unless ``force``; an unfinished one (no ``demo_info.json``) is resumed:
        audio files already written (atomically) are kept.
    tracks : int
        Number of tagged tracks (>= 60); about 80 % survive the intersection filter.
    seed : int
        Decides the whole catalogue and every waveform.
    workers : int, optional
        Processes that render audio (default: number of CPUs, at most 4).
    progress : callable(done, total), optional
        Called after each audio file.
    world : the knobs of the world (nuisance strengths, layer level, coupling, ...)
    """
    if tracks < 60:
        raise DataError(f"make-demo-data: --tracks must be >= 60 (>= 3 artists per split), got {tracks}")
    out = Path(out)
    info_path = out / "demo_info.json"
    params = {"generator_version": GENERATOR_VERSION, "tracks": tracks, "seed": seed, "world": world.to_dict()}
    if info_path.exists() and not force:
        try:
            old = json.loads(info_path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{info_path}: unreadable ({exc}); delete it or pass --force") from None
        if {k: old.get(k) for k in params} != params:
            raise DataError(
                f"{out}: holds a demo data set made with { ({k: old.get(k) for k in params}) }, "
                f"not {params}; choose another --out or pass --force"
            )
    start = time.perf_counter()
    catalogue = build_catalogue(tracks, seed, world)
    if force and (out / "audio").is_dir():
        shutil.rmtree(out / "audio")  # stale files of another seed would linger
    out.mkdir(parents=True, exist_ok=True)
    _write_tags(catalogue, out / "msd_amglabels_all.h5")
    _write_metadata(catalogue, out / "track_metadata.db")
    paths = {
        t.track_id: f"audio/{t.track_id[2]}/{t.track_id[3]}/{t.track_id}.{FORMATS[t.audio_format][0]}"
        for t in catalogue
    }
    rows = ["track_id,path"] + [f"{tid},{p}" for tid, p in paths.items()]
    atomic_write_text(out / "audio_paths.csv", "\n".join(rows) + "\n")

    todo = [
        (t, out / paths[t.track_id], seed, i)
        for i, t in enumerate(catalogue)
        if t.broken != "missing" and (force or not (out / paths[t.track_id]).exists())
    ]
    workers = workers or min(4, _cpu_count())
    if workers > 1 and len(todo) > 8:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for done, _ in enumerate(pool.map(_write_audio_job, todo, chunksize=8), 1):
                if progress:
                    progress(done, len(todo))
    else:
        for done, job in enumerate(todo, 1):
            _write_audio_job(job)
            if progress:
                progress(done, len(todo))

    from msd_triplet.demostats import world_statistics

    broken = {t.track_id: t.broken for t in catalogue if t.broken}
    artists = {t.artist_id for t in catalogue}
    albums = {t.album for t in catalogue}
    statistics = world_statistics(catalogue)
    seconds = time.perf_counter() - start
    atomic_write_json(
        info_path,
        {
            **params,
            "clip_seconds": CLIP_SECONDS,
            "n_tracks": len(catalogue),
            "n_artists": len(artists),
            "n_albums": len(albums),
            "broken": broken,
            "extra_rows": {
                "malformed_track_id": _MALFORMED_ID,
                "duplicated_row": catalogue[1].track_id,
                "no_metadata": [t.track_id for t in catalogue[-3:]],
            },
            "statistics": statistics,
            "tables": describe_world(),
        },
    )
    return DemoSummary(out, len(catalogue), len(artists), len(albums), broken, seconds, len(todo), statistics)


def describe_world() -> dict:
    """The world's tables as plain data: what every genre, mood and theme sounds like, the profiles."""
    return {
        "genres": {name: {**g._asdict(), "styles": list(g.styles)} for name, g in demoworld.GENRES.items()},
        "style_leaning": demoworld.STYLE_LEANING,
        "mood_effects": demoworld.MOOD_EFFECTS,
        "moods": {
            name: {"valence_arousal": m.valence_arousal, "effects": m.effects} for name, m in demoworld.MOODS.items()
        },
        "themes": {
            name: {"layer": layer, "valence_arousal": va, "favoured_genres": list(fav)}
            for name, (layer, va, fav) in demoworld.THEMES.items()
        },
        "mood_profiles": [{"moods": list(tags), "popularity": pop} for tags, pop in demoworld.MOOD_PROFILES],
        "theme_profiles": [{"themes": list(tags), "popularity": pop} for tags, pop in demoworld.THEME_PROFILES],
    }


# ---------------------------------------------------------------------------
# writers

_MALFORMED_ID = "TRBAD0ID"


def _write_tags(catalogue: list[DemoTrack], path: Path) -> None:
    """The TU Wien layout: lists of tags, NaN for an empty set; plus two bad rows."""
    import pandas as pd

    rows = [
        {s: (list(t.tags[s]) if t.tags[s] else np.nan) for s in ("genres", "styles", "moods", "themes")}
        for t in catalogue
    ]
    index = [t.track_id for t in catalogue]
    rows += [rows[1], {"genres": ["Pop/Rock"], "styles": np.nan, "moods": np.nan, "themes": np.nan}]
    index += [catalogue[1].track_id, _MALFORMED_ID]
    frame = pd.DataFrame(rows, index=pd.Index(index, name="track_id"))
    with atomic_path(path, suffix=".h5") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTables pickles the list cells, as the real file does
        with pd.HDFStore(tmp, mode="w") as store:
            handle = store._handle  # no creation times in the file: same seed → same bytes
            for name in ("create_array", "create_vlarray", "create_carray", "create_earray", "create_table"):
                setattr(handle, name, functools.partial(getattr(handle, name), track_times=False))
            store.put("data", frame)


def _write_metadata(catalogue: list[DemoTrack], path: Path) -> None:
    """MSD ``track_metadata.db``; the last three tracks are left out on purpose."""
    with atomic_path(path, suffix=".db") as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.execute(
                "CREATE TABLE songs (track_id text PRIMARY KEY, title text, song_id text, release text, "
                "artist_id text, artist_mbid text, artist_name text, duration real, "
                "artist_familiarity real, artist_hotttnesss real, year int, track_7digitalid int, "
                "shs_perf int, shs_work int)"
            )
            con.executemany(
                "INSERT INTO songs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        t.track_id,
                        t.title,
                        t.song_id,
                        t.release,
                        t.artist_id,
                        "",
                        t.artist_name,
                        CLIP_SECONDS,
                        0.5,
                        0.4,
                        t.year,
                        1_000_000 + i,
                        -1,
                        0,
                    )
                    for i, t in enumerate(catalogue[:-3])
                ],
            )
            con.commit()
        finally:
            con.close()


def _write_audio_job(job) -> None:
    track, path, seed, index = job
    rng = np.random.default_rng([seed, 1, index])
    ext, sr, channels, fmt, subtype, _ = FORMATS[track.audio_format]
    with atomic_path(path, suffix=f".{ext}") as tmp:
        if track.broken == "empty":
            tmp.write_bytes(b"")
        elif track.broken == "not_audio":
            tmp.write_bytes(b"this is not audio\n" * 64)
        else:
            seconds = 4.0 if track.broken == "short" else CLIP_SECONDS
            wave = render(track.sound, seconds, rng, channels)
            if sr != RENDER_SR:
                import soxr

                wave = soxr.resample(wave, RENDER_SR, sr)
            if track.broken == "silent":
                wave[:] = 0
            _write_audio(tmp, wave, sr, fmt, subtype)
            if track.broken == "truncated":
                data = tmp.read_bytes()
                tmp.write_bytes(data[: len(data) // 5])


def _write_audio(path: Path, wave: np.ndarray, sr: int, fmt: str, subtype: str) -> None:
    import soundfile as sf

    sf.write(path, wave, sr, format=fmt, subtype=subtype)
    if fmt == "OGG":
        _fix_ogg_serial(path)


def _fix_ogg_serial(path: Path, serial: int = 0x4D534454) -> None:
    """libsndfile draws the Ogg stream serial number from the clock; fix it (and
    each page's CRC) so that the same seed gives byte-identical files."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos + 27 <= len(data) and data[pos : pos + 4] == b"OggS":
        n_segments = data[pos + 26]
        size = 27 + n_segments + sum(data[pos + 27 : pos + 27 + n_segments])
        data[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        data[pos + 22 : pos + 26] = b"\0\0\0\0"
        data[pos + 22 : pos + 26] = _ogg_crc(bytes(data[pos : pos + size])).to_bytes(4, "little")
        pos += size
    path.write_bytes(bytes(data))


@functools.lru_cache(maxsize=1)
def _ogg_crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return tuple(table)


def _ogg_crc(page: bytes) -> int:
    table, crc = _ogg_crc_table(), 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

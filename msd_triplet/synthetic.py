"""The embedded MSD-like demo data set (SPEC section 2.2).

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
    the parameters, counts and the list of deliberately broken inputs.

The world is structured like AllMusic: a genre → style hierarchy, moods on a
valence/arousal plane, themes tied to moods and genres. Tags are drawn per
album and inherited by its tracks. The sound follows the tags: genre and style
set the instrument timbre, tempo and drum pattern; moods set mode, tempo,
loudness and brightness; artists add a timbre offset; albums add a production
colour (EQ, reverb, noise floor) -- the "album effect". A few broken inputs
are included on purpose (empty, truncated, too short, silent and non-audio
files, a missing file, tracks without metadata, a malformed track id, a
duplicated row). Same arguments → byte-identical files.
"""

from __future__ import annotations

import functools
import json
import shutil
import sqlite3
import string
import time
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from msd_triplet.errors import DataError
from msd_triplet.fileio import atomic_path, atomic_write_json, atomic_write_text
from msd_triplet.synthaudio import RENDER_SR, TrackSound, render

GENERATOR_VERSION = 1
DEFAULT_TRACKS = 1_500
DEFAULT_SEED = 2019
CLIP_SECONDS = 10.0

# genre: (weight, tempo, lead rolloff, attack, decay, drum pattern, drum level, distortion,
#         register, note steps, swing, pad, (valence, arousal) prior, styles)
_GENRES = {
    "Pop/Rock": (0.36, 122, 1.1, 0.01, 0.35, "backbeat", 0.8, 0.35, 60, 2, 0.0, 0.5, (0.1, 0.2),
                 ["Alternative/Indie Rock", "Heavy Metal", "Punk", "Pop-Punk", "Soft Rock",
                  "Hard Rock", "Singer/Songwriter", "Britpop"]),
    "Electronic": (0.13, 128, 0.7, 0.003, 0.12, "four_floor", 1.0, 0.1, 64, 1, 0.0, 0.6, (0.3, 0.4),
                   ["House", "Techno", "Ambient", "Trance", "Downtempo", "Drum'n'Bass"]),
    "Rap": (0.09, 92, 1.6, 0.01, 0.25, "boom_bap", 1.1, 0.0, 48, 4, 0.1, 0.4, (-0.1, 0.3),
            ["Hardcore Rap", "Gangsta Rap", "Alternative Rap", "Pop-Rap"]),
    "R&B": (0.08, 96, 1.8, 0.02, 0.6, "backbeat", 0.6, 0.0, 57, 2, 0.15, 0.8, (0.4, -0.2),
            ["Contemporary R&B", "Soul", "Funk", "Neo-Soul"]),
    "Jazz": (0.08, 150, 2.3, 0.02, 0.7, "swing_ride", 0.45, 0.0, 55, 2, 0.33, 0.9, (0.2, -0.3),
             ["Bebop", "Cool", "Fusion", "Vocal Jazz", "Smooth Jazz"]),
    "Country": (0.07, 110, 1.4, 0.002, 0.22, "train", 0.5, 0.05, 62, 2, 0.0, 0.5, (0.3, -0.1),
                ["Contemporary Country", "Honky Tonk", "Bluegrass", "Country-Pop"]),
    "Latin": (0.05, 104, 1.3, 0.003, 0.2, "clave", 0.7, 0.0, 64, 1, 0.0, 0.5, (0.6, 0.3),
              ["Salsa", "Latin Pop", "Rock en Español", "Bossa Nova"]),
    "Classical": (0.04, 72, 2.6, 0.08, 1.4, "none", 0.0, 0.0, 60, 4, 0.0, 1.0, (0.1, -0.6),
                  ["Orchestral", "Chamber Music", "Keyboard", "Opera"]),
    "Reggae": (0.04, 76, 1.5, 0.004, 0.15, "one_drop", 0.8, 0.0, 60, 2, 0.0, 0.4, (0.5, -0.2),
               ["Roots Reggae", "Dancehall", "Dub"]),
    "Blues": (0.04, 84, 1.2, 0.005, 0.4, "shuffle", 0.6, 0.25, 52, 2, 0.3, 0.5, (-0.3, -0.2),
              ["Electric Blues", "Delta Blues", "Chicago Blues"]),
}
# Cross-genre tags, attached on top of the main genre.
_HOLIDAY, _CHILDREN = "Holiday", "Children's"

# mood: (valence, arousal)
_MOODS = {
    "Aggressive": (-0.6, 0.9), "Angry": (-0.8, 0.8), "Rebellious": (-0.3, 0.8),
    "Rowdy": (0.2, 0.9), "Energetic": (0.5, 0.9), "Exuberant": (0.8, 0.8), "Happy": (0.9, 0.5),
    "Cheerful": (0.8, 0.4), "Playful": (0.7, 0.5), "Fun": (0.8, 0.6), "Sexy": (0.5, 0.3),
    "Confident": (0.5, 0.6), "Romantic": (0.6, -0.2), "Warm": (0.6, -0.4), "Gentle": (0.4, -0.7),
    "Intimate": (0.3, -0.6), "Peaceful": (0.5, -0.8), "Relaxed": (0.5, -0.6), "Dreamy": (0.3, -0.5),
    "Reflective": (0.0, -0.5), "Wistful": (-0.3, -0.4), "Melancholy": (-0.6, -0.5),
    "Sad": (-0.8, -0.4), "Bittersweet": (-0.2, -0.2), "Brooding": (-0.6, 0.0), "Dark": (-0.7, 0.2),
    "Menacing": (-0.8, 0.5), "Tense/Anxious": (-0.5, 0.6), "Yearning": (-0.2, 0.2),
    "Searching": (-0.1, 0.0), "Cerebral": (0.0, 0.1), "Sophisticated": (0.3, 0.0),
    "Uncompromising": (-0.4, 0.7), "Hypnotic": (0.0, 0.3),
}
# theme: (valence, arousal, favoured genres)
_THEMES = {
    "Party": (0.7, 0.8, ("Electronic", "Rap", "Latin")), "Day Driving": (0.4, 0.6, ("Pop/Rock", "Country")),
    "Workout": (0.3, 0.9, ("Electronic", "Rap")), "Girls Night Out": (0.7, 0.7, ("R&B", "Electronic")),
    "Christmas": (0.7, 0.2, ()), "Rainy Day": (-0.4, -0.5, ("Jazz", "Pop/Rock")),
    "Solitude": (-0.5, -0.5, ("Classical", "Blues")), "Heartache": (-0.7, -0.2, ("Country", "R&B", "Blues")),
    "In Love": (0.7, -0.1, ("R&B", "Latin")), "Drinking": (0.2, 0.3, ("Country", "Blues")),
    "Late Night": (0.1, -0.3, ("Jazz", "Electronic")), "Sunday Afternoon": (0.5, -0.5, ("Jazz", "Reggae")),
    "Relaxation": (0.4, -0.8, ("Classical", "Electronic", "Reggae")), "Reflection": (0.0, -0.4, ()),
    "Motivation": (0.6, 0.7, ("Rap", "Pop/Rock")), "Hanging Out": (0.5, 0.2, ("Reggae", "Rap")),
}
_ALBUM_WORDS = ["Midnight", "Electric", "Golden", "Silent", "Broken", "Northern", "Velvet", "Paper",
                "Summer", "Neon", "Hollow", "Wild", "Glass", "River", "Static", "Echo", "Iron",
                "Blue", "Distant", "Burning", "Lights", "Hearts", "Roads", "Dreams", "Signals",
                "Waves", "Stories", "Machines", "Gardens", "Ghosts"]
_SHARED_TITLES = ["Greatest Hits", "Live", "Christmas Album", "Anthology"]
# Deliberately broken inputs: (kind, what goes wrong).
BROKEN_KINDS = ("empty", "truncated", "short", "silent", "not_audio", "missing")
# name: (extension, sample rate, channels, libsndfile format, subtype, share of tracks)
_FORMATS = {
    "mp3": ("mp3", 44_100, 2, "MP3", "MPEG_LAYER_III", 0.15),  # like the 7digital previews
    "mp3_22k": ("mp3", 22_050, 1, "MP3", "MPEG_LAYER_III", 0.20),
    "wav": ("wav", 22_050, 1, "WAV", "PCM_16", 0.25),
    "flac": ("flac", 22_050, 1, "FLAC", "PCM_16", 0.20),
    "ogg": ("ogg", 32_000, 1, "OGG", "VORBIS", 0.20),
}


@dataclass(frozen=True)
class DemoTrack:
    """One track of the catalogue: ids, tags and how it sounds."""

    track_id: str
    song_id: str
    title: str
    artist_id: str
    artist_name: str
    release: str
    year: int
    tags: dict  # tag set -> tuple of tags (may be empty)
    sound: TrackSound
    audio_format: str  # key of _FORMATS
    broken: Optional[str] = None


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


def make_demo_data(out: str | Path, tracks: int = DEFAULT_TRACKS, seed: int = DEFAULT_SEED,
                   workers: Optional[int] = None, force: bool = False,
                   progress: Optional[Callable[[int, int], None]] = None) -> DemoSummary:
    """Write the synthetic MSD-like data set into ``out``.

    Parameters
    ----------
    out : path
        Target folder. A finished data set with other parameters is an error
        unless ``force``; an unfinished one (no ``demo_info.json``) is resumed:
        audio files already written (atomically) are kept.
    tracks : int
        Number of tagged tracks (>= 60); about 70 % survive the intersection filter.
    seed : int
        Decides the whole catalogue and every waveform.
    workers : int, optional
        Processes that render audio (default: number of CPUs, at most 4).
    progress : callable(done, total), optional
        Called after each audio file.
    """
    if tracks < 60:
        raise DataError(f"make-demo-data: --tracks must be >= 60 (>= 3 artists per split), got {tracks}")
    out = Path(out)
    info_path = out / "demo_info.json"
    params = {"generator_version": GENERATOR_VERSION, "tracks": tracks, "seed": seed}
    if info_path.exists() and not force:
        try:
            old = json.loads(info_path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{info_path}: unreadable ({exc}); delete it or pass --force") from None
        if {k: old.get(k) for k in params} != params:
            raise DataError(f"{out}: holds a demo data set made with {({k: old.get(k) for k in params})}, "
                            f"not {params}; choose another --out or pass --force")
    start = time.perf_counter()
    catalogue = build_catalogue(tracks, seed)
    if force and (out / "audio").is_dir():
        shutil.rmtree(out / "audio")  # stale files of another seed would linger
    out.mkdir(parents=True, exist_ok=True)
    _write_tags(catalogue, out / "msd_amglabels_all.h5")
    _write_metadata(catalogue, out / "track_metadata.db")
    paths = {t.track_id: f"audio/{t.track_id[2]}/{t.track_id[3]}/{t.track_id}.{_FORMATS[t.audio_format][0]}"
             for t in catalogue}
    rows = ["track_id,path"] + [f"{tid},{p}" for tid, p in paths.items()]
    atomic_write_text(out / "audio_paths.csv", "\n".join(rows) + "\n")

    todo = [(t, out / paths[t.track_id], seed, i) for i, t in enumerate(catalogue)
            if t.broken != "missing" and (force or not (out / paths[t.track_id]).exists())]
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

    broken = {t.track_id: t.broken for t in catalogue if t.broken}
    seconds = time.perf_counter() - start
    artists = {t.artist_id for t in catalogue}
    albums = {(t.artist_id, t.release) for t in catalogue}
    atomic_write_json(info_path, {
        **params, "clip_seconds": CLIP_SECONDS, "n_tracks": len(catalogue), "n_artists": len(artists),
        "n_albums": len(albums), "broken": broken,
        "extra_rows": {"malformed_track_id": _MALFORMED_ID, "duplicated_row": catalogue[1].track_id,
                       "no_metadata": [t.track_id for t in catalogue[-3:]]},
    })
    return DemoSummary(out, len(catalogue), len(artists), len(albums), broken, seconds, len(todo))


# ---------------------------------------------------------------------------
# the catalogue: artists → albums → tracks with tags and sound parameters


def build_catalogue(n_tracks: int, seed: int) -> list[DemoTrack]:
    """Draw the whole catalogue (no audio) for ``n_tracks`` tracks."""
    rng = np.random.default_rng([seed, 0])
    genre_names = list(_GENRES)
    genre_p = np.array([_GENRES[g][0] for g in genre_names])
    genre_p /= genre_p.sum()
    ids = _UniqueIds(rng)
    catalogue: list[DemoTrack] = []
    shared_titles = iter(_SHARED_TITLES * (n_tracks // 100 + 1))
    while len(catalogue) < n_tracks:
        genre = genre_names[rng.choice(len(genre_names), p=genre_p)]
        artist = _draw_artist(rng, genre, ids.next("AR"))
        for a in range(int(rng.integers(1, 5))):
            title = next(shared_titles) if rng.random() < 0.08 else _album_title(rng)
            album = _draw_album(rng, artist, genre)
            for t in range(int(1 + rng.poisson(5))):
                if len(catalogue) == n_tracks:
                    break
                catalogue.append(_draw_track(rng, ids, artist, album, title, t))
    # Broken inputs, at fixed places chosen by the seed; never the first two tracks
    # (the duplicated row) nor the last three (no metadata).
    picks = rng.choice(np.arange(2, n_tracks - 3), size=len(BROKEN_KINDS) * 2, replace=False)
    for kind, i in zip(BROKEN_KINDS * 2, picks):
        t = catalogue[i]
        fmt = {"empty": "mp3", "truncated": "mp3", "short": "wav", "silent": "flac",
               "not_audio": "ogg", "missing": "mp3"}[kind]
        catalogue[i] = replace(t, broken=kind, audio_format=fmt)
    return catalogue


class _UniqueIds:
    """MSD-style ids: two letters + 16 upper-case letters/digits, never repeated."""

    _ALPHABET = np.array(list(string.ascii_uppercase + string.digits))

    def __init__(self, rng: np.random.Generator):
        self._rng, self._seen = rng, set()

    def next(self, prefix: str) -> str:
        while True:
            new = prefix + "".join(self._rng.choice(self._ALPHABET, 16))
            if new not in self._seen:
                self._seen.add(new)
                return new


@dataclass(frozen=True)
class _Artist:
    artist_id: str
    name: str
    styles: tuple[str, ...]
    harmonics: np.ndarray
    register_offset: float
    tempo_factor: float
    valence_arousal: np.ndarray


@dataclass(frozen=True)
class _Album:
    tags: dict
    valence_arousal: np.ndarray
    eq: tuple
    reverb_wet: float
    reverb_rt60: float
    noise_db: float
    noise_cutoff_hz: float
    year: int


def _draw_artist(rng, genre, artist_id) -> _Artist:
    styles = _GENRES[genre][-1]
    zipf = 1.0 / np.arange(1, len(styles) + 1)
    k = int(rng.integers(1, 4))
    own = rng.choice(len(styles), size=min(k, len(styles)), replace=False, p=zipf / zipf.sum())
    rolloff = _GENRES[genre][2]
    harmonics = np.arange(1, 11) ** -rolloff * np.exp(rng.normal(0, 0.25, 10))
    name = f"{rng.choice(_ALBUM_WORDS)} {rng.choice(_ALBUM_WORDS)}"
    prior = np.array(_GENRES[genre][12]) + rng.normal(0, 0.35, 2)
    return _Artist(artist_id, name, tuple(styles[i] for i in own), harmonics,
                   float(rng.normal(0, 2.5)), float(np.exp(rng.normal(0, 0.05))), prior)


def _draw_album(rng, artist: _Artist, genre: str) -> _Album:
    va = np.clip(artist.valence_arousal + rng.normal(0, 0.3, 2), -1, 1)
    genres = [genre]
    if rng.random() < 0.12:
        genres.append(str(rng.choice([g for g in _GENRES if g != genre])))
    if rng.random() < 0.03:
        genres.append(_CHILDREN)
    styles_all = _GENRES[genre][-1]
    n_styles = 0 if rng.random() < 0.06 else min(1 + rng.poisson(0.8), 4)
    pool = list(artist.styles) + [s for s in styles_all if s not in artist.styles]
    w = np.array([4.0] * len(artist.styles) + [1.0] * (len(pool) - len(artist.styles)))
    styles = [str(s) for s in rng.choice(pool, size=min(n_styles, len(pool)), replace=False, p=w / w.sum())]
    moods = _near(rng, _MOODS, va, 0 if rng.random() < 0.10 else min(1 + rng.poisson(2.5), 8), 0.12)
    theme_w = {name: (v, a) for name, (v, a, _) in _THEMES.items()}
    bonus = {name: 3.0 if genre in fav else 1.0 for name, (_, _, fav) in _THEMES.items()}
    n_themes = 0 if rng.random() < 0.22 else min(1 + rng.poisson(0.6), 3)
    themes = _near(rng, theme_w, va, n_themes, 0.25, bonus)
    if "Christmas" in themes and rng.random() < 0.7:
        genres.append(_HOLIDAY)
    eq = tuple((float(np.exp(rng.uniform(np.log(120), np.log(6000)))), float(rng.normal(0, 3.5)),
                float(rng.uniform(0.7, 2.0))) for _ in range(2))
    return _Album(
        tags={"genres": tuple(genres), "styles": tuple(styles), "moods": tuple(moods),
              "themes": tuple(themes)},
        valence_arousal=va, eq=eq, reverb_wet=float(rng.uniform(0.0, 0.35)),
        reverb_rt60=float(rng.uniform(0.2, 1.6)), noise_db=float(rng.uniform(-65, -40)),
        noise_cutoff_hz=float(np.exp(rng.uniform(np.log(800), np.log(11000)))),
        year=int(rng.integers(1960, 2011)))


def _near(rng, points: dict, va: np.ndarray, k: int, width: float, bonus: Optional[dict] = None):
    """Draw ``k`` names whose (valence, arousal) lie near ``va``."""
    if k == 0:
        return []
    names = list(points)
    d2 = np.array([np.sum((np.array(points[n][:2]) - va) ** 2) for n in names])
    w = np.exp(-d2 / width) * np.array([(bonus or {}).get(n, 1.0) for n in names])
    return [names[i] for i in rng.choice(len(names), size=k, replace=False, p=w / w.sum())]


def _draw_track(rng, ids: _UniqueIds, artist: _Artist, album: _Album, title: str, number: int):
    g = _GENRES[album.tags["genres"][0]]
    _, tempo, _, attack, decay, pattern, drums, dist, register, steps, swing, pad, _, _ = g
    tempo *= artist.tempo_factor
    for style in album.tags["styles"]:  # each style nudges the sound its own fixed way
        s = np.random.default_rng(zlib.crc32(style.encode()))
        tempo *= np.exp(s.normal(0, 0.12))
        dist = float(np.clip(dist + s.normal(0, 0.25), 0, 1))
        decay *= np.exp(s.normal(0, 0.4))
        register += s.integers(-4, 5)
        if s.random() < 0.3:
            steps = int(s.choice([1, 2, 4]))
        if s.random() < 0.25 and pattern != "none":
            pattern = str(s.choice(["backbeat", "four_floor", "boom_bap", "train", "shuffle"]))
    valence, arousal = album.valence_arousal + rng.normal(0, 0.15, 2)
    sound = TrackSound(
        tempo=float(np.clip(tempo * (1 + 0.18 * arousal) * np.exp(rng.normal(0, 0.03)), 50, 200)),
        swing=float(swing), pattern=pattern, drum_level=float(drums * (0.8 + 0.3 * (arousal + 1) / 2)),
        harmonics=tuple(float(h) for h in artist.harmonics * np.exp(rng.normal(0, 0.1, 10))),
        attack=float(attack), decay=float(decay), note_steps=int(steps),
        register=float(register + artist.register_offset), pad_level=float(pad), bass_level=0.8,
        distortion=float(np.clip(dist + 0.15 * max(arousal, 0), 0, 1)),
        mode="major" if valence + rng.normal(0, 0.25) > 0 else "minor", key=int(rng.integers(0, 12)),
        brightness_hz=float(2500 * 2 ** (1.6 * (arousal + 0.5 * valence) + rng.normal(0, 0.2))),
        loudness_db=float(-22 + 8 * arousal + rng.normal(0, 1.0)), eq=album.eq,
        reverb_wet=album.reverb_wet, reverb_rt60=album.reverb_rt60, noise_db=album.noise_db,
        noise_cutoff_hz=album.noise_cutoff_hz, bells="Christmas" in album.tags["themes"])
    names = list(_FORMATS)
    fmt = names[rng.choice(len(names), p=[_FORMATS[n][-1] for n in names])]
    return DemoTrack(
        track_id=ids.next("TR"), song_id=ids.next("SO"), title=f"Track {number + 1}",
        artist_id=artist.artist_id, artist_name=artist.name, release=title, year=album.year,
        tags=album.tags, sound=sound, audio_format=fmt)


def _album_title(rng) -> str:
    return f"{rng.choice(_ALBUM_WORDS)} {rng.choice(_ALBUM_WORDS)}"


# ---------------------------------------------------------------------------
# writers

_MALFORMED_ID = "TRBAD0ID"


def _write_tags(catalogue: list[DemoTrack], path: Path) -> None:
    """The TU Wien layout: lists of tags, NaN for an empty set; plus two bad rows."""
    import pandas as pd

    rows = [{s: (list(t.tags[s]) if t.tags[s] else np.nan) for s in ("genres", "styles", "moods", "themes")}
            for t in catalogue]
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
                "shs_perf int, shs_work int)")
            con.executemany(
                "INSERT INTO songs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(t.track_id, t.title, t.song_id, t.release, t.artist_id, "", t.artist_name,
                  CLIP_SECONDS, 0.5, 0.4, t.year, 1_000_000 + i, -1, 0)
                 for i, t in enumerate(catalogue[:-3])])
            con.commit()
        finally:
            con.close()


def _write_audio_job(job) -> None:
    track, path, seed, index = job
    rng = np.random.default_rng([seed, 1, index])
    ext, sr, channels, fmt, subtype, _ = _FORMATS[track.audio_format]
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
    while pos + 27 <= len(data) and data[pos:pos + 4] == b"OggS":
        n_segments = data[pos + 26]
        size = 27 + n_segments + sum(data[pos + 27: pos + 27 + n_segments])
        data[pos + 14: pos + 18] = serial.to_bytes(4, "little")
        data[pos + 22: pos + 26] = b"\0\0\0\0"
        data[pos + 22: pos + 26] = _ogg_crc(bytes(data[pos: pos + size])).to_bytes(4, "little")
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

"""The catalogue of the demo world: artists → albums → tracks, their tags and how each track sounds.

:func:`build_catalogue` draws it from a seed and :class:`WorldParams`; the
tables it draws from (genres, styles, moods, themes, profiles) are in
:mod:`msd_triplet.demoworld`. Tags are drawn per album and inherited by its
tracks, as on AllMusic.
"""

from __future__ import annotations

import dataclasses
import string
import zlib
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from msd_triplet import demoworld as world
from msd_triplet.errors import DataError
from msd_triplet.synthaudio import TrackSound

ALBUM_WORDS = (
    "Midnight",
    "Electric",
    "Golden",
    "Silent",
    "Broken",
    "Northern",
    "Velvet",
    "Paper",
    "Summer",
    "Neon",
    "Hollow",
    "Wild",
    "Glass",
    "River",
    "Static",
    "Echo",
    "Iron",
    "Blue",
    "Distant",
    "Burning",
    "Lights",
    "Hearts",
    "Roads",
    "Dreams",
    "Signals",
    "Waves",
    "Stories",
    "Machines",
    "Gardens",
    "Ghosts",
)
SHARED_TITLES = ("Greatest Hits", "Live", "Christmas Album", "Anthology")
#: Deliberately broken inputs, each used twice, with the format of the broken file.
BROKEN_KINDS = ("empty", "truncated", "short", "silent", "not_audio", "missing")
_BROKEN_FORMAT = {
    "empty": "mp3",
    "truncated": "mp3",
    "short": "wav",
    "silent": "flac",
    "not_audio": "ogg",
    "missing": "mp3",
}
# name: (extension, sample rate, channels, libsndfile format, subtype, share of tracks)
FORMATS = {
    "mp3": ("mp3", 44_100, 2, "MP3", "MPEG_LAYER_III", 0.15),  # like the 7digital previews
    "mp3_22k": ("mp3", 22_050, 1, "MP3", "MPEG_LAYER_III", 0.20),
    "wav": ("wav", 22_050, 1, "WAV", "PCM_16", 0.25),
    "flac": ("flac", 22_050, 1, "FLAC", "PCM_16", 0.20),
    "ogg": ("ogg", 32_000, 1, "OGG", "VORBIS", 0.20),
}


@dataclass(frozen=True)
class WorldParams:
    """The knobs of the demo world; written to ``demo_info.json`` with what they produced."""

    #: scales the artist's own sound: lead timbre (log-amplitude sd 0.25), register (sd 2.5
    #: semitones) and tempo (log sd 0.05)
    artist_strength: float = 1.0
    #: scales the album's production: two EQ bands (gain sd 3.5 dB), reverb (wet 0-0.35) and
    #: noise floor (-65 dB up to -40 dB)
    album_strength: float = 1.0
    #: level of every theme layer relative to the band, dB
    layer_db: float = -10.0
    #: how strongly an album's valence/arousal (from genre, styles, artist) steers which mood and
    #: theme profiles it draws (0: independent of genre and style)
    coupling: float = 1.0
    #: chance that an album adds one mood (and, separately, one theme) outside its profile
    profile_variation: float = 0.15
    #: chance that an album has no mood / no theme tag (such tracks fail the intersection filter)
    no_moods: float = 0.04
    no_themes: float = 0.10

    def __post_init__(self) -> None:
        for name in ("artist_strength", "album_strength", "coupling"):
            if not getattr(self, name) >= 0:
                raise DataError(f"demo world: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("profile_variation", "no_moods", "no_themes"):
            if not 0 <= getattr(self, name) <= 1:
                raise DataError(f"demo world: {name} must be in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    audio_format: str  # key of FORMATS
    broken: Optional[str] = None

    @property
    def album(self) -> tuple[str, str]:
        return self.artist_id, self.release


def build_catalogue(n_tracks: int, seed: int, params: WorldParams = WorldParams()) -> list[DemoTrack]:
    """Draw the whole catalogue (no audio) for ``n_tracks`` tracks."""
    rng = np.random.default_rng([seed, 0])
    genre_names = list(world.GENRES)
    genre_p = np.array([world.GENRES[g].weight for g in genre_names])
    ids = _UniqueIds(rng)
    catalogue: list[DemoTrack] = []
    shared_titles = iter(SHARED_TITLES * (n_tracks // 100 + 1))
    while len(catalogue) < n_tracks:
        genre = genre_names[rng.choice(len(genre_names), p=genre_p / genre_p.sum())]
        artist = _draw_artist(rng, genre, ids.next("AR"), params)
        titles: set[str] = set()  # an artist's albums have distinct titles (album = artist + title)
        for _ in range(int(rng.integers(1, 5))):
            title = next(shared_titles) if rng.random() < 0.08 else _album_title(rng)
            while title in titles:
                title = _album_title(rng)
            titles.add(title)
            album = _draw_album(rng, artist, genre, params)
            for number in range(int(1 + rng.poisson(5))):
                if len(catalogue) == n_tracks:
                    break
                catalogue.append(_draw_track(rng, ids, artist, album, title, number, params))
    # Broken inputs, at fixed places chosen by the seed; never the first two tracks
    # (the duplicated row) nor the last three (no metadata).
    picks = rng.choice(np.arange(2, n_tracks - 3), size=len(BROKEN_KINDS) * 2, replace=False)
    for kind, i in zip(BROKEN_KINDS * 2, picks):
        catalogue[i] = replace(catalogue[i], broken=kind, audio_format=_BROKEN_FORMAT[kind])
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
    eq: tuple
    reverb_wet: float
    reverb_rt60: float
    noise_db: float
    noise_cutoff_hz: float
    year: int


def _leaning(styles) -> np.ndarray:
    points = [world.STYLE_LEANING.get(s, (0.0, 0.0)) for s in styles]
    return np.mean(points, axis=0) if points else np.zeros(2)


def _draw_artist(rng, genre: str, artist_id: str, params: WorldParams) -> _Artist:
    g = world.GENRES[genre]
    zipf = 1.0 / np.arange(1, len(g.styles) + 1)
    own = rng.choice(
        len(g.styles), size=min(int(rng.integers(1, 4)), len(g.styles)), replace=False, p=zipf / zipf.sum()
    )
    styles = tuple(g.styles[i] for i in own)
    s = params.artist_strength
    harmonics = np.arange(1, 11) ** -g.rolloff * np.exp(rng.normal(0, 0.25 * s, 10))
    name = f"{rng.choice(ALBUM_WORDS)} {rng.choice(ALBUM_WORDS)}"
    va = np.array(g.valence_arousal) + _leaning(styles) + rng.normal(0, 0.3, 2)
    return _Artist(
        artist_id, name, styles, harmonics, float(rng.normal(0, 2.5 * s)), float(np.exp(rng.normal(0, 0.05 * s))), va
    )


def _pick_profile(rng, profiles, va: np.ndarray, coupling: float, bonus=None) -> tuple[str, ...]:
    """A profile drawn by popularity × closeness of its valence/arousal to ``va``."""
    centres = np.array([world.profile_valence_arousal(tags) for tags, _ in profiles])
    w = np.array([pop for _, pop in profiles]) * np.exp(-coupling * np.sum((centres - va) ** 2, axis=1) / 0.5)
    if bonus is not None:
        w = w * np.array([bonus(tags) for tags, _ in profiles])
    return profiles[int(rng.choice(len(profiles), p=w / w.sum()))][0]


def _vary(rng, tags: tuple[str, ...], vocabulary, chance: float) -> tuple[str, ...]:
    """With probability ``chance`` add one tag of ``vocabulary`` outside ``tags``; sorted."""
    if rng.random() < chance:
        extra = [t for t in vocabulary if t not in tags]
        tags = tags + (str(rng.choice(extra)),)
    return tuple(sorted(tags))


def _draw_album(rng, artist: _Artist, genre: str, params: WorldParams) -> _Album:
    g = world.GENRES[genre]
    genres = [genre]
    if rng.random() < 0.10:
        genres.append(str(rng.choice([x for x in world.GENRES if x != genre])))
    if rng.random() < 0.03:
        genres.append(world.CHILDREN)
    n_styles = 0 if rng.random() < 0.05 else min(1 + rng.poisson(0.4), 3)
    pool = list(artist.styles) + [s for s in g.styles if s not in artist.styles]
    w = np.array([5.0] * len(artist.styles) + [1.0] * (len(pool) - len(artist.styles)))
    styles = sorted(str(s) for s in rng.choice(pool, size=min(n_styles, len(pool)), replace=False, p=w / w.sum()))
    va = artist.valence_arousal + 0.5 * _leaning(styles) + rng.normal(0, 0.25, 2)
    moods: tuple[str, ...] = ()
    if rng.random() >= params.no_moods:
        moods = _pick_profile(rng, world.MOOD_PROFILES, va, params.coupling)
        moods = _vary(rng, moods, list(world.MOODS), params.profile_variation)
    themes: tuple[str, ...] = ()
    if rng.random() >= params.no_themes:

        def favoured(tags) -> float:
            return 1.0 + params.coupling * sum(genre in world.THEMES[t][2] for t in tags)

        themes = _pick_profile(rng, world.THEME_PROFILES, va, params.coupling, favoured)
        themes = _vary(rng, themes, list(world.THEMES), params.profile_variation)
    if "Christmas" in themes and rng.random() < 0.7:
        genres.append(world.HOLIDAY)
    s = params.album_strength
    eq = tuple(
        (
            float(np.exp(rng.uniform(np.log(120), np.log(6000)))),
            float(rng.normal(0, 3.5 * s)),
            float(rng.uniform(0.7, 2.0)),
        )
        for _ in range(2)
    )
    return _Album(
        tags={"genres": tuple(genres), "styles": tuple(styles), "moods": moods, "themes": themes},
        eq=eq,
        reverb_wet=float(rng.uniform(0.0, 0.35 * s)),
        reverb_rt60=float(rng.uniform(0.2, 1.6)),
        noise_db=float(-65 + 25 * s * rng.uniform(0, 1)),
        noise_cutoff_hz=float(np.exp(rng.uniform(np.log(800), np.log(11000)))),
        year=int(rng.integers(1960, 2011)),
    )


def mood_effects(moods) -> dict[str, float]:
    """The summed effects (:data:`msd_triplet.demoworld.MOOD_EFFECTS`) of a set of moods."""
    total = dict.fromkeys(world.MOOD_EFFECTS, 0.0)
    for mood in moods:
        for effect, amount in world.MOODS[mood].effects.items():
            total[effect] += amount
    return total


def _draw_track(
    rng, ids: _UniqueIds, artist: _Artist, album: _Album, title: str, number: int, params: WorldParams
) -> DemoTrack:
    g = world.GENRES[album.tags["genres"][0]]
    tempo, dist, decay, register, steps, pattern = g.tempo, g.distortion, g.decay, g.register, g.steps, g.pattern
    for style in album.tags["styles"]:  # each style nudges the sound its own fixed way
        s = np.random.default_rng(zlib.crc32(style.encode()))
        tempo *= np.exp(s.normal(0, 0.12))
        dist = float(np.clip(dist + s.normal(0, 0.25), 0, 1))
        decay *= np.exp(s.normal(0, 0.4))
        register += int(s.integers(-4, 5))
        if s.random() < 0.3:
            steps = int(s.choice([1, 2, 4]))
        if s.random() < 0.25 and pattern != "none":
            pattern = str(s.choice(["backbeat", "four_floor", "boom_bap", "train", "shuffle"]))
    fx = mood_effects(album.tags["moods"])
    mode = ("major" if fx["mode"] > 0 else "minor") if fx["mode"] else str(rng.choice(["major", "minor"]))
    sound = TrackSound(
        tempo=float(np.clip(tempo * artist.tempo_factor * 2 ** fx["tempo"] * np.exp(rng.normal(0, 0.03)), 45, 220)),
        swing=float(g.swing),
        pattern=pattern,
        drum_level=float(g.drums * 2 ** fx["drums"]),
        harmonics=tuple(float(h) for h in artist.harmonics * np.exp(rng.normal(0, 0.1, 10))),
        attack=float(g.attack),
        decay=float(decay),
        note_steps=float(steps * 2 ** -fx["density"]),
        articulation=float(2 ** fx["artic"]),
        register=float(register + artist.register_offset + fx["register"]),
        pad_level=float(g.pad * 2 ** fx["pad"]),
        bass_level=0.8,
        distortion=float(np.clip(dist + fx["distortion"], 0, 1)),
        mode=mode,
        key=int(rng.integers(0, 12)),
        brightness_hz=float(g.brightness * 2 ** (fx["bright"] + rng.normal(0, 0.15))),
        body=g.body,
        loudness_db=float(-20 + fx["loud"] + rng.normal(0, 1.0)),
        tremolo=float(np.clip(fx["tremolo"], 0, 0.9)),
        vibrato=float(fx["vibrato"]),
        ostinato=bool(fx["ostinato"] > 0),
        layers=tuple(album.tags["themes"]),
        layer_db=params.layer_db,
        eq=album.eq,
        reverb_wet=album.reverb_wet,
        reverb_rt60=album.reverb_rt60,
        noise_db=album.noise_db,
        noise_cutoff_hz=album.noise_cutoff_hz,
    )
    names = list(FORMATS)
    fmt = names[rng.choice(len(names), p=[FORMATS[n][-1] for n in names])]
    return DemoTrack(
        track_id=ids.next("TR"),
        song_id=ids.next("SO"),
        title=f"Track {number + 1}",
        artist_id=artist.artist_id,
        artist_name=artist.name,
        release=title,
        year=album.year,
        tags=album.tags,
        sound=sound,
        audio_format=fmt,
    )


def _album_title(rng) -> str:
    return f"{rng.choice(ALBUM_WORDS)} {rng.choice(ALBUM_WORDS)}"

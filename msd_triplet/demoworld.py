"""The vocabulary and the sound of the embedded demo world (second version).

What a listener of the demo data set hears, tag by tag. :mod:`msd_triplet.synthetic`
draws the catalogue from these tables and :mod:`msd_triplet.synthaudio` renders it.

* **Genres** set the band: lead timbre, tempo, drum pattern, register, note
  rate, swing, pad and distortion. **Styles** are nested in genres and nudge
  that sound, each in its own fixed way.
* **Moods** change how the music is played, each with its own signature that
  does not depend on genre, style, artist or album: tempo, mode, brightness,
  loudness, articulation (staccato / legato), note density, register, tremolo,
  vibrato, pad, drums, a repeated motif. An album's moods add up.
* **Themes** add an instrument or texture layer each (sleigh bells, hand claps,
  rain, a drone, a string swell, ...), also independent of everything else.
* Tags are drawn per album from shared **profiles** (sets of 1-3 moods, 1-2
  themes), so many albums of different artists and genres share a mood set
  and a theme set, as AllMusic albums do; a profile's odds depend on the
  album's valence/arousal, which its genre, styles and artist lean towards, so
  some styles make some moods and themes likelier (LSI over several sets then
  finds topics that span the sets).
* **Artists** (lead timbre, register, tempo) and **albums** (EQ, reverb,
  noise floor) add a nuisance of controlled strength.
"""

from __future__ import annotations

from typing import NamedTuple


class Genre(NamedTuple):
    weight: float  # share of artists
    tempo: float  # beats per minute
    rolloff: float  # lead harmonics fall as n ** -rolloff
    attack: float  # seconds
    decay: float  # seconds
    pattern: str  # drum template (synthaudio.DRUM_PATTERNS)
    drums: float  # drum level
    distortion: float  # 0..1
    register: int  # MIDI note of the melody's tonic
    steps: int  # sixteenth notes per melody note
    swing: float  # 0..0.33
    pad: float  # pad level
    brightness: float  # cut-off of the band's low-pass, Hz (moods move it by octaves)
    body: tuple[tuple[float, float, float], ...]  # the band's resonances (centre Hz, gain dB, Q)
    valence_arousal: tuple[float, float]  # where the genre leans; moods and themes follow weakly
    styles: tuple[str, ...]


GENRES: dict[str, Genre] = {
    "Pop/Rock": Genre(
        0.36,
        122,
        1.1,
        0.01,
        0.35,
        "backbeat",
        0.8,
        0.35,
        60,
        2,
        0.0,
        0.5,
        3500,
        ((900, 6, 1.0), (2500, 5, 1.5)),
        (0.1, 0.3),
        ("Alternative/Indie Rock", "Heavy Metal", "Punk", "Soft Rock", "Hard Rock", "Singer/Songwriter", "Britpop"),
    ),
    "Electronic": Genre(
        0.13,
        128,
        0.7,
        0.003,
        0.12,
        "four_floor",
        1.0,
        0.1,
        64,
        1,
        0.0,
        0.6,
        6500,
        ((70, 8, 0.8), (8000, 6, 1.0)),
        (0.2, 0.4),
        ("House", "Techno", "Ambient", "Trance", "Downtempo"),
    ),
    "Rap": Genre(
        0.09,
        92,
        1.6,
        0.01,
        0.25,
        "boom_bap",
        1.1,
        0.0,
        48,
        4,
        0.1,
        0.4,
        2200,
        ((60, 9, 0.7), (300, -4, 1.0)),
        (-0.1, 0.4),
        ("Hardcore Rap", "Gangsta Rap", "Alternative Rap", "Pop-Rap"),
    ),
    "R&B": Genre(
        0.08,
        96,
        1.8,
        0.02,
        0.6,
        "backbeat",
        0.6,
        0.0,
        57,
        2,
        0.15,
        0.8,
        2800,
        ((150, 5, 1.0), (3500, 4, 1.0)),
        (0.4, -0.1),
        ("Contemporary R&B", "Soul", "Funk", "Neo-Soul"),
    ),
    "Jazz": Genre(
        0.08,
        150,
        2.3,
        0.02,
        0.7,
        "swing_ride",
        0.45,
        0.0,
        55,
        2,
        0.33,
        0.9,
        2000,
        ((400, 7, 0.8), (6000, -6, 0.7)),
        (0.1, -0.3),
        ("Bebop", "Cool", "Fusion", "Vocal Jazz"),
    ),
    "Country": Genre(
        0.07,
        110,
        1.4,
        0.002,
        0.22,
        "train",
        0.5,
        0.05,
        62,
        2,
        0.0,
        0.5,
        4200,
        ((2800, 7, 1.5), (200, -3, 1.0)),
        (0.2, 0.0),
        ("Contemporary Country", "Honky Tonk", "Bluegrass", "Country-Pop"),
    ),
    "Latin": Genre(
        0.05,
        104,
        1.3,
        0.003,
        0.2,
        "clave",
        0.7,
        0.0,
        64,
        1,
        0.0,
        0.5,
        5000,
        ((1500, 6, 1.2), (5000, 4, 1.0)),
        (0.5, 0.3),
        ("Salsa", "Latin Pop", "Rock en Español", "Bossa Nova"),
    ),
    "Classical": Genre(
        0.05,
        72,
        2.6,
        0.08,
        1.4,
        "none",
        0.0,
        0.0,
        60,
        4,
        0.0,
        1.0,
        1600,
        ((700, 4, 0.6), (100, -6, 0.7)),
        (0.0, -0.5),
        ("Orchestral", "Chamber Music", "Keyboard"),
    ),
    "Reggae": Genre(
        0.04,
        76,
        1.5,
        0.004,
        0.15,
        "one_drop",
        0.8,
        0.0,
        60,
        2,
        0.0,
        0.4,
        3000,
        ((100, 7, 1.0), (1200, 5, 2.0)),
        (0.4, -0.2),
        ("Roots Reggae", "Dancehall", "Dub"),
    ),
    "Blues": Genre(
        0.05,
        84,
        1.2,
        0.005,
        0.4,
        "shuffle",
        0.6,
        0.25,
        52,
        2,
        0.3,
        0.5,
        2500,
        ((600, 6, 1.0), (1800, 5, 1.5)),
        (-0.3, -0.1),
        ("Electric Blues", "Delta Blues", "Chicago Blues"),
    ),
}
#: Cross-genre tags, added on top of the main genre (Holiday goes with the Christmas theme).
HOLIDAY, CHILDREN = "Holiday", "Children's"

#: Styles that lean towards a mood region (valence, arousal offsets); other styles lean nowhere.
STYLE_LEANING: dict[str, tuple[float, float]] = {
    "Heavy Metal": (-0.6, 0.6),
    "Punk": (-0.2, 0.6),
    "Hard Rock": (0.0, 0.5),
    "Soft Rock": (0.3, -0.5),
    "Singer/Songwriter": (-0.2, -0.5),
    "Techno": (-0.2, 0.5),
    "Ambient": (0.2, -0.8),
    "Trance": (0.4, 0.5),
    "Downtempo": (0.1, -0.5),
    "Hardcore Rap": (-0.6, 0.5),
    "Gangsta Rap": (-0.5, 0.3),
    "Pop-Rap": (0.5, 0.3),
    "Soul": (0.3, -0.2),
    "Funk": (0.5, 0.5),
    "Cool": (0.0, -0.5),
    "Vocal Jazz": (0.3, -0.4),
    "Honky Tonk": (0.3, 0.3),
    "Salsa": (0.6, 0.6),
    "Bossa Nova": (0.4, -0.5),
    "Orchestral": (0.0, 0.2),
    "Chamber Music": (0.1, -0.5),
    "Dancehall": (0.5, 0.5),
    "Dub": (0.0, -0.4),
    "Delta Blues": (-0.5, -0.3),
}


class Mood(NamedTuple):
    valence_arousal: tuple[float, float]
    effects: dict  # effect name -> amount (see MOOD_EFFECTS)


#: What one unit of each mood effect does to the performance.
MOOD_EFFECTS: dict[str, str] = {
    "tempo": "log2 factor on the tempo",
    "mode": "+ major / - minor (the sum of an album's moods decides; 0 leaves it to chance)",
    "bright": "octaves on the cut-off of the brightness low-pass",
    "loud": "dB on the loudness",
    "artic": "log2 factor on note length and decay (- staccato, + legato)",
    "density": "log2 factor on the melody's note rate",
    "register": "semitones on the melody, pad and bass",
    "tremolo": "depth of a 7 Hz amplitude modulation of the band",
    "vibrato": "semitones of a 5.5 Hz pitch modulation of lead and pad",
    "pad": "log2 factor on the pad level",
    "drums": "log2 factor on the drum level",
    "distortion": "added to the distortion (0..1)",
    "ostinato": "the melody repeats one four-note motif",
}

MOODS: dict[str, Mood] = {
    "Energetic": Mood((0.4, 0.9), {"tempo": 0.35, "drums": 0.6}),
    "Relaxed": Mood((0.4, -0.7), {"tempo": -0.35, "drums": -1.0}),
    "Happy": Mood((0.9, 0.4), {"mode": 1.0, "register": 3.0, "bright": 0.5}),
    "Sad": Mood((-0.8, -0.4), {"mode": -1.0, "tempo": -0.15, "artic": 0.4, "bright": -0.5, "loud": -2.0}),
    "Cheerful": Mood((0.8, 0.3), {"bright": 1.0, "mode": 0.5, "drums": 0.3}),
    "Warm": Mood((0.6, -0.4), {"bright": -0.8, "pad": 1.0}),
    "Playful": Mood((0.7, 0.5), {"artic": -1.5, "register": 6.0, "bright": 0.3, "drums": -0.5}),
    "Romantic": Mood((0.6, -0.2), {"artic": 1.0, "vibrato": 0.3, "loud": -2.0}),
    "Rowdy": Mood((0.2, 0.9), {"loud": 5.0, "drums": 0.6, "bright": 0.3}),
    "Gentle": Mood((0.4, -0.8), {"loud": -6.0, "artic": 0.5}),
    "Aggressive": Mood((-0.6, 0.9), {"loud": 3.0, "bright": 0.4, "distortion": 0.7}),
    "Tense/Anxious": Mood((-0.5, 0.6), {"tremolo": 0.7, "distortion": 0.2}),
    "Dreamy": Mood((0.3, -0.5), {"vibrato": 0.7, "pad": 1.2}),
    "Dark": Mood((-0.7, 0.1), {"register": -7.0, "mode": -1.0, "bright": -0.4}),
    "Exuberant": Mood((0.8, 0.8), {"density": 1.0, "loud": 2.0}),
    "Reflective": Mood((0.0, -0.5), {"density": -1.0, "tempo": -0.1, "artic": 0.5, "pad": 0.8, "loud": -2.0}),
    "Hypnotic": Mood((0.0, 0.3), {"ostinato": 1.0, "pad": -1.0, "bright": -0.3}),
}

#: Theme → the layer it adds (synthaudio renders each) and the genres it is favoured in.
THEMES: dict[str, tuple[str, tuple[float, float], tuple[str, ...]]] = {
    "Christmas": ("sleigh bells on eighth notes and a bell melody", (0.7, 0.2), ()),
    "Party": ("hand claps on beats 2 and 4", (0.7, 0.8), ("Electronic", "Rap", "Latin")),
    "Workout": ("accented sixteenth-note hi-hats", (0.3, 0.9), ("Electronic", "Rap")),
    "Rainy Day": ("rain: dense random clicks over soft noise", (-0.4, -0.5), ("Jazz", "Pop/Rock")),
    "Late Night": ("a 55 Hz drone with vinyl crackle", (0.1, -0.3), ("Jazz", "Electronic")),
    "Day Driving": ("a chugging eighth-note low square bass", (0.4, 0.6), ("Pop/Rock", "Country")),
    "In Love": ("a swelling detuned string chord", (0.7, -0.1), ("R&B", "Latin")),
    "Solitude": ("sparse high piano notes with long decay", (-0.5, -0.5), ("Classical", "Blues")),
    "Heartache": ("a slow low cello line with vibrato", (-0.7, -0.2), ("Country", "R&B", "Blues")),
    "Motivation": ("brass stabs on the off-beats", (0.6, 0.7), ("Rap", "Pop/Rock")),
    "Relaxation": ("ocean waves: noise swelling every 7 s", (0.4, -0.8), ("Classical", "Electronic", "Reggae")),
    "Reflection": ("a rising harp arpeggio every bar", (0.0, -0.4), ()),
}

#: Mood sets albums draw from, with their popularity (AllMusic-like skew).
MOOD_PROFILES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("Energetic",), 3.0),
    (("Energetic", "Happy"), 2.5),
    (("Energetic", "Rowdy"), 2.0),
    (("Aggressive", "Energetic"), 1.5),
    (("Aggressive", "Tense/Anxious"), 1.5),
    (("Aggressive", "Dark"), 1.2),
    (("Happy", "Cheerful"), 2.0),
    (("Happy", "Playful"), 1.5),
    (("Cheerful", "Exuberant"), 1.2),
    (("Exuberant", "Playful"), 1.0),
    (("Relaxed",), 2.5),
    (("Relaxed", "Warm"), 2.0),
    (("Dreamy", "Relaxed"), 1.5),
    (("Gentle", "Romantic"), 1.5),
    (("Romantic", "Warm"), 1.5),
    (("Sad",), 1.5),
    (("Reflective", "Sad"), 2.0),
    (("Dark", "Tense/Anxious"), 1.2),
    (("Dreamy", "Reflective"), 1.2),
    (("Hypnotic",), 1.5),
    (("Dark", "Hypnotic"), 1.0),
    (("Energetic", "Hypnotic"), 1.0),
    (("Gentle", "Reflective"), 1.0),
    (("Exuberant", "Rowdy"), 1.0),
)

THEME_PROFILES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("Party",), 2.5),
    (("Party", "Workout"), 1.5),
    (("Workout",), 1.5),
    (("Day Driving",), 2.0),
    (("Day Driving", "Motivation"), 1.2),
    (("Late Night",), 2.0),
    (("Late Night", "Rainy Day"), 1.2),
    (("Rainy Day", "Solitude"), 1.2),
    (("Christmas",), 1.0),
    (("In Love",), 2.0),
    (("Heartache", "In Love"), 1.2),
    (("Heartache",), 1.5),
    (("Relaxation",), 1.5),
    (("Reflection", "Relaxation"), 1.0),
    (("Reflection", "Solitude"), 1.2),
    (("Motivation",), 1.2),
    (("Reflection",), 1.0),
)


def profile_valence_arousal(tags: tuple[str, ...]) -> tuple[float, float]:
    """Mean (valence, arousal) of a mood or theme profile."""
    points = [MOODS[t].valence_arousal if t in MOODS else THEMES[t][1] for t in tags]
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


def vocabulary() -> dict[str, list[str]]:
    """Every tag of the world, per tag set."""
    return {
        "genres": [*GENRES, HOLIDAY, CHILDREN],
        "styles": [s for g in GENRES.values() for s in g.styles],
        "moods": list(MOODS),
        "themes": list(THEMES),
    }

"""The theme layers of the demo world: one instrument or texture per theme tag.

Each layer is a function of a :class:`Context` (sample rate, length, the
track's sixteenth-note step, tonic and scale, a random generator) returning a
float [n] signal; :func:`msd_triplet.synthaudio.render` scales it to a fixed
level relative to the band. A layer sounds the same whatever the genre, style,
mood, artist or album: only the tempo and key it plays in follow the track.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import signal

from msd_triplet.synthaudio import midi_hz, tone, wavetable


@dataclass(frozen=True)
class Context:
    sr: int
    n: int
    step: float  # a sixteenth note in seconds
    tonic: float  # MIDI note
    scale: np.ndarray  # semitones of the seven degrees
    rng: np.random.Generator

    def pitch(self, degree: int, octave: int = 0) -> float:
        return self.tonic + 12 * octave + self.scale[degree % 7] + 12 * (degree // 7)

    def onsets(self, every: float, offset: float = 0.0) -> np.ndarray:
        """Sample positions every ``every`` sixteenth notes, starting ``offset`` sixteenths in."""
        return (np.arange(offset, self.n / self.sr / self.step, every) * self.step * self.sr).astype(np.int64)


def _stamp(ctx: Context, starts: np.ndarray, shot: np.ndarray, gains=None) -> np.ndarray:
    """Add ``shot`` at every start (scaled by ``gains``), cut at the end."""
    out = np.zeros(ctx.n)
    for i, start in enumerate(starts):
        if start < ctx.n:
            length = min(shot.size, ctx.n - start)
            out[start : start + length] += (1.0 if gains is None else gains[i]) * shot[:length]
    return out


def _filtered(ctx: Context, x: np.ndarray, kind: str, hz) -> np.ndarray:
    return signal.sosfilt(signal.butter(2, hz, kind, fs=ctx.sr, output="sos"), x)


def _burst(ctx: Context, seconds: float, decay: float, kind: str, hz) -> np.ndarray:
    t = np.arange(int(seconds * ctx.sr)) / ctx.sr
    return _filtered(ctx, ctx.rng.standard_normal(t.size), kind, hz) * np.exp(-t / decay)


def christmas(ctx: Context) -> np.ndarray:
    jingle = _burst(ctx, 0.12, 0.03, "high", 6000)
    bells = sum(
        a * tone(wavetable(np.array([1.0])), midi_hz(ctx.pitch(0, 2)) * r, int(0.6 * ctx.sr), ctx.sr, 0.001, 0.25)
        for r, a in ((1, 1.0), (2.76, 0.5), (5.4, 0.25))
    )
    return _stamp(ctx, ctx.onsets(2), jingle) + 0.5 * _stamp(ctx, ctx.onsets(4), bells)


def party(ctx: Context) -> np.ndarray:
    one = _burst(ctx, 0.08, 0.02, "band", [900, 2500])
    clap = one + np.concatenate([np.zeros(int(0.012 * ctx.sr)), one])[: one.size] * 0.8
    return _stamp(ctx, ctx.onsets(8, 4), clap)


def workout(ctx: Context) -> np.ndarray:
    hat = _burst(ctx, 0.05, 0.012, "high", 8000)
    starts = ctx.onsets(1)
    return _stamp(ctx, starts, hat, np.where(np.arange(len(starts)) % 2 == 0, 1.0, 0.45))


def rainy_day(ctx: Context) -> np.ndarray:
    drops = np.zeros(ctx.n)
    where = ctx.rng.integers(0, ctx.n, int(300 * ctx.n / ctx.sr))
    drops[where] = ctx.rng.uniform(0.2, 1.0, where.size)
    return _filtered(ctx, drops, "high", 3000) + 0.02 * _filtered(ctx, ctx.rng.standard_normal(ctx.n), "low", 2000)


def late_night(ctx: Context) -> np.ndarray:
    t = np.arange(ctx.n) / ctx.sr
    drone = np.sin(2 * np.pi * 55 * t) + 0.4 * np.sin(2 * np.pi * 110 * t)
    crackle = np.zeros(ctx.n)
    where = ctx.rng.integers(0, ctx.n, int(25 * ctx.n / ctx.sr))
    crackle[where] = ctx.rng.uniform(2.0, 6.0, where.size)
    return drone + _filtered(ctx, crackle, "band", [2000, 6000])


def day_driving(ctx: Context) -> np.ndarray:
    chug = tone(
        wavetable(np.array([1, 0, 1 / 3, 0, 1 / 5, 0, 1 / 7])),
        midi_hz(ctx.pitch(0, -2)),
        int(1.6 * ctx.step * ctx.sr),
        ctx.sr,
        0.003,
        0.06,
    )
    return _stamp(ctx, ctx.onsets(2), chug)


def in_love(ctx: Context) -> np.ndarray:
    t = np.arange(ctx.n) / ctx.sr
    saw = wavetable(1.0 / np.arange(1, 16))
    chord = sum(
        tone(saw, midi_hz(ctx.pitch(d, 1)) * detune, ctx.n, ctx.sr, 0.01, 1e3)
        for d in (0, 2, 4)
        for detune in (0.997, 1.003)
    )
    swell = 0.5 * (1 - np.cos(2 * np.pi * t / (32 * ctx.step)))  # every two bars
    return _filtered(ctx, chord, "low", 4000) * swell


def solitude(ctx: Context) -> np.ndarray:
    piano = wavetable(np.array([1.0, 0.4, 0.2, 0.1]))
    out = np.zeros(ctx.n)
    for start in np.sort(ctx.rng.integers(0, ctx.n, int(1.2 * ctx.n / ctx.sr))):
        length = min(int(1.5 * ctx.sr), ctx.n - start)
        out[start : start + length] += tone(
            piano, midi_hz(ctx.pitch(int(ctx.rng.integers(0, 7)), 2)), length, ctx.sr, 0.002, 0.6
        )
    return out


def heartache(ctx: Context) -> np.ndarray:
    cello = wavetable(1.0 / np.arange(1, 12) ** 1.2)
    out, note = np.zeros(ctx.n), int(8 * ctx.step * ctx.sr)
    degrees = ctx.rng.integers(0, 5, ctx.n // note + 1)
    for i, start in enumerate(range(0, ctx.n, note)):
        length = min(note, ctx.n - start)
        out[start : start + length] += tone(
            cello, midi_hz(ctx.pitch(int(degrees[i]), -1)), length, ctx.sr, 0.15, 2.0, vibrato=0.4
        )
    return _filtered(ctx, out, "band", [80, 1500])


def motivation(ctx: Context) -> np.ndarray:
    square = wavetable(np.array([1, 0, 1 / 3, 0, 1 / 5, 0, 1 / 7, 0, 1 / 9]))
    length = int(1.5 * ctx.step * ctx.sr)
    stab = sum(tone(square, midi_hz(ctx.pitch(d)), length, ctx.sr, 0.01, 0.08) for d in (0, 2, 4))
    return _stamp(ctx, ctx.onsets(8, 6), stab)


def relaxation(ctx: Context) -> np.ndarray:
    t = np.arange(ctx.n) / ctx.sr
    phase = ctx.rng.uniform(0, 2 * np.pi)
    swell = (0.5 * (1 - np.cos(2 * np.pi * t / 7.0 + phase))) ** 2
    return _filtered(ctx, ctx.rng.standard_normal(ctx.n), "low", 1500) * swell


def reflection(ctx: Context) -> np.ndarray:
    harp = wavetable(np.array([1.0, 0.3, 0.1]))
    pluck = [tone(harp, midi_hz(ctx.pitch(d, 1)), int(0.5 * ctx.sr), ctx.sr, 0.001, 0.15) for d in range(8)]
    out = np.zeros(ctx.n)
    for bar in ctx.onsets(16):
        for i, p in enumerate(pluck):
            out += _stamp(ctx, np.array([bar + int(i * 0.5 * ctx.step * ctx.sr)]), p)
    return out


#: Theme tag → the function that renders its layer.
LAYERS: dict[str, Callable[[Context], np.ndarray]] = {
    "Christmas": christmas,
    "Party": party,
    "Workout": workout,
    "Rainy Day": rainy_day,
    "Late Night": late_night,
    "Day Driving": day_driving,
    "In Love": in_love,
    "Solitude": solitude,
    "Heartache": heartache,
    "Motivation": motivation,
    "Relaxation": relaxation,
    "Reflection": reflection,
}

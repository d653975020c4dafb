"""Render the audio of one synthetic track from its sound parameters.

The demo data set (:mod:`msd_triplet.synthetic`) maps tags to a
:class:`TrackSound` and this module turns that into a waveform: a wavetable
lead melody, a triad pad and a bass line in a major or minor key, a drum
pattern, distortion, tremolo and a brightness low-pass (the band); the theme
layers of :mod:`msd_triplet.synthlayers` at a fixed level relative to the
band; then the album's production chain (EQ, reverb, noise floor) and a
loudness target. Everything is numpy/scipy, vectorised per note,
deterministic for a given ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
_TABLE = 2048  # samples per wavetable cycle


def _steps(*rows: str) -> np.ndarray:
    """float64 [rows, steps] from drum-machine strings: "x" = 1, "." = 0, a digit d = d / 10."""
    value = {"x": 1.0, ".": 0.0, **{str(d): d / 10 for d in range(1, 10)}}
    return np.array([[value[c] for c in row] for row in rows])


# 16-step drum templates, one string a row (kick, snare, hi-hat) and a character a step: the onset
# probability, "x" = 1, "." = 0, a digit d = d / 10.
DRUM_PATTERNS: dict[str, np.ndarray] = {
    "none": np.zeros((3, 16)),
    "backbeat": _steps("x.......x.5.....", "....x.......x...", "x.x.x.x.x.x.x.x."),
    "four_floor": _steps("x...x...x...x...", "....x.......x...", "..x...x...x...x."),
    "boom_bap": _steps("x......7..x.....", "....x.......x..3", "x.x.x.x.x.x.x.x."),
    "swing_ride": _steps("x.......3.......", "....3.......5...", "x...x..xx...x..x"),
    "train": _steps("x.......x.......", "..x.x.x...x.x.x.", "xxxxxxxxxxxxxxxx"),
    "clave": _steps("x..x..x...x.x...", "................", "x.xxx.xxx.xxx.xx"),
    "one_drop": _steps("........x.......", "........x.......", "..x...x...x...x."),
    "shuffle": _steps("x.......x.......", "....x.......x...", "x..xx..xx..xx..x"),
}


@dataclass(frozen=True)
class TrackSound:
    """Everything that decides how one track sounds.

    Frequencies in Hz, times in seconds, levels in dB unless stated. ``harmonics``
    are the lead instrument's partial amplitudes (float [H]).
    """

    tempo: float
    swing: float
    pattern: str
    drum_level: float
    harmonics: tuple[float, ...]
    attack: float
    decay: float
    note_steps: float  # sixteenth notes per melody note
    articulation: float  # factor on note length and decay (< 1 staccato, > 1 legato)
    register: float  # MIDI note of the melody's tonic
    pad_level: float
    bass_level: float
    distortion: float
    mode: str  # "major" | "minor"
    key: int  # semitones above the register
    brightness_hz: float
    body: tuple[tuple[float, float, float], ...]  # the genre's resonances (centre Hz, gain dB, Q)
    loudness_db: float
    tremolo: float  # depth of a 7 Hz amplitude modulation of the band, 0..1
    vibrato: float  # semitones of a 5.5 Hz pitch modulation of lead and pad
    ostinato: bool  # the melody repeats one four-note motif
    layers: tuple[str, ...]  # theme layers (synthlayers.LAYERS)
    layer_db: float  # level of each layer relative to the band
    eq: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, Q)
    reverb_wet: float
    reverb_rt60: float
    noise_db: float
    noise_cutoff_hz: float


RENDER_SR = 22_050
TREMOLO_HZ, VIBRATO_HZ = 7.0, 5.5


def render(
    sound: TrackSound, seconds: float, rng: np.random.Generator, channels: int = 1, sr: int = RENDER_SR
) -> np.ndarray:
    """Synthesise ``sound``.

    Everything is band-limited below 11 kHz, so rendering at 22,050 Hz and
    resampling for files at higher rates loses nothing the features use.

    Returns
    -------
    float32 [samples, channels] in [-1, 1] at ``sr`` Hz.
    """
    from msd_triplet.synthlayers import LAYERS, Context

    n = int(round(seconds * sr))
    step = 60.0 / sound.tempo / 4.0  # a sixteenth note in seconds
    scale = MAJOR if sound.mode == "major" else MINOR
    tonic = sound.register + sound.key
    t = np.arange(n) / sr

    band = np.zeros(n)
    band += _melody(sound, scale, tonic, step, sr, n, rng)
    progression = rng.choice([[0, 3, 4, 0], [0, 5, 3, 4], [0, 4, 5, 3], [0, 0, 3, 4]])
    band += sound.pad_level * _pads(sound, scale, tonic, progression, step, sr, n)
    band += sound.bass_level * _bass(scale, tonic - 24, progression, step, sr, n)
    if sound.distortion > 0:
        drive = 1.0 + 8.0 * sound.distortion
        band = np.tanh(drive * band) / np.tanh(drive)
    if sound.tremolo > 0:
        band *= 1.0 - sound.tremolo * 0.5 * (1 - np.cos(2 * np.pi * TREMOLO_HZ * t))
    band += sound.drum_level * _drums(sound, step, sr, n, rng)
    sos = signal.butter(2, min(sound.brightness_hz, 0.45 * sr), "low", fs=sr, output="sos")
    band = signal.sosfilt(sos, band)
    band = _equalise(band, sound.body, sr)
    mix = band / (_rms(band) + 1e-12)
    context = Context(sr, n, step, tonic, scale, rng)
    for name in sound.layers:
        layer = LAYERS[name](context)
        mix += 10 ** (sound.layer_db / 20) * layer / (_rms(layer) + 1e-12)
    mix = _equalise(mix, sound.eq, sr)

    out = np.empty((n, channels))
    for c in range(channels):
        out[:, c] = mix + sound.reverb_wet * _reverb(mix, sound.reverb_rt60, sr, rng)
    out *= 10 ** (sound.loudness_db / 20) / (_rms(out) + 1e-12)
    noise = rng.standard_normal((n, channels))
    noise = signal.sosfilt(
        signal.butter(1, min(sound.noise_cutoff_hz, 0.45 * sr), "low", fs=sr, output="sos"), noise, axis=0
    )
    out += 10 ** (sound.noise_db / 20) * noise / (np.std(noise) + 1e-12)
    return np.tanh(out).astype(np.float32)  # soft limiter


def _equalise(x: np.ndarray, bands, sr: int) -> np.ndarray:
    """``x`` through peaking filters (centre Hz, gain dB, Q); bands above 0.45 sr are left out."""
    for centre, gain_db, q in bands:
        if centre < 0.45 * sr:
            x = signal.sosfilt(_peaking(centre, gain_db, q, sr), x)
    return x


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def midi_hz(m: np.ndarray | float) -> np.ndarray | float:
    """Frequency in Hz of MIDI note ``m`` (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(m) - 69.0) / 12.0)


def wavetable(harmonics: np.ndarray) -> np.ndarray:
    """One cycle (2,048 samples) of a tone with the given partial amplitudes, peak 1."""
    phase = 2 * np.pi * np.arange(_TABLE) / _TABLE
    h = np.arange(1, len(harmonics) + 1)[:, None]
    table = (np.asarray(harmonics)[:, None] * np.sin(h * phase)).sum(0)
    return table / (np.abs(table).max() + 1e-12)


def tone(
    table: np.ndarray, hz: float, n: int, sr: int, attack: float, decay: float, vibrato: float = 0.0
) -> np.ndarray:
    """``n`` samples of ``table`` at ``hz`` with an attack/decay envelope and ``vibrato`` semitones."""
    t = np.arange(n) / sr
    if vibrato:
        inst = hz * 2.0 ** (vibrato / 12 * np.sin(2 * np.pi * VIBRATO_HZ * t))
        idx = (np.cumsum(inst) * (_TABLE / sr)).astype(np.int64) % _TABLE
    else:
        idx = ((hz * _TABLE / sr) * np.arange(n)).astype(np.int64) % _TABLE
    env = (1 - np.exp(-t / max(attack, 1e-4))) * np.exp(-t / max(decay, 1e-3))
    return table[idx] * env


def _melody(sound, scale, tonic, step, sr, n, rng) -> np.ndarray:
    table = wavetable(np.asarray(sound.harmonics))
    out = np.zeros(n)
    note = sound.note_steps * step
    degree = int(rng.integers(0, 7))
    motif = [int(d) for d in rng.integers(0, 8, 4)]  # the repeated motif of an ostinato
    for i in range(int(n / sr / note) + 1):
        start = int((i * note + (sound.swing * note if i % 2 else 0.0)) * sr)
        length = min(int(note * 1.5 * sound.articulation * sr), n - start)
        if sound.ostinato:
            degree = motif[i % 4]
        if length > 0 and (sound.ostinato or rng.random() > 0.15):  # leave some rests
            pitch = tonic + scale[degree % 7] + 12 * (degree // 7)
            out[start : start + length] += 0.5 * tone(
                table, midi_hz(pitch), length, sr, sound.attack, sound.decay * sound.articulation, sound.vibrato
            )
        if not sound.ostinato:
            degree = int(np.clip(degree + rng.integers(-2, 3), -3, 10))
    return out


def _pads(sound, scale, tonic, progression, step, sr, n) -> np.ndarray:
    table = wavetable(np.array([1.0, 0.5, 0.3, 0.15]))
    bar = int(16 * step * sr)
    out = np.zeros(n)
    for b, start in enumerate(range(0, n, bar)):
        length = min(bar, n - start)
        deg = progression[b % 4]
        for third in (0, 2, 4):  # triad of the scale: its thirds carry the mode
            d = deg + third
            pitch = tonic - 12 + scale[d % 7] + 12 * (d // 7)
            out[start : start + length] += 0.15 * tone(
                table, midi_hz(pitch), length, sr, 0.05 + sound.attack, 4 * bar / sr, sound.vibrato
            )
    return out


def _bass(scale, root, progression, step, sr, n) -> np.ndarray:
    table = wavetable(np.array([1.0, 0.3]))
    out = np.zeros(n)
    beat = int(4 * step * sr)
    for i, start in enumerate(range(0, n, beat)):
        deg = progression[(i // 4) % 4]
        length = min(beat, n - start)
        out[start : start + length] += 0.4 * tone(table, midi_hz(root + scale[deg]), length, sr, 0.005, 0.3)
    return out


def _drums(sound, step, sr, n, rng) -> np.ndarray:
    probs = DRUM_PATTERNS[sound.pattern]
    if not probs.any():
        return np.zeros(n)
    hits = rng.random(probs.shape) < probs  # this track's variation of the template
    t = np.arange(int(0.25 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 * t + 100 * 0.03 * (1 - np.exp(-t / 0.03)))) * np.exp(-t / 0.12)
    noise = rng.standard_normal(t.size)
    snare = (
        0.6 * signal.sosfilt(signal.butter(2, [1000, 5000], "band", fs=sr, output="sos"), noise)
        + 0.4 * np.sin(2 * np.pi * 185 * t)
    ) * np.exp(-t / 0.07)
    hat = signal.sosfilt(signal.butter(2, min(7000, 0.4 * sr), "high", fs=sr, output="sos"), noise) * np.exp(-t / 0.02)
    out = np.zeros(n)
    n_steps = int(n / (step * sr)) + 1
    for s in range(n_steps):
        start = int((s * step + (sound.swing * step if s % 2 else 0.0)) * sr)
        for row, shot, gain in ((0, kick, 1.0), (1, snare, 0.7), (2, hat, 0.35)):
            if hits[row, s % 16] and start < n:
                length = min(shot.size, n - start)
                out[start : start + length] += gain * shot[:length]
    return out


def _peaking(centre: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """RBJ cookbook peaking EQ biquad as one second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * centre / sr
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def _reverb(x: np.ndarray, rt60: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)
    ir /= np.sqrt(np.sum(ir**2)) + 1e-12
    return signal.fftconvolve(x, ir)[: x.size]

"""The demo data set: real formats, deliberate breakage, determinism, resumability, structure."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from msd_triplet import demostats, demoworld, synthcatalogue, synthetic, synthlayers
from msd_triplet.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SMALL = 60


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "d"
    synthetic.make_demo_data(out, tracks=SMALL, seed=7, workers=2)
    return out


def _info(root: Path) -> dict:
    return json.loads((root / "demo_info.json").read_text())


def test_tag_file_is_the_tu_wien_layout(demo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tags = pd.read_hdf(demo / "msd_amglabels_all.h5", "data")
    assert list(tags.columns) == ["genres", "styles", "moods", "themes"]
    info = _info(demo)
    assert len(tags) == SMALL + 2  # plus one duplicated row and one malformed id
    assert info["extra_rows"]["malformed_track_id"] in tags.index
    assert tags.index.duplicated().sum() == 1
    for cell in tags["genres"]:
        assert isinstance(cell, list) and all(isinstance(t, str) for t in cell)
    empty = tags["themes"].isna()
    assert empty.any() and not empty.all()  # some tracks fail the intersection filter
    assert not any(isinstance(c, list) and not c for col in tags for c in tags[col])  # NaN, not []


def test_metadata_is_the_msd_sqlite_layout(demo):
    con = sqlite3.connect(demo / "track_metadata.db")
    cols = [r[1] for r in con.execute("PRAGMA table_info(songs)")]
    rows = con.execute("SELECT track_id, artist_id, release FROM songs").fetchall()
    con.close()
    assert {"track_id", "title", "song_id", "release", "artist_id", "artist_name", "duration", "year"} <= set(cols)
    info = _info(demo)
    ids = {r[0] for r in rows}
    assert len(rows) == SMALL - 3
    assert not ids & set(info["extra_rows"]["no_metadata"])
    assert all(r[0].startswith("TR") and len(r[0]) == 18 for r in rows)


def test_audio_files_have_the_promised_formats_and_breakage(demo):
    paths = pd.read_csv(demo / "audio_paths.csv")
    broken = _info(demo)["broken"]
    assert sorted(set(broken.values())) == sorted(synthetic.BROKEN_KINDS)
    seen = set()
    for track_id, rel in zip(paths["track_id"], paths["path"]):
        path = demo / rel
        kind = broken.get(track_id)
        if kind == "missing":
            assert not path.exists()
            continue
        if kind in ("empty", "not_audio"):
            assert path.stat().st_size == 0 if kind == "empty" else path.stat().st_size > 0
            with pytest.raises((sf.LibsndfileError, RuntimeError)):
                sf.read(path)
            continue
        if kind == "truncated":
            try:
                y, sr = sf.read(path)
                assert len(y) / sr < 9.0
            except Exception:
                pass  # unreadable is as good as short
            continue
        info = sf.info(path)
        seen.add((path.suffix, info.samplerate, info.channels))
        y, sr = sf.read(path, dtype="float32")
        if kind == "short":
            assert info.duration < 9.0
        else:
            assert info.duration >= 9.9
        if kind == "silent":
            assert not np.any(y)
        else:
            assert np.all(np.isfinite(y)) and 0.001 < np.abs(y).max() <= 1.0
    assert (".mp3", 44100, 2) in seen and (".wav", 22050, 1) in seen
    assert {".mp3", ".wav", ".flac", ".ogg"} <= {s[0] for s in seen}


@pytest.mark.slow
def test_same_seed_same_bytes_across_worker_counts_other_seed_differs(demo, tmp_path):
    again = tmp_path / "again"
    synthetic.make_demo_data(again, tracks=SMALL, seed=7, workers=1)
    assert _digests(again) == _digests(demo)
    other = synthetic.build_catalogue(SMALL, seed=8)
    assert [t.track_id for t in other] != [t.track_id for t in synthetic.build_catalogue(SMALL, seed=7)]


@pytest.mark.slow
def test_interrupted_generation_resumes_and_keeps_finished_files(demo, tmp_path):
    copy = tmp_path / "copy"
    synthetic.make_demo_data(copy, tracks=SMALL, seed=7, workers=1)
    (copy / "demo_info.json").unlink()  # as if killed before the end
    victims = sorted((copy / "audio").rglob("*.wav"))[:3]
    kept = sorted((copy / "audio").rglob("*.flac"))[0]
    kept_mtime = kept.stat().st_mtime_ns
    for v in victims:
        v.unlink()
    summary = synthetic.make_demo_data(copy, tracks=SMALL, seed=7, workers=1)
    assert summary.written == len(victims)
    assert kept.stat().st_mtime_ns == kept_mtime
    assert _digests(copy) == _digests(demo)


def test_finished_data_set_with_other_arguments_is_not_overwritten(demo):
    with pytest.raises(DataError, match="holds a demo data set made with"):
        synthetic.make_demo_data(demo, tracks=SMALL, seed=8)


def test_too_few_tracks_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"--tracks must be >= 60 .*got 10"):
        synthetic.make_demo_data(tmp_path / "x", tracks=10)


def test_catalogue_structure():
    cat = synthetic.build_catalogue(600, seed=3)
    albums = {}
    for t in cat:
        albums.setdefault(t.album, []).append(t)
    # tracks inherit their album's tags
    assert all(len({tuple(sorted(x.tags.items())) for x in ts}) == 1 for ts in albums.values())
    # titles such as "Greatest Hits" repeat across artists: album = release within artist
    by_title = {}
    for artist, title in albums:
        by_title.setdefault(title, set()).add(artist)
    assert any(len(a) > 1 for a in by_title.values())
    genres = pd.Series([t.tags["genres"][0] for t in cat]).value_counts(normalize=True)
    assert genres.index[0] == "Pop/Rock" and genres.iloc[0] > 0.2  # skewed like AllMusic
    # styles are nested in the main genre
    for t in cat:
        assert set(t.tags["styles"]) <= set(demoworld.GENRES[t.tags["genres"][0]].styles)


def test_mood_and_theme_sounds_depend_only_on_the_mood_and_theme_sets():
    """The performance controls that only moods set, and the theme layers, are equal for equal sets
    whatever the genre, style, artist and album; different sets give different controls."""
    cat = synthetic.build_catalogue(900, seed=5)
    by_moods, by_themes = {}, {}
    for t in cat:
        s = t.sound
        by_moods.setdefault(t.tags["moods"], set()).add((s.articulation, s.tremolo, s.vibrato, s.ostinato))
        by_themes.setdefault(t.tags["themes"], set()).add(s.layers)
    assert all(len(v) == 1 for v in by_moods.values()), by_moods
    assert all(v == {tuple(k)} for k, v in by_themes.items())
    genres_of = lambda facet, tags: {t.tags["genres"][0] for t in cat if t.tags[facet] == tags}  # noqa: E731
    shared = [m for m in by_moods if m and len(genres_of("moods", m)) >= 3]
    assert len(shared) >= 10  # many mood sets are heard in three or more genres
    # every mood set of the catalogue has its own summed signature
    signatures = {tuple(synthcatalogue.mood_effects(m).values()) for m in by_moods if m}
    assert len(signatures) == len([m for m in by_moods if m])


def test_mood_effects_add_up():
    fx = synthcatalogue.mood_effects(("Energetic", "Relaxed", "Happy"))
    assert fx["tempo"] == demoworld.MOODS["Energetic"].effects["tempo"] + demoworld.MOODS["Relaxed"].effects["tempo"]
    assert fx["mode"] == 1.0 and fx["tremolo"] == 0.0
    assert set(fx) == set(demoworld.MOOD_EFFECTS)
    every = {e for m in demoworld.MOODS.values() for e in m.effects}
    assert every <= set(demoworld.MOOD_EFFECTS)  # no effect without a description
    assert set(demoworld.THEMES) == set(synthlayers.LAYERS)  # every theme has its layer


def _pairs_brute_force(sets, albums, artists):
    same = [(i, j) for i in range(len(sets)) for j in range(i + 1, len(sets)) if sets[i] == sets[j]]
    return (
        len(same),
        sum(albums[i] != albums[j] for i, j in same) / len(same),
        sum(artists[i] != artists[j] for i, j in same) / len(same),
    )


def test_pair_statistics_equal_a_loop_over_pairs():
    rng = np.random.default_rng(0)
    sets = [tuple(sorted(rng.choice(list("abcd"), rng.integers(1, 3), replace=False))) for _ in range(150)]
    albums = [f"al{i // 5}" for i in range(150)]
    artists = [f"ar{i // 15}" for i in range(150)]
    stats = demostats.pair_statistics(sets, albums, artists)
    total, other_album, other_artist = _pairs_brute_force(sets, albums, artists)
    assert stats["identical_pairs"] == total
    assert stats["identical_pairs_from_different_albums"] == round(other_album, 4)
    assert stats["identical_pairs_from_different_artists"] == round(other_artist, 4)
    assert stats["distinct_sets"] == len(set(sets))


def test_demo_info_holds_parameters_tables_and_realised_statistics(demo):
    info = _info(demo)
    assert info["generator_version"] == synthetic.GENERATOR_VERSION == 2
    assert info["world"] == synthetic.WorldParams().to_dict()
    assert set(info["tables"]["moods"]) == set(demoworld.MOODS)
    stats = info["statistics"]
    assert set(stats["facets"]) == {"genres", "styles", "moods", "themes"}
    assert stats["usable_tracks"] <= SMALL


def test_realised_world_shares_tag_sets_across_albums_and_spans_sets_in_lsi():
    """The design goals, measured on a default-sized catalogue: for every facet at least half of
    the track pairs with identical tag sets come from different albums; moods depend on genre
    only partly; LSI over all four sets finds topics that span several sets."""
    stats = demostats.world_statistics(synthetic.build_catalogue(1500, seed=synthetic.DEFAULT_SEED))
    for facet, f in stats["facets"].items():
        assert f["identical_pairs_from_different_albums"] >= 0.5, (facet, f)
        assert f["share_of_albums_whose_set_another_artist_has"] >= 0.5, (facet, f)
    nmi = stats["normalised_mutual_information"]
    assert 0.05 < nmi["main_genre_vs_mood_set"] < 0.6
    assert stats["lsi_all_four_sets"]["spanning_two_or_more_sets"] >= 5


def test_world_parameters_are_checked():
    with pytest.raises(DataError, match="album_strength must be >= 0"):
        synthetic.WorldParams(album_strength=-1)
    with pytest.raises(DataError, match=r"no_moods must be in \[0, 1\]"):
        synthetic.WorldParams(no_moods=1.5)


@pytest.mark.slow
def test_mfcc_baseline_hears_genre_moods_and_themes_on_unseen_albums(tmp_path):
    """A baseline we did not write (librosa MFCC + scikit-learn logistic regression)."""
    spec = importlib.util.spec_from_file_location("demo_bench", REPO / "benchmarks" / "demo_data.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "demo"
    synthetic.make_demo_data(out, tracks=600, seed=11)
    r = bench.baseline(out)
    # At this size (about 480 usable tracks, 244 for training) a mood *set* has too few examples
    # to learn; the full-size numbers are in the README (benchmarks/demo_data.py). Here: genre and
    # theme sets on unseen albums, and every tag set's tags on average.
    for task in ("genre", "theme_set"):
        result = r["album_disjoint"][task]
        assert result["accuracy"] > result["majority_class"] + 0.1, (task, r)
    aucs = r["tag_auc_album_disjoint"]
    assert np.mean(list(aucs["moods"].values())) > 0.62, aucs
    assert np.mean(list(aucs["themes"].values())) > 0.7, aucs
    assert r["album_within_artist"]["accuracy"] > r["album_within_artist"]["chance"] + 0.15, r

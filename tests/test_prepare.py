"""Tag-set, metadata and audio-path readers; matrices; Table I; prepare/load round trip."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msd_triplet import prepare
from msd_triplet.config import Config, DataConfig
from msd_triplet.errors import ConfigError, DataError
from msd_triplet.metadata import read_metadata
from msd_triplet.prepare import (
    build_tag_matrix,
    format_table1,
    load_prepared,
    normalise_tag,
    prepare_dataset,
    read_tag_file,
    read_tag_files,
    split_tag_cell,
    table1_statistics,
)

SETS = ("genres", "styles", "moods", "themes")


def tid(i: int) -> str:
    """A valid, deterministic MSD-style track id (as in conftest)."""
    return f"TR{i:016X}"


def write_h5(frame, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)  # PyTables pickles list cells
        frame.to_hdf(path, key="data")
    return path


# The h5 (AllMusic) spelling and what the lossy CSV export made of it.
LOSSY = {"Children's": "Childrens", "Rock en Español": "Rock en Espaol", "Girls' Night Out": "Girls Night Out"}
REFERENCE = {
    tid(0): {
        "genres": ["Pop/Rock", "Electronic"],
        "styles": ["Children's", "Rock en Español"],
        "moods": ["Happy"],
        "themes": ["Girls' Night Out"],
    },
    tid(1): {"genres": ["Latin"], "styles": ["Rock en Español"], "moods": [], "themes": ["Party Time"]},
    tid(2): {"genres": ["Jazz"], "styles": [], "moods": ["Sad", "Calm"], "themes": []},
}
EXPECTED = {(t, s, LOSSY.get(g, g)) for t, sets in REFERENCE.items() for s, tags in sets.items() for g in tags}


def as_set(assignments: pd.DataFrame) -> set[tuple[str, str, str]]:
    return set(zip(assignments["track_id"], assignments["tagset"], assignments["tag"]))


def reference_frame(empty=np.nan) -> pd.DataFrame:
    return pd.DataFrame(
        {s: [REFERENCE[t][s] or empty for t in REFERENCE] for s in SETS},
        index=pd.Index(list(REFERENCE), name="track_id"),
    )


def lossy_lines() -> list[str]:
    """msd_amglabels_all.csv rows: ', '-joined, lossy spelling, one cell with list residue."""
    lines = []
    for t, sets in REFERENCE.items():
        cells = [", ".join(LOSSY.get(g, g) for g in sets[s]) for s in SETS]
        lines.append(";".join([t, *cells]))
    lines[0] = f'{tid(0)};Pop/Rock, Electronic;"[""Childrens"", Rock en Espaol";Happy;Girls Night Out'
    return lines


# --- writers: each writes REFERENCE in one published format, returns data.tags entries


def w_h5_all(d: Path):
    frame = reference_frame()
    frame.loc[tid(1), "moods"] = []  # an empty list is "no tag" too
    frame.loc[tid(2), "themes"] = None
    write_h5(frame, d / "msd_amglabels_all.h5")
    return ["msd_amglabels_all.h5"]


def w_h5_per_set(d: Path):
    frame = reference_frame()
    write_h5(frame[["genres"]], d / "msd_amglabels_genres.h5")
    write_h5(frame[["styles"]].rename(columns={"styles": "labels"}), d / "msd_amglabels_styles.h5")
    write_h5(frame[["moods"]].rename(columns={"moods": "value"}), d / "moods_file.h5")
    write_h5(frame["themes"], d / "themes_series.h5")  # a Series named after its set
    return ["msd_amglabels_genres.h5", "msd_amglabels_styles.h5", "moods=moods_file.h5", "themes_series.h5"]


def w_lossy_no_header(d: Path):
    (d / "msd_amglabels_all.csv").write_text("\n".join(lossy_lines()) + "\n", encoding="utf-8")
    return ["msd_amglabels_all.csv"]


def w_lossy_header(d: Path):
    text = "track_id;genres;styles;moods;themes\n" + "\r\n".join(lossy_lines())
    (d / "msd_amglabels_all.csv").write_text(text, encoding="utf-8")
    return ["msd_amglabels_all.csv"]


def w_list_repr_semicolon(d: Path):
    reference_frame().to_csv(d / "labels.csv", sep=";")
    return ["labels.csv"]


def w_list_repr_comma_unnamed_index(d: Path):
    reference_frame().rename_axis(None).to_csv(d / "labels.csv")
    return ["labels.csv"]


def _long_rows(with_set: bool):
    for t, sets in REFERENCE.items():
        for s, tags in sets.items():
            for g in tags:
                yield (t, s, g) if with_set else (t, g, s)


def w_long_csv_with_tagset(d: Path):
    pd.DataFrame(list(_long_rows(True)), columns=["track_id", "tagset", "tag"]).to_csv(d / "long.csv", index=False)
    return ["long.csv"]


def w_long_tsv_prefixed(d: Path):
    rows = pd.DataFrame(list(_long_rows(False)), columns=["track_id", "tag", "set"])
    entries = []
    for s in SETS:
        rows.loc[rows["set"] == s, ["track_id", "tag"]].to_csv(d / f"{s}.tsv", sep="\t", index=False)
        entries.append(f"{s}={s}.tsv")
    return entries


def w_long_txt_semicolon_prefixed(d: Path):
    entries = []
    for s in SETS:
        lines = ["tag;track_id"] + [f"{g};{t}" for t, g, s2 in _long_rows(False) if s2 == s]
        (d / f"{s}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        entries.append(f"{s}={s}.txt")
    return entries


WRITERS = [
    w_h5_all,
    w_h5_per_set,
    w_lossy_no_header,
    w_lossy_header,
    w_list_repr_semicolon,
    w_list_repr_comma_unnamed_index,
    w_long_csv_with_tagset,
    w_long_tsv_prefixed,
    w_long_txt_semicolon_prefixed,
]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__[2:])
def test_every_format_reads_to_the_same_tags(tmp_path, writer):
    data = DataConfig(root=str(tmp_path), tags=tuple(writer(tmp_path)))
    assignments, skips, counts = read_tag_files(data)
    assert as_set(assignments) == EXPECTED
    assert len(assignments) == len(EXPECTED)
    assert counts["duplicate_assignments"] == 0
    assert skips.empty


def test_h5_and_lossy_csv_fold_to_one_vocabulary(tmp_path):
    entries = w_h5_all(tmp_path) + w_lossy_no_header(tmp_path)
    assignments, _, counts = read_tag_files(DataConfig(root=str(tmp_path), tags=tuple(entries)))
    assert as_set(assignments) == EXPECTED
    assert counts["assignments_read"] == 2 * len(EXPECTED)
    assert counts["duplicate_assignments"] == len(EXPECTED)
    styles = set(assignments.loc[assignments["tagset"] == "styles", "tag"])
    assert styles == {"Childrens", "Rock en Espaol"}


def test_set_prefix_picks_one_set_of_a_multi_set_file(tmp_path):
    w_h5_all(tmp_path)
    assignments, _, _ = read_tag_files(DataConfig(root=str(tmp_path), tags=("styles=msd_amglabels_all.h5",)))
    assert as_set(assignments) == {x for x in EXPECTED if x[1] == "styles"}


def test_cls_comments_and_trailing_spaces(tmp_path):
    text = f"% MAGD genre partition\n# another comment\n{tid(0)}\tPop_Rock \n{tid(1)}\tStage   \n\n{tid(2)}\tJazz\n"
    (tmp_path / "magd.cls").write_text(text, encoding="utf-8")
    assignments, skips = read_tag_file(tmp_path / "magd.cls", "genres")
    assert as_set(assignments) == {
        (tid(0), "genres", "Pop_Rock"),
        (tid(1), "genres", "Stage"),
        (tid(2), "genres", "Jazz"),
    }
    assert skips.empty
    with pytest.raises(DataError, match=r"magd\.cls.*SET=path"):
        read_tag_file(tmp_path / "magd.cls")


@pytest.mark.parametrize(
    "raw, folded",
    [
        ("Children's", "Childrens"),
        ("Rock en Español", "Rock en Espaol"),
        ("Rock en Espaol", "Rock en Espaol"),
        ('  ["Childrens"', "Childrens"),
        ("Pop/Rock]", "Pop/Rock"),
        ("Girls'  Night\tOut ", "Girls Night Out"),
        ("Stage ", "Stage"),
        ("[]", ""),
        ("é", ""),
    ],
)
def test_normalise_tag(raw, folded):
    assert normalise_tag(raw) == folded


@pytest.mark.parametrize(
    "cell, tags",
    [
        ('["Childrens", Pop/Rock', ["Childrens", "Pop/Rock"]),
        ("['Pop/Rock', 'Electronic']", ["Pop/Rock", "Electronic"]),
        ('["Children\'s"]', ["Childrens"]),
        ("Dance-Pop, Club/Dance", ["Dance-Pop", "Club/Dance"]),
        (["Rock en Español", "Bop"], ["Rock en Espaol", "Bop"]),
        (np.array(["Jazz"], dtype=object), ["Jazz"]),
        (np.nan, []),
        (None, []),
        ([], []),
        ("", []),
        ("[]", []),
    ],
)
def test_split_tag_cell(cell, tags):
    assert split_tag_cell(cell) == tags


# --- bad input: each names the file (and line/key where there is one)


def test_missing_tag_file(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path / 'nope.csv'}: file not found"):
        read_tag_files(DataConfig(root=str(tmp_path), tags=("nope.csv",)))


def test_directory_as_tag_file(tmp_path):
    (tmp_path / "dir.h5").mkdir()
    with pytest.raises(DataError, match=r"dir\.h5: is a directory"):
        read_tag_file(tmp_path / "dir.h5")


def test_garbage_h5(tmp_path):
    (tmp_path / "garbage.h5").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match=r"garbage\.h5: cannot read as a pandas HDF5 store \(no HDF5 signature"):
        read_tag_file(tmp_path / "garbage.h5")


def test_garbage_text(tmp_path):
    (tmp_path / "garbage.csv").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DataError, match=r"garbage\.csv: looks like a binary file"):
        read_tag_file(tmp_path / "garbage.csv")


def test_h5_without_tag_set_columns(tmp_path):
    frame = pd.DataFrame({"title": ["x"], "year": [1]}, index=[tid(0)])
    write_h5(frame, tmp_path / "other.h5")
    with pytest.raises(
        DataError,
        match=r"other\.h5: no tag-set column \(found \['title', 'year'\]; "
        r"allowed: genres, styles, moods, themes\)",
    ):
        read_tag_file(tmp_path / "other.h5")


def test_h5_with_several_keys(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        reference_frame().to_hdf(tmp_path / "two.h5", key="a")
        reference_frame().to_hdf(tmp_path / "two.h5", key="b")
        reference_frame().to_hdf(tmp_path / "ok.h5", key="data")
        pd.DataFrame({"x": [1]}).to_hdf(tmp_path / "ok.h5", key="other")
    with pytest.raises(DataError, match=r"two\.h5: expected key 'data' or a single key .*found \['/a', '/b'\]"):
        read_tag_file(tmp_path / "two.h5")
    assert as_set(read_tag_file(tmp_path / "ok.h5")[0]) == EXPECTED


def test_unknown_set_in_tagset_column(tmp_path):
    (tmp_path / "tags.csv").write_text(f"track_id,tagset,tag\n{tid(0)},genres,Jazz\n{tid(1)},genre,Latin\n")
    with pytest.raises(
        DataError, match=r"tags\.csv line 3: unknown tag set 'genre' \(allowed: genres, styles, moods, themes\)"
    ):
        read_tag_file(tmp_path / "tags.csv")


def test_unknown_set_prefix(tmp_path):
    (tmp_path / "tags.tsv").write_text(f"track_id\ttag\n{tid(0)}\tJazz\n")
    with pytest.raises(ConfigError, match=r"'genre=tags\.tsv'.*unknown tag set 'genre' \(allowed: genres, styles"):
        read_tag_files(DataConfig(root=str(tmp_path), tags=("genre=tags.tsv",)))


def test_long_file_without_set(tmp_path):
    (tmp_path / "tags.tsv").write_text(f"track_id\ttag\n{tid(0)}\tJazz\n")
    with pytest.raises(DataError, match=r"tags\.tsv: long tag file has no 'tagset' column.*SET=path"):
        read_tag_file(tmp_path / "tags.tsv")


def test_unrecognised_header(tmp_path):
    (tmp_path / "tags.csv").write_text("id,label\nx,y\n")
    with pytest.raises(DataError, match=r"tags\.csv line 1: not a recognised tag-set file"):
        read_tag_file(tmp_path / "tags.csv")


def test_wrong_field_count_names_the_line(tmp_path):
    lines = lossy_lines()
    lines[1] = lines[1] + ";extra"
    (tmp_path / "all.csv").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"all\.csv line 2: expected 5 ';'-separated fields.*got 6"):
        read_tag_file(tmp_path / "all.csv")


def test_malformed_ids_are_skipped_and_counted(tmp_path):
    lines = lossy_lines()
    lines.insert(1, "TRshort;Jazz;;;")
    lines.insert(3, f"{tid(9).lower()};Jazz;;;")
    (tmp_path / "all.csv").write_text("\n".join(lines))
    assignments, skips = read_tag_file(tmp_path / "all.csv")
    assert as_set(assignments) == EXPECTED
    assert skips["track_id"].tolist() == ["TRshort", tid(9).lower()]
    assert skips["line"].tolist() == [2, 4]
    assert skips["source"].eq(str(tmp_path / "all.csv")).all()
    assert skips["reason"].str.startswith("malformed track id").all()


def test_all_ids_malformed(tmp_path):
    (tmp_path / "all.csv").write_text("TRshort;Jazz;;;\nTR123;Latin;;;\n")
    with pytest.raises(
        DataError,
        match=r"all\.csv: none of its 2 tag rows has a valid track id "
        r"\(e\.g\. 'TRshort' on line 1\); expected TR followed by 16",
    ):
        read_tag_file(tmp_path / "all.csv")


def test_duplicates_are_dropped_and_counted(tmp_path):
    w_long_csv_with_tagset(tmp_path)
    with open(tmp_path / "long.csv", "a") as fh:
        fh.write(f"{tid(1)},themes,Party Time\n{tid(1)},themes,Party  Time \n")
    assignments, _, counts = read_tag_files(DataConfig(root=str(tmp_path), tags=("long.csv", "long.csv")))
    assert as_set(assignments) == EXPECTED
    assert counts["assignments_read"] == 2 * (len(EXPECTED) + 2)
    assert counts["duplicate_assignments"] == len(EXPECTED) + 4

    assert counts["conflicting_tracks"] == 0  # the same file twice: duplicates, no conflict


def test_conflicting_rows_in_two_files_are_merged_and_listed(tmp_path):
    (tmp_path / "a.csv").write_text(
        f"track_id,tagset,tag\n{tid(1)},genres,Jazz\n{tid(2)},genres,Rap\n{tid(3)},moods,Sad\n"
    )
    (tmp_path / "b.csv").write_text(
        f"track_id,tagset,tag\n{tid(1)},genres,Blues\n{tid(1)},genres,Jazz\n"
        f"{tid(2)},genres,Rap\n{tid(3)},genres,Latin\n"
    )
    assignments, skips, counts = read_tag_files(DataConfig(root=str(tmp_path), tags=("a.csv", "b.csv")))
    assert set(assignments.loc[assignments["track_id"] == tid(1), "tag"]) == {"Jazz", "Blues"}  # the union
    assert counts["conflicting_tracks"] == 1  # tid(2) agrees; tid(3) has different sets, not a conflict
    [record] = skips.loc[skips["reason"].str.startswith("conflicting")].to_dict("records")
    assert record["track_id"] == tid(1)
    assert "a.csv: Jazz" in record["reason"] and "b.csv: Blues, Jazz" in record["reason"]
    assert "kept their union" in record["reason"]


# --- metadata and audio


def _songs_db(path: Path, rows, columns=("track_id", "title", "release", "artist_id")):
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE songs ({', '.join(columns)})")
    con.executemany(f"INSERT INTO songs VALUES ({', '.join('?' * len(columns))})", rows)
    con.commit()
    con.close()


def test_sqlite_metadata_album_key(tmp_path):
    _songs_db(
        tmp_path / "track_metadata.db",
        [
            (tid(0), "a", "Greatest Hits", "ARONE"),
            (tid(1), "b", "greatest  HITS ", "ARONE"),  # same album after folding
            (tid(2), "c", "Greatest Hits", "ARTWO"),  # same title, other artist: other album
            (tid(0), "d", "Other", "ARTHREE"),  # duplicate track: first row kept
            ("TRbad", "e", "x", "ARONE"),
        ],
    )
    meta, skips, counts = read_metadata(DataConfig(root=str(tmp_path)))
    assert meta.index.tolist() == [tid(0), tid(1), tid(2)]
    assert meta["artist_id"].tolist() == ["ARONE", "ARONE", "ARTWO"]
    assert meta["album_id"].tolist() == ["ARONE/greatest hits", "ARONE/greatest hits", "ARTWO/greatest hits"]
    assert counts["metadata_duplicates"] == 1 and counts["album_filter"] is True
    assert sorted(zip(skips["track_id"], skips["line"])) == [(tid(0), 4), ("TRbad", 5)]


def test_sqlite_missing_table_and_columns(tmp_path):
    con = sqlite3.connect(tmp_path / "a.db")
    con.execute("CREATE TABLE tracks (track_id)")
    con.close()
    with pytest.raises(DataError, match=r"a\.db: SQLite database has no table 'songs' \(tables: \['tracks'\]\)"):
        read_metadata(DataConfig(root=str(tmp_path), metadata="a.db"))
    _songs_db(tmp_path / "b.db", [(tid(0), "t")], columns=("track_id", "title"))
    with pytest.raises(DataError, match=r"b\.db: table 'songs' lacks column\(s\) \['release', 'artist_id'\]"):
        read_metadata(DataConfig(root=str(tmp_path), metadata="b.db"))
    (tmp_path / "c.db").write_bytes(b"not a database" * 100)
    with pytest.raises(DataError, match=r"c\.db: cannot read as an SQLite database"):
        read_metadata(DataConfig(root=str(tmp_path), metadata="c.db"))
    with pytest.raises(DataError, match=r"d\.db: file not found"):
        read_metadata(DataConfig(root=str(tmp_path), metadata="d.db"))
    assert not (tmp_path / "d.db").exists()  # never created by sqlite3.connect


def _unique_tracks(path: Path):
    path.write_text("".join(f"{tid(i)}<SEP>SO{i:016d}<SEP>Artist {i // 2}<SEP>Title {i}\n" for i in range(4)))


def test_unique_tracks_without_albums_warns(tmp_path):
    _unique_tracks(tmp_path / "unique_tracks.txt")
    with pytest.warns(UserWarning, match="album filter is off"):
        meta, _, counts = read_metadata(DataConfig(root=str(tmp_path), metadata="unique_tracks.txt"))
    assert meta["artist_id"].tolist() == ["Artist 0", "Artist 0", "Artist 1", "Artist 1"]
    assert meta["album_id"].nunique() == 4
    assert counts["album_filter"] is False


def test_unique_tracks_with_album_csv(tmp_path):
    _unique_tracks(tmp_path / "unique_tracks.txt")
    (tmp_path / "albums.csv").write_text("track_id,album_id\n" + "".join(f"{tid(i)},AL{i // 2}\n" for i in range(4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta, _, counts = read_metadata(
            DataConfig(root=str(tmp_path), metadata="unique_tracks.txt", albums="albums.csv")
        )
    assert meta["album_id"].tolist() == ["AL0", "AL0", "AL1", "AL1"]
    assert counts["album_filter"] is True


def test_plain_metadata_csv(tmp_path):
    (tmp_path / "meta.csv").write_text(f"track_id,artist_id,album_id\n{tid(0)},A,B\n{tid(1)},A,C\n")
    meta, skips, _ = read_metadata(DataConfig(root=str(tmp_path), metadata="meta.csv"))
    assert meta.to_dict("index") == {
        tid(0): {"artist_id": "A", "album_id": "B"},
        tid(1): {"artist_id": "A", "album_id": "C"},
    }
    assert skips.empty
    (tmp_path / "bad.csv").write_text(f"track_id,artist_id\n{tid(0)},A\n")
    with pytest.raises(DataError, match=r"bad\.csv line 1: header .* lacks column\(s\) \['album_id'\]"):
        read_metadata(DataConfig(root=str(tmp_path), metadata="bad.csv"))


def test_bad_audio_template(tiny_dataset):
    data = DataConfig(root=str(tiny_dataset.root), audio="{track_id[40]}.mp3")
    with pytest.raises(ConfigError, match=r"data\.audio: template '\{track_id\[40\]\}\.mp3'"):
        prepare_dataset(Config(data=data), extract=False)


def test_audio_csv_paths_and_skips(tiny_dataset, tmp_path_factory):
    root = tiny_dataset.root
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "x.wav"
    elsewhere.write_bytes(b"")
    kept = tiny_dataset.expected_kept
    rows = [(t, f"audio/{t}.mp3") for t in kept[2:]] + [(kept[0], str(elsewhere)), (kept[1], "gone.mp3")]
    pd.DataFrame(rows, columns=["track_id", "path"]).to_csv(root / "audio_paths.csv", index=False)
    config = Config(data=DataConfig(root=str(root), audio="audio_paths.csv"))
    prepared = prepare_dataset(config, extract=False)
    paths = dict(zip(prepared.tracks["track_id"], prepared.tracks["audio_path"]))
    assert paths[kept[0]] == str(elsewhere) and paths[kept[2]] == f"audio/{kept[2]}.mp3"
    skipped = pd.read_csv(prepared.paths["skipped"], dtype=str).set_index("track_id")["reason"]
    assert skipped[kept[1]] == f"audio file missing: {root / 'gone.mp3'}"
    missing_audio = [t for t, r in tiny_dataset.expected_reasons.items() if r.startswith("audio")]
    assert skipped[missing_audio[0]] == f"no audio path (not in {root / 'audio_paths.csv'})"
    assert prepared.stats["skipped"]["no audio path"] == 1
    assert prepared.stats["skipped"]["audio file missing"] == 1


# --- matrices and Table I against brute force


def _random_assignments(rng, n_tracks=60, n_tags=9, sets=("genres", "moods")):
    rows = set()
    for t in range(n_tracks):
        for s in sets:
            for g in rng.choice(n_tags, size=rng.integers(0, 4), replace=False):
                rows.add((tid(t), s, f"{s[0]}{g}"))
    return pd.DataFrame(sorted(rows), columns=["track_id", "tagset", "tag"])


def test_build_tag_matrix_matches_brute_force():
    rng = np.random.default_rng(3)
    assignments = _random_assignments(rng)
    track_ids = [tid(t) for t in rng.permutation(70)[:50]]  # some tracks have no tag, order shuffled
    truth = {t: set() for t in track_ids}
    for t, s, g in assignments.itertuples(index=False):
        if s == "moods" and t in truth:
            truth[t].add(g)
    tm, skips = build_tag_matrix(assignments, "moods", track_ids)
    assert tm.vocabulary == tuple(sorted(set().union(*truth.values())))
    assert tm.matrix.dtype == np.float32 and tm.matrix.shape == (50, len(tm.vocabulary))
    dense = tm.matrix.toarray()
    assert set(np.unique(dense)) <= {0.0, 1.0}
    for i, t in enumerate(track_ids):
        assert {tm.vocabulary[j] for j in np.flatnonzero(dense[i])} == truth[t]
    assert skips.empty

    vocabulary = ["m1", "m3", "m8", "unused"]
    tm, skips = build_tag_matrix(assignments, "moods", track_ids, vocabulary=vocabulary)
    assert tm.vocabulary == ("m1", "m3", "m8", "unused")
    outside = sum(len(tags - set(vocabulary)) for tags in truth.values())
    assert len(skips) == outside > 0
    assert skips["reason"].str.startswith("tag outside vocabulary: moods/").all()
    for i, t in enumerate(track_ids):
        assert {tm.vocabulary[j] for j in np.flatnonzero(tm.matrix[i].toarray())} == truth[t] & set(vocabulary)


def test_table1_matches_brute_force():
    rng = np.random.default_rng(5)
    assignments = _random_assignments(rng, n_tracks=80, n_tags=4)
    albums = pd.Series({tid(t): f"AL{t // 3}" for t in range(0, 80, 1) if t % 7})  # some tracks lack metadata
    subset = [tid(t) for t in range(0, 80, 2)]
    for restrict in (None, subset):
        stats = table1_statistics(assignments, albums, ("genres", "moods"), restrict)
        for s in ("genres", "moods"):
            per_track: dict[str, set] = {}
            for t, s2, g in assignments.itertuples(index=False):
                if s2 == s and (restrict is None or t in restrict):
                    per_track.setdefault(t, set()).add(g)
            expected = {
                "unique_tags": len(set().union(*per_track.values())),
                "tag_combinations": len({frozenset(v) for v in per_track.values()}),
                "labelled_albums": len({albums[t] for t in per_track if t in albums}),
                "labelled_tracks": len(per_track),
            }
            assert stats[s] == expected
    text = format_table1({"before": stats, "after": stats})
    assert text.splitlines()[0].split() == ["genres", "moods"]
    assert "before filtering" in text and "after filtering" in text
    assert text.splitlines()[2].split() == [
        "unique",
        "tags",
        str(stats["genres"]["unique_tags"]),
        str(stats["moods"]["unique_tags"]),
    ]


# --- prepare / load end to end


def _fold(tag: str) -> str:
    return LOSSY.get(tag, tag)


def test_prepare_end_to_end(tiny_dataset):
    prepared = prepare_dataset(tiny_dataset.config, extract=False)
    out = tiny_dataset.root / "prepared"
    names = {
        "tracks.csv",
        "vocabulary.json",
        "splits.csv",
        "splits.json",
        "skipped.csv",
        "stats.json",
        "config.yaml",
    } | {f"tags_{s}.npz" for s in SETS}
    assert {p.name for p in out.iterdir()} == names
    tracks = pd.read_csv(out / "tracks.csv", dtype=str, keep_default_na=False)
    kept = tiny_dataset.expected_kept
    assert tracks["track_id"].tolist() == kept
    assert tracks["artist_id"].tolist() == [tiny_dataset.artist[t] for t in kept]
    assert tracks["album_id"].tolist() == [tiny_dataset.album[t] for t in kept]
    assert tracks["audio_path"].tolist() == [f"audio/{t}.mp3" for t in kept]
    # skipped.csv: every dropped track with its first reason, plus the malformed id
    skipped = pd.read_csv(out / "skipped.csv", dtype={"track_id": str, "source": str, "reason": str})
    filtered = skipped.loc[skipped["source"] == "intersection filter"].set_index("track_id")["reason"]
    assert set(filtered.index) == set(tiny_dataset.expected_reasons)
    for t, reason in tiny_dataset.expected_reasons.items():
        assert filtered[t].startswith(reason)
    bad = skipped.loc[skipped["track_id"] == "not-a-track-id"].iloc[0]
    assert bad["source"].endswith("msd_amglabels_all.h5") and bad["line"] == 49
    # matrices, rows aligned with tracks.csv
    vocabulary = json.loads((out / "vocabulary.json").read_text())
    for s in SETS:
        tm = prepared.matrices[s]
        assert list(tm.vocabulary) == vocabulary[s] == sorted({_fold(g) for t in kept for g in tiny_dataset.tags[t][s]})
        dense = tm.matrix.toarray()
        for i, t in enumerate(kept):
            assert {tm.vocabulary[j] for j in np.flatnonzero(dense[i])} == {_fold(g) for g in tiny_dataset.tags[t][s]}
    # splits: whole artists, saved with a hash of the track ids
    splits = pd.read_csv(out / "splits.csv", dtype=str)
    assert splits["track_id"].tolist() == kept and splits["split"].tolist() == tracks["split"].tolist()
    assert tracks.groupby("artist_id")["split"].nunique().max() == 1
    assert set(tracks["split"]) == {"train", "validation", "test"}
    info = json.loads((out / "splits.json").read_text())
    assert info["seed"] == tiny_dataset.config.seed
    assert info["track_ids_sha256"] == hashlib.sha256("\n".join(sorted(kept)).encode()).hexdigest()
    assert sum(info["counts"].values()) == len(kept)
    # Table I
    stats = json.loads((out / "stats.json").read_text())
    assert stats == prepared.stats
    assert {s: v["labelled_tracks"] for s, v in stats["table1"]["after"].items()} == dict.fromkeys(SETS, len(kept))
    before = {s: v["labelled_tracks"] for s, v in stats["table1"]["before"].items()}
    assert before == {"genres": 48, "styles": 47, "moods": 48, "themes": 47}
    assert stats["counts"]["malformed_track_ids"] == 1
    assert stats["skipped"] == {
        "malformed track id": 1,
        "no tag in styles": 1,
        "no tag in themes": 1,
        "no metadata": 1,
        "audio file missing": 1,
    }
    assert format_table1(stats) == format_table1(stats["table1"])
    assert stats["counts"]["filter_stages"] == {
        "candidates": 48,
        "tagged_in_every_set": 46,
        "with_metadata": 45,
        "with_audio": 44,
    }


def test_prepare_reuses_splits_and_load_round_trip(tiny_dataset):
    config = tiny_dataset.config
    first = prepare_dataset(config, extract=False)
    splits_bytes = first.paths["splits"].read_bytes()
    second = prepare_dataset(config, progress=lambda _msg: None, extract=False)
    assert first.paths["splits"].read_bytes() == splits_bytes
    pd.testing.assert_frame_equal(first.tracks, second.tracks)
    loaded = load_prepared(config)
    pd.testing.assert_frame_equal(loaded.tracks, first.tracks)
    assert loaded.stats == first.stats and loaded.paths == first.paths
    for s in SETS:
        a, b = loaded.matrices[s], first.matrices[s]
        assert a.vocabulary == b.vocabulary and a.matrix.dtype == b.matrix.dtype
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        assert (a.matrix != b.matrix).nnz == 0


def test_changed_seed_or_tracks_need_resplit(tiny_dataset):
    config = tiny_dataset.config
    prepare_dataset(config, extract=False)
    other_seed = Config(seed=config.seed + 1, data=config.data)
    with pytest.raises(
        DataError, match=r"splits\.json: saved splits do not match.*saved seed 0 vs seed 1 now.*resplit=True"
    ):
        prepare_dataset(other_seed, extract=False)
    resplit = prepare_dataset(other_seed, resplit=True, extract=False)
    assert json.loads(resplit.paths["splits_json"].read_text())["seed"] == 1
    (tiny_dataset.root / "audio" / f"{tiny_dataset.expected_kept[0]}.mp3").unlink()
    with pytest.raises(DataError, match=r"saved splits cover 44 tracks, the filter now keeps 43.*--resplit"):
        prepare_dataset(other_seed, extract=False)


def test_load_prepared_missing(tmp_path):
    config = Config(data=DataConfig(root=str(tmp_path)))
    with pytest.raises(DataError, match=r"tracks\.csv: not found; run `msd-triplet prepare --config"):
        load_prepared(config)


def test_nothing_survives_the_filter(tiny_dataset):
    data = DataConfig(root=str(tiny_dataset.root), audio="nowhere/{track_id}.wav")
    with pytest.raises(
        DataError,
        match=r"no track survives the intersection filter: 48 tracks .* 46 tagged in every "
        r"set → 45 with metadata → 0 with an audio file; e\.g\. TR.* was looked for at "
        r".*nowhere/TR0000000000000000\.wav",
    ):
        prepare_dataset(Config(data=data), extract=False)


def test_prepare_reports_progress(make_dataset, tmp_path):
    data = make_dataset(tmp_path, seed=4)
    lines = []
    prepare_dataset(data.config, progress=lines.append, extract=False)
    assert any("intersection filter: 48 → 44 tracks" in line for line in lines)
    assert any(line.startswith("computed splits") for line in lines)
    assert prepare.FILTER_SOURCE == "intersection filter"


def test_all_ids_malformed_in_h5_names_the_row(tmp_path):
    frame = pd.DataFrame({"genres": [["Jazz"], ["Latin"]]}, index=["x1", "TRAAAA"])
    write_h5(frame, tmp_path / "bad.h5")
    with pytest.raises(
        DataError, match=r"bad\.h5: none of its 2 tag rows has a valid track id \(e\.g\. 'x1' on row 1\)"
    ):
        read_tag_file(tmp_path / "bad.h5")

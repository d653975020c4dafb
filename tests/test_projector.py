"""The projector files, read back by TensorBoard's own projector plugin as ``tensorboard --logdir`` serves them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msd_triplet.errors import ArgumentError, DataError
from msd_triplet.projector import projector_metadata, write_files_projector, write_projector, write_run_projector


def serve(folder: Path):
    """GET a route of TensorBoard's projector plugin for ``tensorboard --logdir folder``; asserts HTTP 200."""
    from tensorboard.plugins.base_plugin import TBContext
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug.test import Client

    apps = ProjectorPlugin(TBContext(logdir=str(folder))).get_plugin_apps()

    def get(route: str, **query):
        response = Client(apps[route]).get("/", query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    return get


def served(folder: Path, name: str = "embeddings") -> tuple[np.ndarray, list[str], list[dict]]:
    """(vectors, metadata column names, metadata rows) as the projector page receives and parses them.

    The rows are parsed as the page's ``parseMetadata`` does (tf_projector_plugin/projector_binary.js):
    lines split on "\\n", blank lines skipped, the first line is a header iff it holds a tab (else
    the one column is called "label"), fields split on tabs, "" read as null.
    """
    get = serve(folder)
    assert get("/runs").json == ["."]
    [embedding] = get("/info", run=".").json["embeddings"]
    assert embedding["tensorName"] == name
    shape = [int(n) for n in embedding["tensorShape"]]
    vectors = np.frombuffer(get("/tensor", run=".", name=name).data, np.float32).reshape(shape)
    lines = [line for line in get("/metadata", run=".", name=name).get_data(as_text=True).split("\n") if line.strip()]
    columns = ["label"]
    if "\t" in lines[0]:
        columns, lines = lines[0].split("\t"), lines[1:]
    rows = [{c: (v if v != "" else None) for c, v in zip(columns, line.split("\t"))} for line in lines]
    assert all(len(line.split("\t")) == len(columns) for line in lines)
    return vectors, columns, rows


def test_tensorboard_serves_our_vectors_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    vectors = (rng.standard_normal((5, 3)) * [1e-30, 1.0, 1e30]).astype(np.float32)
    vectors[0] = [1 / 3, np.float32(1e-45), -0.0]  # a repeating fraction, the smallest subnormal
    metadata = pd.DataFrame(
        {
            "track_id": ["T0", "T1", "T2", "T3", "T4"],
            "genre\tlist": ["Pop/Rock; Jazz", "Tab\tin tag", "line\nbreak\r\n", "", None],
            "note": ['say "hi"', "a,b", " ", np.nan, "Rock en Español"],
        }
    )
    folder = write_projector(tmp_path / "projector", vectors, metadata)

    got, columns, rows = served(folder)
    np.testing.assert_allclose(got, vectors, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got, vectors)  # "%.9g" round-trips float32 exactly
    assert columns == ["track_id", "genre list", "note"]
    assert rows == [
        {"track_id": "T0", "genre list": "Pop/Rock; Jazz", "note": 'say "hi"'},
        {"track_id": "T1", "genre list": "Tab in tag", "note": "a,b"},
        {"track_id": "T2", "genre list": "line break", "note": "(none)"},
        {"track_id": "T3", "genre list": "(none)", "note": "(none)"},
        {"track_id": "T4", "genre list": "(none)", "note": "Rock en Español"},
    ]
    assert sorted(p.name for p in folder.iterdir()) == ["embeddings.tsv", "metadata.tsv", "projector_config.pbtxt"]


def test_one_metadata_column_is_written_without_header(tmp_path):
    folder = write_projector(tmp_path, np.eye(2), pd.DataFrame({"file": ["a.mp3", "b.mp3"]}), name="songs")
    _, columns, rows = served(folder, "songs")
    assert columns == ["label"] and rows == [{"label": "a.mp3"}, {"label": "b.mp3"}]


@pytest.mark.parametrize(
    "embeddings, rows, message",
    [
        (
            np.array([[0.0, 1.0, 2.0], [3.0, 4.0, np.nan]]),
            2,
            r"not finite in float32 at 1 of 6 values, the first at row 1, column 2 \(nan\)",
        ),
        (np.array([[np.inf, 0.0]]), 1, r"not finite in float32 at 1 of 2 values, the first at row 0, column 0 \(inf\)"),
        (np.array([[1e39, 0.0]]), 1, r"not finite in float32 at 1 of 2 values, the first at row 0, column 0 \(inf\)"),
        (np.zeros(3), 3, r"shape \(3,\); need 2-D \[N, d\]"),
        (np.zeros((1, 3, 2)), 1, r"shape \(1, 3, 2\); need 2-D"),
        (np.zeros((0, 3)), 0, r"shape \(0, 3\); need .* N >= 1"),
        (np.zeros((3, 4)), 2, r"3 rows, but metadata has 2; need one metadata row per vector"),
        ([["a", "b"]], 1, r"not numbers"),
    ],
)
def test_bad_embeddings_say_what_is_wrong_and_write_nothing(tmp_path, embeddings, rows, message):
    with pytest.raises(ArgumentError, match=f"^embeddings: {message}"):
        write_projector(tmp_path / "out", embeddings, pd.DataFrame({"id": range(rows), "x": 0}))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "metadata, name, message",
    [
        ([["a"]], "embeddings", r"^metadata: got list; need a pandas DataFrame"),
        (pd.DataFrame(index=[0]), "embeddings", r"^metadata: has no columns"),
        (pd.DataFrame({"a b": [1], "a\tb": [2]}), "embeddings", r"^metadata: column names \['a b', 'a b'\] repeat"),
        (pd.DataFrame({"a": [1], "b": [2]}), "../up", r"^name: '\.\./up' is not allowed"),
        (pd.DataFrame({"a": [1], "b": [2]}), "metadata", r"^name: 'metadata' is not allowed"),
    ],
)
def test_bad_metadata_or_name(tmp_path, metadata, name, message):
    with pytest.raises(ArgumentError, match=message):
        write_projector(tmp_path / "out", np.ones((1, 2)), metadata, name=name)


def test_projector_metadata_gives_a_colouring_label_and_the_list_per_tag_set():
    table = pd.DataFrame(
        {
            "track_id": ["T1", "T2"],
            "title": ["One", "Two"],
            "artist": ["A", "B"],
            "album": ["X", "Y"],
            "split": ["test", "test"],
            "genres": ["Electronic; Pop/Rock", "Jazz"],
            "moods": ["", "Calm; Sad"],
        },
        index=[7, 3],
    )
    got = projector_metadata(table, ["genres", "moods"])
    assert got.to_dict("list") == {
        "track_id": ["T1", "T2"],
        "title": ["One", "Two"],
        "artist": ["A", "B"],
        "album": ["X", "Y"],
        "genre": ["Electronic", "Jazz"],
        "genres": ["Electronic; Pop/Rock", "Jazz"],
        "mood": ["", "Calm"],
        "moods": ["", "Calm; Sad"],
    }
    assert list(got.columns) == ["track_id", "title", "artist", "album", "genre", "genres", "mood", "moods"]
    with pytest.raises(ArgumentError, match="table has no column themes; it has track_id"):
        projector_metadata(table, ["genres", "themes"])


def test_write_run_projector_shows_the_test_split_aligned_with_its_tracks(tiny_run, tmp_path):
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.prepare import load_prepared
    from msd_triplet.runs import run_config
    from msd_triplet.training import embed_rows, load_run_model

    config = run_config(tiny_run)
    prepared = load_prepared(config)
    tracks = prepared.tracks
    test_ids = tracks.loc[tracks["split"] == "test", "track_id"].tolist()

    vectors, columns, rows = served(write_run_projector(tiny_run, tmp_path / "projector"))
    assert vectors.shape == (len(test_ids), config.model.embedding_dim)
    assert [r["track_id"] for r in rows] == test_ids
    assert columns == [
        "track_id",
        "title",
        "artist",
        "album",
        "genre",
        "genres",
        "style",
        "styles",
        "mood",
        "moods",
        "theme",
        "themes",
    ]
    # row i is track i: its vector is the model's embedding of that track, its tags are that track's
    cache = FeatureCache(cache_dir(config))
    expected = embed_rows(load_run_model(tiny_run, "best"), cache, cache.rows(np.array(test_ids)))
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-6)
    position = {t: i for i, t in enumerate(tracks["track_id"])}
    for row in rows:
        for tag_set in config.data.tag_sets:
            matrix = prepared.matrices[tag_set]
            tags = [matrix.vocabulary[j] for j in matrix.matrix.tocsr()[position[row["track_id"]]].indices]
            assert sorted(row[tag_set].split("; ")) == sorted(tags)
            assert row[tag_set[:-1]] == row[tag_set].split("; ")[0]
        assert row["title"] == "title" and row["artist"] == "name"  # the fixture's sqlite names


def test_write_files_projector_reads_what_embed_writes(tiny_run, prepared_root, tmp_path):
    from msd_triplet.embed import embed_files

    audio = sorted((prepared_root / "audio").glob("*.wav"))[:2]
    report = embed_files(audio, tiny_run, tmp_path / "X.npy", workers=1)
    assert report.embedded == 2

    vectors, columns, rows = served(write_files_projector(report.out, tmp_path / "projector"))
    np.testing.assert_array_equal(vectors, np.load(report.out))
    assert columns == ["path", "file"]
    assert rows == [{"path": str(p), "file": p.name} for p in audio]

    report.tracks.unlink()
    with pytest.raises(DataError, match=r"X\.npy: cannot read it or X\.tracks\.csv beside it"):
        write_files_projector(report.out, tmp_path / "again")


def test_cli_projector_and_embed_projector(tiny_run, prepared_root, tmp_path):
    from click.testing import CliRunner

    from msd_triplet.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["projector", str(tiny_run), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "tensorboard --logdir" in result.output
    vectors, _, _ = served(tmp_path / "p")
    assert len(vectors) > 0

    audio = sorted((prepared_root / "audio").glob("*.wav"))[:2]
    result = runner.invoke(
        main,
        [
            "embed",
            *map(str, audio),
            "--model",
            str(tiny_run),
            "--out",
            str(tmp_path / "e.npy"),
            "--workers",
            "1",
            "--projector",
            str(tmp_path / "q"),
        ],
    )
    assert result.exit_code == 0, result.output
    vectors, columns, _ = served(tmp_path / "q")
    np.testing.assert_array_equal(vectors, np.load(tmp_path / "e.npy"))

    result = runner.invoke(
        main,
        [
            "embed",
            str(audio[0]),
            "--model",
            str(tiny_run),
            "--out",
            str(tmp_path / "e.csv"),
            "--projector",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2 and "--projector needs the .npy output" in result.output
    assert not (tmp_path / "e.csv").exists()

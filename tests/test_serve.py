"""``msd-triplet serve``: every endpoint through Flask's test client, traversal attempts, bad uploads.

The neighbours are checked against scikit-learn's brute-force search, the
segment against soundfile reading the same seconds, the whole file byte for
byte. The browser test is in ``test_serve_browser.py``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import quick_tones

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser(tiny_run):
    from msd_triplet.browse import RunBrowser

    return RunBrowser(tiny_run, split="test")


@pytest.fixture(scope="module")
def client(browser):
    from msd_triplet.webapp import create_app

    app = create_app(browser, max_upload_bytes=2_000_000, neighbours=4)
    app.testing = True
    return app.test_client()


def wav_bytes(seconds: float, seed: int = 0, sr: int = 22_050) -> bytes:
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, quick_tones(seconds, sr, seed), sr, format="WAV", subtype="PCM_16")
    return out.getvalue()


def upload(client, data: bytes, name: str):
    return client.post("/api/query", data={"audio": (io.BytesIO(data), name)}, content_type="multipart/form-data")


# --------------------------------------------------------------------------- endpoints


def test_page_and_its_assets_come_from_the_server(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html  # nothing from the internet
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html
        response = client.get(asset)
        assert response.status_code == 200
        assert "https://" not in response.get_data(as_text=True)


def test_run_summary_carries_the_metrics(client, browser):
    body = client.get("/api/run").get_json()
    assert body["tracks"] == len(browser.track_ids) and body["split"] == "test"
    assert body["facets"] == ["genres", "styles", "moods", "themes"]
    assert body["neighbours"] == 4


def test_search_finds_by_id_artist_and_tag(client, browser):
    track = browser.track_ids[0]
    hits = client.get(f"/api/search?q={track.lower()}").get_json()["tracks"]
    assert [h["track_id"] for h in hits] == [track]
    artist = browser.tracks.loc[track, "artist"]
    by_artist = client.get(f"/api/search?q={artist}").get_json()["tracks"]
    assert by_artist and all(h["artist"] == artist for h in by_artist)
    genre = browser.describe(track)["tags"]["genres"][0]
    by_tag = client.get(f"/api/search?q={genre}").get_json()["tracks"]
    expected = [t for t in browser.track_ids if genre.casefold() in browser.tracks.loc[t, "genres"].casefold()]
    assert {h["track_id"] for h in by_tag} >= set(expected) and track in {h["track_id"] for h in by_tag}
    assert client.get("/api/search?q=no such thing anywhere").get_json()["tracks"] == []
    assert client.get("/api/search?limit=0").status_code == 400


def test_neighbours_equal_scikit_learn_brute_force(client, browser):
    from sklearn.neighbors import NearestNeighbors

    n = 4
    search = NearestNeighbors(n_neighbors=n + 1, algorithm="brute").fit(browser.embeddings)
    distances, expected = search.kneighbors(browser.embeddings)
    for q in range(len(browser.track_ids)):
        body = client.get(f"/api/tracks/{browser.track_ids[q]}").get_json()
        got = [r["track_id"] for r in body["neighbours"]]
        want = [browser.track_ids[j] for j in expected[q] if j != q][:n]
        got_d = np.array([r["distance"] for r in body["neighbours"]])
        np.testing.assert_allclose(np.sqrt(got_d), np.sort(distances[q][expected[q] != q])[:n], atol=1e-5)
        # ties may swap; every returned track is at one of the expected distances
        assert len(got) == n and (got == want or np.all(np.diff(got_d) >= -1e-7))
        assert [r["rank"] for r in body["neighbours"]] == list(range(1, n + 1))
        assert browser.track_ids[q] not in got


def test_shared_tags_are_the_intersection_of_the_tag_rows(client, browser):
    query = browser.track_ids[0]
    body = client.get(f"/api/tracks/{query}?n=5").get_json()
    mine = {f: set(browser.tracks.loc[query, f].split("; ")) - {""} for f in browser.facets}
    for row in body["neighbours"]:
        theirs = {f: set(browser.tracks.loc[row["track_id"], f].split("; ")) - {""} for f in browser.facets}
        for facet in browser.facets:
            assert set(row["shared"][facet]) == mine[facet] & theirs[facet]
        assert row["shared"]["artist"] == (
            browser.tracks.loc[row["track_id"], "artist_id"] == browser.tracks.loc[query, "artist_id"]
        )


def test_segment_is_the_seconds_the_model_saw(client, browser):
    import soundfile as sf

    track = browser.track_ids[1]
    response = client.get(f"/audio/{track}/segment")
    assert response.status_code == 200 and response.mimetype == "audio/wav"
    served, sr = sf.read(io.BytesIO(response.data), dtype="float32")
    features = browser.config.features
    original, native = sf.read(browser.audio_file(track), dtype="float32")
    assert native == sr == features.sample_rate
    start = int(features.offset * sr)
    reference = original[start : start + len(served)]
    assert len(served) == int(round(features.duration * sr))
    np.testing.assert_allclose(served, reference, atol=1 / 2**15 + 1e-6)  # 16-bit quantisation


def test_whole_file_byte_for_byte_with_ranges(client, browser):
    track = browser.track_ids[2]
    path = browser.audio_file(track)
    response = client.get(f"/audio/{track}/file")
    assert response.status_code == 200 and response.mimetype == "audio/wav"
    assert response.data == path.read_bytes()
    partial = client.get(f"/audio/{track}/file", headers={"Range": "bytes=100-199"})
    assert partial.status_code == 206 and partial.data == path.read_bytes()[100:200]


def test_map_has_every_track_and_a_label_per_point(client, browser):
    body = client.get("/api/map?facet=moods").get_json()
    assert len(body["points"]) == len(browser.track_ids)
    assert {p[3] for p in body["points"]} == set(browser.track_ids)
    xy = np.array([p[:2] for p in body["points"]])
    assert xy.min() >= 0 and xy.max() <= 1
    for _x, _y, label, track, *_ in body["points"]:
        name = body["labels"][label]
        assert name == "other" or name in browser.tracks.loc[track, "moods"].split("; ")
    assert client.get("/api/map?facet=nonsense").status_code == 404


def test_map_is_cached_in_the_run_and_reused(browser, tiny_run, monkeypatch):
    from msd_triplet import browse
    from msd_triplet.runfolder import RunFolder

    cached = RunFolder(tiny_run).map("test", "best")
    assert cached.is_file()
    monkeypatch.setattr(browse, "project_2d", lambda *a, **k: pytest.fail("the cached map was not reused"))
    again = browse.RunBrowser(tiny_run, split="test")
    np.testing.assert_array_equal(again.map, browser.map)


def test_curves_are_svg(client):
    response = client.get("/curves.svg")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert b"<svg" in response.data[:2000]


# --------------------------------------------------------------------------- uploads


def test_upload_of_a_track_finds_that_track_first(client, browser):
    track = browser.track_ids[3]
    response = upload(client, browser.audio_file(track).read_bytes(), "mine.wav")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["query"]["label"] == "mine.wav"
    assert body["neighbours"][0]["track_id"] == track
    assert body["neighbours"][0]["distance"] < 1e-6


@pytest.mark.parametrize(
    "data, name, status, words",
    [
        (b"this is not audio at all" * 100, "fake.mp3", 422, "fake.mp3: cannot decode audio"),
        (None, "short.wav", 422, "short.wav"),
        (b"", "empty.wav", 422, "empty"),
        (b"RIFF....", "notes.txt", 415, "notes.txt: not an audio file type"),
        (b"x" * 2_100_000, "huge.wav", 413, "upload too large"),
    ],
)
def test_bad_uploads_get_a_message_and_a_4xx(client, data, name, status, words):
    if data is None:
        data = wav_bytes(2.0)  # shorter than offset + duration
    response = upload(client, data, name)
    assert response.status_code == status
    message = response.get_json()["error"]
    assert words in message
    assert "msd-triplet-upload-" not in message  # the temporary file's name never shows


def test_silent_and_long_named_uploads(client, browser):
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, np.zeros(22_050 * 12, np.float32), 22_050, format="WAV")
    response = upload(client, out.getvalue(), "quiet.wav")
    assert response.status_code == 422 and "quiet.wav" in response.get_json()["error"]
    assert "silent" in response.get_json()["error"]

    long_name = "a" * 200 + ".wav"
    response = upload(client, browser.audio_file(browser.track_ids[0]).read_bytes(), long_name)
    assert response.status_code == 200, response.get_json()
    label = response.get_json()["query"]["label"]
    assert len(label) <= 120 and label.endswith(".wav")


def test_text_named_mp3_is_not_a_recognised_format(client):
    message = upload(client, b"just words, no audio " * 500, "words.mp3").get_json()["error"]
    assert message.startswith("words.mp3: cannot decode audio") and "pipe" not in message


def test_segment_answers_range_requests(client, browser):
    track = browser.track_ids[0]
    whole = client.get(f"/audio/{track}/segment").data
    part = client.get(f"/audio/{track}/segment", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.data == whole[1000:2000]
    assert part.headers["Accept-Ranges"] == "bytes"


def test_non_finite_metrics_become_null_json(client, browser, tmp_path, monkeypatch):
    import json

    (tmp_path / "metrics.json").write_text('{"k": 3, "facets": {"genre": {"precision": NaN, "chance": 0.5}}}')
    monkeypatch.setattr(browser, "run", tmp_path)
    text = client.get("/api/run").get_data(as_text=True)
    body = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert body["metrics"]["facets"]["genre"] == {"precision": None, "chance": 0.5}


def test_map_labels_each_colour_points_and_counts_add_up(client, browser):
    for facet in browser.facets:
        body = client.get(f"/api/map?facet={facet}").get_json()
        used = np.bincount([p[2] for p in body["points"]], minlength=len(body["labels"]))
        assert body["counts"] == used.tolist() and sum(body["counts"]) == len(browser.track_ids)
        assert all(c > 0 for c in body["counts"])
        named = [c for label, c in zip(body["labels"], body["counts"]) if label != "other"]
        assert named == sorted(named, reverse=True)


def test_upload_without_a_file_is_400(client):
    response = client.post("/api/query", data={}, content_type="multipart/form-data")
    assert response.status_code == 400 and "audio" in response.get_json()["error"]


def test_uploads_leave_no_temporary_files(client, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    upload(client, b"junk" * 100, "x.mp3")
    upload(client, wav_bytes(2.0), "y.wav")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- traversal

TRAVERSALS = [
    "/audio/..%2F..%2F..%2Fetc%2Fpasswd/file",
    "/audio/../../../etc/passwd/file",
    "/audio/%2Fetc%2Fpasswd/segment",
    "/audio/%252E%252E%252Fsecret.txt/file",
    "/audio/....//....//secret.txt/file",
    "/static/../../secret.txt",
    "/static/%2e%2e/%2e%2e/secret.txt",
    "/static/..%2f..%2fsecret.txt",
    "/static//etc/passwd",
    "/api/tracks/..%2F..%2Fsecret.txt",
    "/api/tracks/%2Fetc%2Fpasswd",
    "/api/tracks/..\\..\\secret.txt",
    "/api/map?facet=../../secret.txt",
    "/api/map?facet=%2Fetc%2Fpasswd",
    "/..%2F..%2Fsecret.txt",
    "/%2Fetc%2Fpasswd",
    "/curves.svg/../../secret.txt",
]


@pytest.fixture
def opened():
    """Paths Python opens while the list is being recorded (an audit hook; hooks cannot be removed)."""
    record: dict[str, object] = {"on": False, "paths": []}

    def hook(event: str, args: tuple) -> None:
        if record["on"] and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
            record["paths"].append(str(args[0]))

    sys.addaudithook(hook)
    yield record
    record["on"] = False


@pytest.mark.parametrize("url", TRAVERSALS)
def test_traversal_attempts_get_4xx_and_read_nothing(client, browser, tiny_run, url, opened, monkeypatch):
    from msd_triplet import browse

    secret = Path(tiny_run).parent / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    read_audio: list = []
    original = browse.RunBrowser.audio_file
    monkeypatch.setattr(browse.RunBrowser, "audio_file", lambda self, t: read_audio.append(t) or original(self, t))
    client.get("/api/run")  # warm: lazy imports and caches open files of their own
    opened["on"] = True
    response = client.get(url)
    opened["on"] = False
    assert 400 <= response.status_code < 500, (url, response.status_code)
    assert b"TOP-SECRET" not in response.data and b"root:" not in response.data
    assert read_audio == [] or all(t not in browser.row for t in read_audio)
    outside = [p for p in opened["paths"] if "secret" in p or p.startswith("/etc")]
    assert outside == [], outside


def test_the_open_recorder_sees_what_a_request_reads(client, browser, opened):
    """Positive control for the traversal test: a real read shows up in the recorded paths."""
    track = browser.track_ids[0]
    opened["on"] = True
    assert client.get(f"/audio/{track}/file").status_code == 200
    opened["on"] = False
    assert str(browser.audio_file(track)) in opened["paths"]


def test_audio_outside_the_data_and_audio_folders_is_refused(browser, tiny_run, monkeypatch):
    from msd_triplet.browse import NotFound

    secret = Path(tiny_run).parent / "elsewhere.wav"
    secret.write_bytes(wav_bytes(10.0))
    track = browser.track_ids[0]
    tracks = browser.tracks.copy()
    tracks.loc[track, "audio_path"] = str(secret)
    monkeypatch.setattr(browser, "tracks", tracks)
    with pytest.raises(NotFound, match="outside the run's data and audio folders"):
        browser.audio_file(track)
    link = browser.roots[0] / "link-out.wav"
    link.symlink_to(secret)
    try:
        tracks.loc[track, "audio_path"] = str(link)
        with pytest.raises(NotFound, match="outside"):
            browser.audio_file(track)
    finally:
        link.unlink()


def test_unknown_track_and_bad_numbers(client):
    assert client.get("/api/tracks/TRZZZZZZZZZZZZZZZZ").status_code == 404
    assert client.get("/audio/TRZZZZZZZZZZZZZZZZ/file").status_code == 404
    assert client.get("/api/tracks/x?n=abc").status_code == 400
    response = client.get("/nowhere")
    assert response.status_code == 404 and "error" in response.get_json()


def test_serve_command_is_registered():
    from click.testing import CliRunner

    from msd_triplet.cli import main

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "127.0.0.1" in result.output

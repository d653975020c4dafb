"""embed and similar: any audio through a trained model, broken files skipped and listed."""

from __future__ import annotations

import os
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import BAD_AUDIO

from msd_triplet.config import load_config
from msd_triplet.errors import DataError, MsdTripletError


def test_embed_skips_broken_files_and_embeds_the_rest(tiny_run, audio_files, tmp_path):
    from msd_triplet import audio
    from msd_triplet.embed import embed_files
    from msd_triplet.training import load_run_model

    paths = [audio_files.good["wav_22k_mono"], audio_files.good["mp3_44k_stereo"], *audio_files.bad.values()]
    report = embed_files(paths, tiny_run, tmp_path / "e.npy", batch_size=3, workers=2)
    assert (report.embedded, report.skipped) == (2, len(BAD_AUDIO))
    vectors = np.load(tmp_path / "e.npy")
    tracks = pd.read_csv(tmp_path / "e.tracks.csv")
    assert vectors.shape == (2, 8) and list(tracks["path"]) == [str(p) for p in paths[:2]]
    skipped = pd.read_csv(report.skipped_manifest)
    assert sorted(skipped["kind"]) == sorted(BAD_AUDIO.values())
    assert all(str(audio_files.bad[name]) in set(skipped["path"]) for name in BAD_AUDIO)
    # the same as decoding and transforming by hand, then the model
    config = load_config(tiny_run / "config.yaml")
    waves = np.stack([audio.read_segment(p, audio.SegmentSpec.from_config(config.features)) for p in paths[:2]])
    features = audio.log_mel(waves, **audio.log_mel_kwargs(config.features)).numpy()[..., None]
    expected = load_run_model(tiny_run).predict_on_batch(features)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)

    csv_report = embed_files([audio_files.good["wav_22k_mono"].parent], tiny_run, tmp_path / "e.csv")
    frame = pd.read_csv(tmp_path / "e.csv")
    assert csv_report.embedded == len(frame) >= len(audio_files.good) and list(frame.columns[:2]) == ["path", "e0"]


def test_embed_refuses_bad_sources_and_outputs(tiny_run, audio_files, tmp_path):
    from msd_triplet.embed import embed_files

    with pytest.raises(MsdTripletError, match="not a model"):
        embed_files([audio_files.good["wav_22k_mono"]], tmp_path, tmp_path / "e.npy")
    with pytest.raises(MsdTripletError, match="must end in .npy or .csv"):
        embed_files([tmp_path], tiny_run, tmp_path / "e.txt")
    with pytest.raises(DataError, match="no audio files"):
        embed_files([tmp_path], tiny_run, tmp_path / "e.npy")
    # a bad --out fails before anything is decoded (the model is not even loaded: no source needed)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(
        DataError, match=f"^{re.escape(str(tmp_path / 'a_file' / 'sub'))}: cannot write the output there"
    ):
        embed_files([audio_files.good["wav_22k_mono"]], tmp_path / "no-model", tmp_path / "a_file" / "sub" / "e.npy")
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        embed_files([audio_files.good["wav_22k_mono"]], tmp_path / "no-model", tmp_path / "dir.npy")
    # nothing readable: no output, but the skip manifest says why, and the error names it
    folder = tmp_path / "specials"
    (folder / "album.mp3").mkdir(parents=True)
    os.mkfifo(folder / "pipe.wav")
    (folder / "zero.wav").symlink_to("/dev/zero")
    out = tmp_path / "new" / "folder" / "e.npy"
    for paths, kinds in [([tmp_path / "mispelt.wav"], ["missing"]), ([folder], ["not_a_file"] * 3)]:
        with pytest.raises(
            DataError, match=f"nothing embedded: .*; see {re.escape(str(out.with_suffix('')))}.skipped.csv$"
        ):
            embed_files(paths, tiny_run, out)
        assert not out.exists()
        skipped = pd.read_csv(tmp_path / "new" / "folder" / "e.skipped.csv")
        assert list(skipped["kind"]) == kinds
    assert list(skipped["path"]) == [str(folder / n) for n in ("album.mp3", "pipe.wav", "zero.wav")]
    assert "a FIFO" in skipped["message"][1] and "/dev/zero" in skipped["message"][2]


def test_a_bare_keras_file_warns_that_default_features_are_assumed(tiny_run, tmp_path):
    from msd_triplet.config import FeatureConfig
    from msd_triplet.embed import load_embedder
    from msd_triplet.export import loaded_checkpoint

    checkpoint = loaded_checkpoint(tiny_run)
    with pytest.warns(UserWarning, match="assuming the defaults.*Give the run folder or the exported SavedModel"):
        embedder = load_embedder(shutil.copy(checkpoint, tmp_path / "model.keras"))
    assert embedder.features == FeatureConfig()
    # in its run's checkpoints/ folder, the run's config.yaml gives the features: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_embedder(checkpoint).features == load_config(tiny_run / "config.yaml").features


def test_similar_ranks_by_embedding_distance(tiny_run, prepared_root):
    from msd_triplet.embed import similar
    from msd_triplet.runs import run_config, split_embeddings
    from msd_triplet.training import load_run_model

    config = run_config(tiny_run)
    embeddings, positions, prepared = split_embeddings(load_run_model(tiny_run), config, "test")
    ids = prepared.tracks["track_id"].to_numpy()[positions]
    table = similar(ids[0], tiny_run, n=3)
    distances = np.sum((embeddings - embeddings[0]) ** 2, axis=1)
    distances[0] = np.inf
    assert list(table["track_id"]) == list(ids[np.argsort(distances, kind="stable")[:3]])
    np.testing.assert_allclose(table["distance"], np.sort(distances)[:3], rtol=1e-5)
    assert set(table.columns) >= {"rank", "artist_id", "album_id", "genres"}
    # the second call reads the cached index and agrees
    assert similar(ids[0], tiny_run, n=3).equals(table)
    # an audio file as the query: its own track comes first
    audio_path = config.data.path(prepared.tracks["audio_path"].to_numpy()[positions][1])
    assert similar(str(audio_path), tiny_run, n=1)["track_id"].iloc[0] == ids[1]
    with pytest.raises(DataError, match="neither a track id"):
        similar("TRNOSUCH", tiny_run)


def test_similar_reuses_its_index_for_a_run_without_best_keras(tiny_run, tmp_path, monkeypatch):
    from msd_triplet import training
    from msd_triplet.embed import split_index

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "lsi.npz"):
        shutil.copy(tiny_run / name, run / name)
    (run / "checkpoints").mkdir()
    shutil.copy(tiny_run / "checkpoints" / "last.keras", run / "checkpoints" / "last.keras")  # no best.keras
    first = split_index(run, "test", "best")
    assert (run / "index-test-best.npz").is_file()
    monkeypatch.setattr(training, "embed_rows", lambda *a: pytest.fail("the index was computed again"))
    second = split_index(run, "test", "best")
    np.testing.assert_array_equal(first[1], second[1])


def test_embed_takes_glob_patterns_and_a_file_list(runner, keep_log_level, tiny_run, audio_files, tmp_path):
    from msd_triplet.cli import main

    folder = audio_files.good["wav_22k_mono"].parent
    args = ["--model", str(tiny_run), "--workers", "1"]
    result = runner.invoke(main, ["embed", str(folder / "*.wav"), *args, "--out", str(tmp_path / "g.npy")])
    assert result.exit_code == 0, result.output
    wavs = sorted(map(str, folder.glob("*.wav")))
    kept = list(pd.read_csv(tmp_path / "g.tracks.csv")["path"])
    skipped = list(pd.read_csv(tmp_path / "g.skipped.csv")["path"])
    assert sorted(kept + skipped) == wavs and len(kept) >= 4  # short.wav and silent/broken ones are listed
    listed = [audio_files.good["flac_48k_stereo"], audio_files.good["wav_22k_mono"]]
    file_list = tmp_path / "files.txt"
    file_list.write_text(f"# two files\n{listed[0]}\n\n  {listed[1]}  \n")
    result = runner.invoke(main, ["embed", "--files-from", str(file_list), *args, "--out", str(tmp_path / "l.npy")])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "l.tracks.csv")["path"]) == list(map(str, listed))  # in the list's order
    # a pattern that matches nothing is a missing file in the manifest, not a silent no-op
    result = runner.invoke(main, ["embed", str(folder / "*.nothing"), *args, "--out", str(tmp_path / "n.npy")])
    assert result.exit_code == 1 and "nothing embedded: 1 file given" in result.output
    assert list(pd.read_csv(tmp_path / "n.skipped.csv")["kind"]) == ["missing"]
    result = runner.invoke(main, ["embed", *args, "--out", str(tmp_path / "x.npy")])
    assert result.exit_code == 2 and "--files-from" in result.output

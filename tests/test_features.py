"""The feature cache: extraction, skips, resume, shards, re-layout, and the tf.data readers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from conftest import BAD_AUDIO, GOOD_AUDIO, tid

from msd_triplet import audio, features
from msd_triplet.config import Config, DataConfig, FeatureConfig
from msd_triplet.errors import ArgumentError, DataError, MsdTripletError
from msd_triplet.features import OK, SKIPPED, TODO, FeatureCache, extract_features

FEATURES = FeatureConfig()


@pytest.fixture(scope="module")
def tracks(audio_files):
    """Every fixture file as a track, in a fixed order: (ids, paths, names)."""
    names = sorted(audio_files.all)
    return [tid(i) for i in range(len(names))], [str(audio_files.all[n]) for n in names], names


@pytest.fixture(scope="module")
def full_cache(tracks, tmp_path_factory):
    ids, paths, _ = tracks
    directory = tmp_path_factory.mktemp("cache") / "c"
    report = extract_features(ids, paths, FEATURES, directory, workers=2, batch_size=4)
    return FeatureCache(directory), report


def expected_features(path: str) -> np.ndarray:
    return audio.log_mel(audio.read_segment(path), **audio.log_mel_kwargs(FEATURES)).numpy()


def test_extraction_keeps_good_files_and_lists_every_bad_one(tracks, full_cache):
    ids, paths, names = tracks
    cache, report = full_cache
    status = dict(zip(names, cache.status()))
    assert all(status[n] == OK for n in [*GOOD_AUDIO, "silent"])
    assert all(status[n] == SKIPPED for n in BAD_AUDIO)
    assert report.complete and report.ok == len(GOOD_AUDIO) + 1 and report.skipped == len(BAD_AUDIO)
    assert report.extracted == report.ok and report.silent_now == 1
    manifest = cache.skipped().set_index("track_id")
    assert (cache.directory / "skipped.csv").is_file()
    for n, kind in BAD_AUDIO.items():
        row = manifest.loc[ids[names.index(n)]]
        assert row["kind"] == kind and row["path"] == paths[names.index(n)]
        assert row["message"].startswith(paths[names.index(n)])
    assert report.kinds == pd.Series(list(BAD_AUDIO.values())).value_counts().to_dict()


def test_cached_features_equal_the_transform_of_each_file(tracks, full_cache):
    ids, paths, names = tracks
    cache, _ = full_cache
    for n in ["mp3_44k_stereo", "wav_5_1", "ogg_32k_mono", "silent"]:
        row = names.index(n)
        got = cache.read(np.array([row]))[0]
        assert got.shape == (80, 130) and np.all(np.isfinite(got))
        np.testing.assert_allclose(got, expected_features(paths[row]), atol=1e-6)


def test_cache_rows_and_read_order(tracks, full_cache):
    ids, _, names = tracks
    cache, _ = full_cache
    good = [ids[names.index(n)] for n in sorted(GOOD_AUDIO)]
    rows = cache.rows(good[::-1])
    np.testing.assert_array_equal(cache.track_ids[rows], good[::-1])
    block = cache.read(rows)
    np.testing.assert_array_equal(block[0], cache.read(rows[:1])[0])
    with pytest.raises(DataError, match="no features"):
        cache.rows([ids[names.index("empty")]])
    with pytest.raises(DataError, match="TRNOTINTHECACHE00 is not in the feature cache"):
        cache.rows(["TRNOTINTHECACHE00"])


def test_a_rerun_decodes_nothing(tracks, full_cache):
    ids, paths, _ = tracks
    cache, _ = full_cache
    before = cache.read(np.arange(len(ids)))
    again = extract_features(ids, paths, FEATURES, cache.directory, workers=1)
    assert again.extracted == 0 and again.skipped_now == 0 and again.complete
    np.testing.assert_array_equal(FeatureCache(cache.directory).read(np.arange(len(ids))), before)


class Interrupt(Exception):
    pass


def test_resume_after_an_interrupted_extraction(tracks, full_cache, tmp_path):
    ids, paths, _ = tracks
    directory = tmp_path / "cache"

    def stop_after_two_batches(done: int, total: int) -> None:
        if done >= 6:
            raise Interrupt

    with pytest.raises(Interrupt):
        extract_features(ids, paths, FEATURES, directory, workers=1, batch_size=3, progress=stop_after_two_batches)
    status = FeatureCache(directory).status()
    assert np.count_nonzero(status != TODO) == 6  # the batches finished before the stop were saved
    resumed = extract_features(ids, paths, FEATURES, directory, workers=2, batch_size=3)
    assert resumed.complete and resumed.extracted + resumed.skipped_now == len(ids) - 6
    reference, _ = full_cache
    np.testing.assert_array_equal(FeatureCache(directory).status(), reference.status())
    ok = np.flatnonzero(reference.status() == OK)
    np.testing.assert_allclose(FeatureCache(directory).read(ok), reference.read(ok), atol=1e-6)
    pd.testing.assert_frame_equal(FeatureCache(directory).skipped(), reference.skipped())


@pytest.mark.slow
def test_resume_after_a_hard_kill(tracks, full_cache, tmp_path):
    """SIGKILL in the middle of a run (no clean-up code runs); the rerun completes the same cache."""
    ids, paths, _ = tracks
    directory = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import os, signal
        from msd_triplet.config import FeatureConfig
        from msd_triplet.features import extract_features
        def progress(done, total):
            if done >= 8:
                os.kill(os.getpid(), signal.SIGKILL)
        extract_features({ids!r}, {paths!r}, FeatureConfig(), {str(directory)!r}, workers=2, batch_size=2,
                         checkpoint_seconds=0.0, progress=progress)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert killed.returncode == -9
    saved = np.count_nonzero(FeatureCache(directory).status() != TODO)
    assert 0 < saved < len(ids)
    resumed = extract_features(ids, paths, FEATURES, directory, workers=2)
    assert resumed.complete and resumed.extracted + resumed.skipped_now == len(ids) - saved
    reference, _ = full_cache
    np.testing.assert_array_equal(FeatureCache(directory).status(), reference.status())
    ok = np.flatnonzero(reference.status() == OK)
    np.testing.assert_allclose(FeatureCache(directory).read(ok), reference.read(ok), atol=1e-6)


def test_shards_fill_one_cache(tracks, full_cache, tmp_path):
    ids, paths, _ = tracks
    directory = tmp_path / "cache"
    first = extract_features(ids, paths, FEATURES, directory, shard=(1, 3), workers=1)
    assert first.shards == [1] and not first.complete and first.todo == len(ids) - (2 * len(ids) // 3 - len(ids) // 3)
    with pytest.raises(DataError, match="created with 3 shard"):
        extract_features(ids, paths, FEATURES, directory, shard=(0, 2))
    extract_features(ids, paths, FEATURES, directory, shard=(0, 3), workers=1)
    rest = extract_features(ids, paths, FEATURES, directory, workers=1)  # no shard: whatever is left
    assert rest.complete and rest.shards == [0, 1, 2]
    assert sorted(p.name for p in directory.glob("shard-*")) == [f"shard-0000{i}-of-00003" for i in range(3)]
    reference, _ = full_cache
    cache = FeatureCache(directory)
    np.testing.assert_array_equal(cache.status(), reference.status())
    np.testing.assert_allclose(cache.read(np.arange(len(ids))), reference.read(np.arange(len(ids))), atol=1e-6)
    assert len(cache.skipped()) == len(BAD_AUDIO)


def test_a_changed_track_list_keeps_what_was_extracted(tracks, full_cache, tmp_path):
    ids, paths, names = tracks
    directory = tmp_path / "cache"
    half = len(ids) // 2
    extract_features(ids[:half], paths[:half], FEATURES, directory, workers=1)
    order = list(range(len(ids)))[::-1]  # every track, in another order
    report = extract_features([ids[i] for i in order], [paths[i] for i in order], FEATURES, directory, workers=1)
    assert report.complete and report.extracted + report.skipped_now == len(ids) - half
    cache = FeatureCache(directory)
    reference, _ = full_cache
    np.testing.assert_array_equal(cache.track_ids, [ids[i] for i in order])
    np.testing.assert_array_equal(cache.status(), reference.status()[order])
    good = [ids[names.index(n)] for n in GOOD_AUDIO]
    np.testing.assert_allclose(cache.read(cache.rows(good)), reference.read(reference.rows(good)), atol=1e-6)
    assert set(cache.skipped()["track_id"]) == set(reference.skipped()["track_id"])
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no staging folders left behind
    with pytest.raises(DataError, match="shards must share one list"):
        extract_features(ids[:3], paths[:3], FEATURES, directory, shard=(0, 1))


def test_cache_key_and_parameters(tmp_path, tracks):
    ids, paths, _ = tracks
    assert features.cache_key(FeatureConfig()) == features.cache_key(FeatureConfig(cache="elsewhere"))
    assert features.cache_key(FeatureConfig()) != features.cache_key(FeatureConfig(n_mels=64))
    assert features.cache_key(FeatureConfig()) != features.cache_key(FeatureConfig(precision="float64"))
    config = Config(data=DataConfig(root=str(tmp_path)))
    assert features.cache_dir(config) == tmp_path / "prepared" / "features" / features.cache_key(config.features)
    directory = tmp_path / "c"
    extract_features(ids[:2], paths[:2], FeatureConfig(n_mels=40, duration=2.0), directory, workers=1)
    assert FeatureCache(directory).shape == (40, 44)
    with pytest.raises(DataError, match="other feature parameters"):
        extract_features(ids[:2], paths[:2], FEATURES, directory)
    with pytest.raises(DataError, match="no feature cache here"):
        FeatureCache(tmp_path / "nothing")


def test_concurrent_creation_keeps_the_first_layout(tracks, tmp_path, monkeypatch):
    """Two machines create the same cache at once: the loser must use the winner's files."""
    from msd_triplet import featurecache

    ids, paths, _ = tracks
    directory = tmp_path / "cache"
    real_create = featurecache._create

    def create_while_another_machine_wins(staging, *args):
        real_create(staging, *args)
        if not directory.exists():  # the other machine finishes its layout first
            real_create(tmp_path / "other", *args)
            (tmp_path / "other").rename(directory)
            (directory / "marker").write_text("winner")

    monkeypatch.setattr(featurecache, "_create", create_while_another_machine_wins)
    report = extract_features(ids[:4], paths[:4], FEATURES, directory, shard=(0, 2), workers=1)
    assert (directory / "marker").read_text() == "winner"
    assert report.shards == [0] and FeatureCache(directory).status()[:2].tolist() != [TODO, TODO]
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


@pytest.mark.parametrize("text,expected", [("0/1", (0, 1)), ("3/4", (3, 4))])
def test_parse_shard(text, expected):
    assert features.parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "-1/2", "1", "a/b", "1/0"])
def test_parse_shard_rejects(text):
    with pytest.raises(ValueError, match="shard"):
        features.parse_shard(text)


def test_argument_errors_are_package_errors(tmp_path):
    # one error line at the command line, and still a ValueError for callers that catch that
    from msd_triplet.featurecache import open_or_create

    for call, match in [
        (lambda: features.parse_shard("4/4"), r"shard '4/4': need 0 <= i < n"),
        (
            lambda: open_or_create(tmp_path, ["TR1", "TR2", "TR1"], ["a", "b", "c"], FeatureConfig(), None),
            "track_ids: 1 repeated among 3",
        ),
        (lambda: extract_features(["TR1"], [], FeatureConfig(), tmp_path), "1 track ids but 0 audio"),
    ]:
        with pytest.raises(ArgumentError, match=match) as info:
            call()
        assert isinstance(info.value, MsdTripletError) and isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- readers


def _batches(dataset) -> list:
    return list(dataset.as_numpy_iterator())


def test_feature_dataset_yields_aligned_targets(full_cache):
    cache, _ = full_cache
    rows = np.flatnonzero(cache.status() == OK)
    targets = (rows * 10).astype(np.int64), np.stack([rows, -rows], 1).astype(np.float32)
    batches = _batches(features.feature_dataset(cache, rows, targets, batch_size=4, seed=3, epochs=1))
    assert [len(b[0]) for b in batches] == [4, 4, len(rows) - 8]
    seen = []
    for x, (t_int, t_vec) in batches:
        assert x.shape[1:] == (80, 130, 1) and x.dtype == np.float32
        got_rows = t_int // 10
        np.testing.assert_array_equal(t_vec[:, 0], got_rows)
        np.testing.assert_array_equal(x[..., 0], cache.read(got_rows))
        seen.extend(got_rows)
    assert sorted(seen) == sorted(rows)


def test_feature_dataset_shuffles_per_epoch_reproducibly(full_cache):
    cache, _ = full_cache
    rows = np.arange(len(cache))  # read() does not care about status
    order = lambda ds: [tuple(b[1]) for b in _batches(ds)]  # noqa: E731
    make = lambda **kw: features.feature_dataset(cache, rows, rows, batch_size=5, drop_remainder=True, **kw)  # noqa: E731
    three = order(make(seed=11, epochs=3))
    per_epoch = len(rows) // 5
    assert len(three) == 3 * per_epoch
    assert three[:per_epoch] != three[per_epoch : 2 * per_epoch]  # a new order every epoch
    assert three == order(make(seed=11, epochs=3))  # same seed, same batches
    assert three != order(make(seed=12, epochs=3))
    assert three[per_epoch:] == order(make(seed=11, epochs=2, first_epoch=1))  # a resumed run sees the same
    unshuffled = order(features.feature_dataset(cache, rows, rows, batch_size=5, epochs=1))
    assert sum(map(list, unshuffled), []) == list(rows)


def test_feature_dataset_without_targets_and_bad_targets(full_cache):
    cache, _ = full_cache
    rows = np.flatnonzero(cache.status() == OK)
    x = next(iter(features.feature_dataset(cache, rows, batch_size=2, channel_axis=False)))
    assert tuple(x.shape) == (2, 80, 130)
    with pytest.raises(ValueError, match="target array has 2 rows"):
        features.feature_dataset(cache, rows, np.zeros(2), batch_size=2)
    assert features.steps_per_epoch(10, 4) == 3 and features.steps_per_epoch(10, 4, drop_remainder=True) == 2


# --------------------------------------------------------------------------- prepare


def test_prepare_extracts_features_and_drops_unreadable_audio(tiny_dataset, audio_files):
    from msd_triplet.prepare import prepare_dataset

    good = audio_files.good["mp3_22k_mono"].read_bytes()
    readable = tiny_dataset.expected_kept[::2]
    for t in readable:  # the others stay empty files
        (tiny_dataset.root / "audio" / f"{t}.mp3").write_bytes(good)
    lines = []
    prepared = prepare_dataset(tiny_dataset.config, progress=lines.append, workers=1)
    assert sorted(prepared.tracks["track_id"]) == sorted(readable)
    skipped = pd.read_csv(prepared.paths["skipped"], dtype=str)
    empty = skipped.loc[skipped["reason"].str.startswith("audio empty: "), "track_id"]
    assert sorted(empty) == sorted(set(tiny_dataset.expected_kept) - set(readable))
    stats = prepared.stats
    assert stats["counts"]["filter_stages"]["readable_audio"] == len(readable)
    assert stats["counts"]["features"]["unreadable_by_kind"] == {"empty": len(empty)}
    assert stats["skipped"]["audio empty"] == len(empty)
    assert stats["table1"]["after"]["genres"]["labelled_tracks"] == len(readable)
    assert any(line.startswith(f"features: {len(readable)} readable") for line in lines)
    cache = FeatureCache(features.cache_dir(tiny_dataset.config))
    rows = cache.rows(prepared.tracks["track_id"])
    assert cache.read(rows).shape == (len(readable), 80, 130)


def test_row_writer_writes_rows_in_place(tmp_path):
    from msd_triplet.featurecache import RowWriter

    path = tmp_path / "a.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(7, 2, 3)).flush()
    values = np.arange(4 * 6, dtype=np.float32).reshape(4, 2, 3)
    with RowWriter(path, (2, 3)) as writer:
        writer.write(np.array([1, 2, 5, 3]), values)
        writer.sync()
        with pytest.raises(ArgumentError, match=r"values: shape \(4, 2, 3\) for 1 rows; expected \(1, 2, 3\)"):
            writer.write(np.array([0]), values)
    expected = np.zeros((7, 2, 3), np.float32)
    expected[[1, 2, 5, 3]] = values
    np.testing.assert_array_equal(np.load(path), expected)

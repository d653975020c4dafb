"""Feature extraction and embedding on Apache Beam (DirectRunner, 2 worker processes) against the local path.

On a small embedded demo world (every kind of broken file included): the
Beam feature cache equals the local one (same rows, features within 1e-6,
same skip manifests, same prepared files); Beam embeddings equal the local
``embed`` within 1e-5 with the same track list and skip manifest; a
pipeline killed with SIGKILL in the middle and run again redoes no finished
piece and ends equal to an uninterrupted run.

Skipped when Apache Beam is not installed, unless ``MSD_TRIPLET_REQUIRE_BEAM=1``
(set by ``.ci/run``, which installs the [beam] extra), where that fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DEMO_TRACKS = 90
CONFIG = """\
name: beamtest
seed: 42
data:
  root: {root}
  prepared: {prepared}
  split_proportions: [0.7, 0.1, 0.2]
features:
  cache: {cache}
"""


@pytest.fixture(scope="module")
def beam():
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        if os.environ.get("MSD_TRIPLET_REQUIRE_BEAM") == "1":
            pytest.fail("MSD_TRIPLET_REQUIRE_BEAM=1 but apache_beam is not installed (pip install -e .[beam])")
        pytest.skip("Apache Beam is not installed (pip install -r requirements-beam.txt -e .[beam])")
    from msd_triplet import pipelines

    return pipelines


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory) -> Path:
    """A small demo data set (broken files of every kind included), and its local preparation."""
    from msd_triplet import synthetic
    from msd_triplet.config import load_config
    from msd_triplet.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("beam-demo")
    synthetic.make_demo_data(root / "data", tracks=DEMO_TRACKS, seed=11, workers=2)
    prepare_dataset(load_config(_config(root, "local")), workers=2)
    return root


def _config(root: Path, name: str) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(CONFIG.format(root=root / "data", prepared=root / f"prepared-{name}", cache=root / f"cache-{name}"))
    return path


def _cache(root: Path, name: str):
    from msd_triplet.config import load_config
    from msd_triplet.featurecache import FeatureCache, cache_dir

    return FeatureCache(cache_dir(load_config(root / f"{name}.yaml")))


def assert_same_cache(a, b) -> None:
    assert list(a.track_ids) == list(b.track_ids) and list(a.audio_paths) == list(b.audio_paths)
    assert np.array_equal(a.status(), b.status())
    ok = np.flatnonzero(a.status() == 1)
    assert len(ok) > 0
    np.testing.assert_allclose(b.read(ok), a.read(ok), rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(a.skipped(), b.skipped())
    assert (a.directory / "skipped.csv").read_bytes() == (b.directory / "skipped.csv").read_bytes()


def _kill_when(command: list[str], folder: Path, pattern: str, at_least: int, cwd: Path) -> set[str]:
    """Start ``command`` in its own session; SIGKILL all of it once ``folder`` holds ``at_least`` files
    matching ``pattern``; return the names found at that moment."""
    process = subprocess.Popen(
        command, cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    found: set[str] = set()
    try:
        while time.monotonic() < deadline and process.poll() is None:
            found = {p.name for p in folder.glob(pattern)} if folder.is_dir() else set()
            if len(found) >= at_least:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the pipeline ended before it was killed: {err.decode()[-2000:]}"
    return found


def _msd_triplet(*args: str) -> list[str]:
    return [sys.executable, "-m", "msd_triplet.cli", *args]


# --------------------------------------------------------------------------- features


@pytest.mark.slow
def test_beam_feature_cache_equals_the_local_one(beam, demo_world):
    from msd_triplet.config import load_config
    from msd_triplet.prepare import prepare_dataset

    config = load_config(_config(demo_world, "beam"))
    prepare_dataset(config, beam=beam.BeamRun("DirectRunner", workers=2, chunk_size=16))
    local, on_beam = _cache(demo_world, "local"), _cache(demo_world, "beam")
    assert_same_cache(local, on_beam)
    assert set(on_beam.skipped()["kind"]) >= {"empty", "undecodable", "too_short", "truncated"}
    assert not (on_beam.directory / "beam-chunks").exists()  # every chunk stored, then deleted
    for name in ("tracks.csv", "skipped.csv", "splits.csv", "tags_genres.npz"):
        assert (demo_world / "prepared-local" / name).read_bytes() == (demo_world / "prepared-beam" / name).read_bytes()
    stats = (demo_world / "prepared-beam" / "stats.json").read_text()
    assert '"runner": "DirectRunner"' in stats


@pytest.mark.slow
def test_killed_feature_pipeline_redoes_no_finished_chunk(beam, demo_world):
    from msd_triplet.config import load_config
    from msd_triplet.featurecache import cache_dir
    from msd_triplet.prepare import _ingest

    config_path = _config(demo_world, "killed")
    config = load_config(config_path)
    staging = cache_dir(config) / "beam-chunks"
    chunk = 6
    command = ["prepare", "--config", str(config_path), "--runner", "DirectRunner", "--workers", "2"]
    finished = _kill_when(_msd_triplet(*command, f"--chunk-size={chunk}"), staging, "chunk-*.npz", 3, demo_world)
    n_rows = len(_cache(demo_world, "local"))
    n_chunks = -(-n_rows // chunk)
    assert 3 <= len(finished) < n_chunks, "killed in the middle"
    finished_numbers = {int(name[6:-4]) for name in finished}

    tracks = _ingest(config, lambda _m: None).tracks
    report = beam.extract_tracks_beam(config, tracks, beam.BeamRun("DirectRunner", workers=2, chunk_size=chunk))
    assert set(report.chunks_resumed) >= finished_numbers  # stored, not computed again
    assert not set(report.chunks_run) & set(report.chunks_resumed)
    assert set(report.chunks_run) | set(report.chunks_resumed) == set(range(n_chunks))
    assert report.complete
    assert_same_cache(_cache(demo_world, "local"), _cache(demo_world, "killed"))


# --------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def savedmodel(tiny_run, tmp_path_factory) -> Path:
    from msd_triplet.export import export_savedmodel

    return export_savedmodel(tiny_run, tmp_path_factory.mktemp("beam-export") / "sm")


@pytest.mark.slow
def test_beam_embeddings_equal_local_embed(beam, demo_world, savedmodel, tiny_run, tmp_path):
    from msd_triplet.embed import embed_files

    audio = demo_world / "data" / "audio"
    local = embed_files([audio], savedmodel, tmp_path / "local.npy", shard_size=25, workers=2)
    on_beam = beam.embed_files_beam(
        [audio], savedmodel, tmp_path / "beam.npy", beam.BeamRun("DirectRunner", workers=2), shard_size=25
    )
    assert on_beam.embedded == local.embedded > 0 and on_beam.skipped == local.skipped > 0
    np.testing.assert_allclose(np.load(on_beam.out), np.load(local.out), rtol=0, atol=1e-5)
    assert on_beam.tracks.read_bytes() == local.tracks.read_bytes()
    assert on_beam.skipped_manifest.read_bytes() == local.skipped_manifest.read_bytes()
    assert not (tmp_path / "beam.shards").exists() and not (tmp_path / "local.shards").exists()
    # the SavedModel computes what the run's Keras model computes
    keras_run = embed_files([audio], tiny_run, tmp_path / "keras.npy", shard_size=1000, workers=2)
    np.testing.assert_allclose(np.load(keras_run.out), np.load(local.out), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_killed_embedding_pipeline_redoes_no_finished_shard(beam, demo_world, savedmodel, tmp_path):
    from msd_triplet.embed import embed_files

    audio = demo_world / "data" / "audio"
    out = tmp_path / "killed.npy"
    command = ["embed", str(audio), "--model", str(savedmodel), "--out", str(out), "--shard-size", "5"]
    finished = _kill_when(
        _msd_triplet(*command, "--runner", "DirectRunner", "--workers", "2"),
        tmp_path / "killed.shards",
        "shard-*.npz",
        3,
        tmp_path,
    )
    assert not out.exists()
    shards = tmp_path / "killed.shards"
    before = {name: (shards / name).stat() for name in finished}
    report = beam.embed_files_beam(
        [audio], savedmodel, out, beam.BeamRun("DirectRunner", workers=2), shard_size=5, keep_shards=True
    )
    assert len(before) <= report.shards_resumed < report.shards
    for name, stat in before.items():  # not rewritten: same inode, same modification time
        again = (shards / name).stat()
        assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), name
    whole = embed_files([audio], savedmodel, tmp_path / "whole.npy", shard_size=5, workers=2)
    np.testing.assert_allclose(np.load(out), np.load(whole.out), rtol=0, atol=1e-5)
    assert report.tracks.read_bytes() == whole.tracks.read_bytes()
    assert report.skipped_manifest.read_bytes() == whole.skipped_manifest.read_bytes()


# --------------------------------------------------------------------------- errors


def test_bad_beam_settings_are_one_line_errors(beam, runner, keep_log_level, tiny_run, tmp_path):
    from msd_triplet.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    cases = [
        (["prepare", "--config", str(config), "--project=p"], 2, "Beam pipeline options need --runner"),
        (["prepare", "--config", str(config), "--chunk-size", "5"], 2, "--chunk-size need(s) --runner"),
        (["prepare", "--config", str(config), "--runner", "DirectRunner", "--shard", "0/2"], 2, "leave out --shard"),
        (["prepare", "--config", str(config), "--runner", "DirectRunner", "--direkt=2"], 1, "not known to Apache"),
        (["prepare", "--config", str(config), "--runner", "DataflowRunner", "--workers", "2"], 1, "--num_workers"),
        (["prepare", "--config", str(config), "--runner", "DirectRunner", "stray"], 2, "--name=value"),
        (["embed", str(tmp_path), "--model", str(tiny_run), "--out", str(tmp_path / "e.npy"), "--runner",
          "DirectRunner"], 1, "not an exported SavedModel"),
        (["embed", str(tmp_path), "--model", str(tiny_run), "--out", str(tmp_path / "e.npy"), "--x=1"], 2, "--runner"),
    ]  # fmt: skip
    for args, code, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_a_missing_beam_says_how_to_install_it(runner, keep_log_level, monkeypatch, tmp_path):
    from msd_triplet.cli import main

    monkeypatch.setitem(sys.modules, "apache_beam", None)  # import apache_beam now raises ImportError
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    result = runner.invoke(main, ["prepare", "--config", str(config), "--runner", "DirectRunner"])
    assert result.exit_code == 1 and "Apache Beam is not installed" in result.output and ".[beam]" in result.output


# --------------------------------------------------------------------------- the local path (no Beam needed)


@pytest.mark.slow
def test_local_embed_killed_mid_job_redoes_no_finished_shard(demo_world, savedmodel, tmp_path):
    from msd_triplet.embed import embed_files

    audio = demo_world / "data" / "audio"
    out = tmp_path / "local.npy"
    command = ["embed", str(audio), "--model", str(savedmodel), "--out", str(out), "--shard-size", "5"]
    finished = _kill_when(
        _msd_triplet(*command, "--workers", "1"), tmp_path / "local.shards", "shard-*.npz", 3, tmp_path
    )
    shards = tmp_path / "local.shards"
    before = {name: (shards / name).stat() for name in finished}
    report = embed_files([audio], savedmodel, out, shard_size=5, workers=2, keep_shards=True)
    assert len(before) <= report.shards_resumed < report.shards
    for name, stat in before.items():
        again = (shards / name).stat()
        assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), name
    whole = embed_files([audio], savedmodel, tmp_path / "whole.npy", shard_size=5, workers=2)
    np.testing.assert_array_equal(np.load(out), np.load(whole.out))
    assert report.tracks.read_bytes() == whole.tracks.read_bytes()
    assert report.skipped_manifest.read_bytes() == whole.skipped_manifest.read_bytes()


def test_shards_of_another_job_are_replaced_not_mixed(audio_files, savedmodel, tmp_path, monkeypatch):
    from msd_triplet import embed

    files = sorted(audio_files.good.values())
    out = tmp_path / "e.npy"
    embed.embed_files(files[:4], savedmodel, out, shard_size=2, workers=1, keep_shards=True)
    calls = []
    original = embed._embed_shard
    monkeypatch.setattr(embed, "_embed_shard", lambda job, i, *a: calls.append(i) or original(job, i, *a))
    again = embed.embed_files(files[:4], savedmodel, out, shard_size=2, workers=1, keep_shards=True)
    assert calls == [] and again.shards_resumed == 2  # the same job: nothing redone
    with pytest.warns(UserWarning, match="2 shard\\(s\\) of an earlier job"):
        other = embed.embed_files(files[1:5], savedmodel, out, shard_size=2, workers=1)
    assert calls == [0, 1] and other.shards_resumed == 0
    assert list(pd.read_csv(other.tracks)["path"]) == list(map(str, files[1:5]))
    assert not (tmp_path / "e.shards").exists()


def test_store_rows_fills_a_cache_by_track_id_once(tmp_path):
    from msd_triplet.config import FeatureConfig
    from msd_triplet.featurecache import OK, SKIPPED, TODO, open_or_create, store_rows

    features = FeatureConfig()
    ids = [f"T{i}" for i in range(7)]
    cache = open_or_create(tmp_path / "c", ids, [f"a/{t}.mp3" for t in ids], features, (0, 3))
    shape = cache.shape
    values = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    stored = store_rows(cache, ["T5", "T1", "T9", "T3"], values, ["", "", "", "empty"], ["", "", "", "a/T3.mp3: empty"])
    assert stored == (2, 1)  # T9 is not in the cache
    assert list(cache.status()) == [TODO, OK, TODO, SKIPPED, TODO, OK, TODO]
    np.testing.assert_array_equal(cache.read(np.array([5, 1])), values[:2])
    assert cache.skipped().to_dict("records") == [
        {"row": "3", "track_id": "T3", "path": "a/T3.mp3", "kind": "empty", "message": "a/T3.mp3: empty"}
    ]
    # the same rows again (a chunk stored twice) change nothing
    assert store_rows(cache, ["T5", "T3"], values[2:], ["", ""], ["", ""]) == (0, 0)
    np.testing.assert_array_equal(cache.read(np.array([5])), values[:1])
    assert list(cache.status()) == [TODO, OK, TODO, SKIPPED, TODO, OK, TODO]
    with pytest.raises(ValueError, match="log_mel: shape"):
        store_rows(cache, ["T0"], values, [""], [""])


def test_shard_files_round_trip_and_hide_unfinished_writes(tmp_path):
    from msd_triplet import shardfiles

    arrays = {"paths": np.array(["a", "bé"]), "x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    shardfiles.write_npz(shardfiles.join(tmp_path, "shard-1.npz"), arrays)
    (tmp_path / ".shard-2.npz.abc.tmp").write_bytes(b"half")  # what a killed writer leaves
    assert shardfiles.list_names(tmp_path, "shard-*.npz") == ["shard-1.npz"]
    back = shardfiles.read_npz(tmp_path / "shard-1.npz")
    assert back.keys() == arrays.keys() and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    assert shardfiles.list_names(tmp_path / "nothing-here", "*.npz") == []
    shardfiles.delete([str(tmp_path / "shard-1.npz"), str(tmp_path / "never.npz")])
    assert shardfiles.list_names(tmp_path, "*.npz") == []
    assert shardfiles.is_url("gs://b/x") and not shardfiles.is_url("/tmp/x")
    assert shardfiles.join("gs://b/x/", "y") == "gs://b/x/y"
    shardfiles.remove_folder(tmp_path, "shard-")  # the killed write's leftover, then the empty folder
    assert not tmp_path.exists()


# --------------------------------------------------------------------------- results and audio behind a URL


@pytest.fixture(scope="module")
def url_scheme(beam):
    """``msdtest:///abs/path``: a Beam file system (registered by subclassing) over the local disk, so the
    URL code paths run without a cloud account; in this process only (not in DirectRunner workers)."""
    from apache_beam.io.localfilesystem import LocalFileSystem

    prefix = "msdtest://"

    def strip(path: str) -> str:
        return path[len(prefix) :] if path.startswith(prefix) else path

    class PrefixedLocal(LocalFileSystem):
        @classmethod
        def scheme(cls):
            return "msdtest"

        def _list(self, dir_or_prefix):
            for metadata in super()._list(strip(dir_or_prefix)):
                metadata.path = prefix + metadata.path
                yield metadata

        def create(self, path, *args, **kwargs):
            return super().create(strip(path), *args, **kwargs)

        def open(self, path, *args, **kwargs):
            return super().open(strip(path), *args, **kwargs)

        def rename(self, sources, destinations):
            return super().rename([strip(p) for p in sources], [strip(p) for p in destinations])

        def exists(self, path):
            return super().exists(strip(path))

        def delete(self, paths):
            return super().delete([strip(p) for p in paths])

    yield prefix, PrefixedLocal  # the class must stay referenced to stay registered


def test_result_files_behind_a_url(url_scheme, tmp_path):
    from msd_triplet import shardfiles

    prefix, _ = url_scheme
    folder = f"{prefix}{tmp_path}/staging"
    (tmp_path / "staging").mkdir()
    shardfiles.write_npz(shardfiles.join(folder, "chunk-0000001.npz"), {"x": np.arange(3)})
    (tmp_path / "staging" / "chunk-0000002.npz.tmp-0123456789ab").write_bytes(b"half")  # a killed write
    assert shardfiles.list_names(folder, "chunk-*.npz") == ["chunk-0000001.npz"]
    assert np.array_equal(shardfiles.read_npz(shardfiles.join(folder, "chunk-0000001.npz"))["x"], np.arange(3))
    assert np.array_equal(np.load(tmp_path / "staging" / "chunk-0000001.npz")["x"], np.arange(3))
    shardfiles.delete([shardfiles.join(folder, "chunk-0000001.npz"), shardfiles.join(folder, "gone.npz")])
    shardfiles.remove_folder(folder, "chunk-")
    assert list((tmp_path / "staging").iterdir()) == []


def test_audio_behind_a_url_decodes_as_the_local_file(url_scheme, audio_files):
    from msd_triplet.beamjobs import decode_paths
    from msd_triplet.config import FeatureConfig

    prefix, _ = url_scheme
    local = [str(audio_files.good["mp3_44k_stereo"]), str(audio_files.bad["short_wav"]), str(audio_files.silent)]
    urls = [prefix + p for p in local] + [f"{prefix}/no/such/file.mp3"]
    features = FeatureConfig()
    (expected,) = list(decode_paths(local, features, batch_size=8))
    batches = list(decode_paths(urls, features, batch_size=2))  # two batches: copied two files at a time
    assert [list(b.rows) for b in batches] == [[0, 1], [2, 3]]
    got = np.concatenate([b.log_mel for b in batches])
    np.testing.assert_array_equal(got[:3], expected.log_mel)
    kinds = [k for b in batches for k in b.kinds]
    messages = [m for b in batches for m in b.messages]
    assert kinds == ["", "too_short", "", "missing"]
    assert messages[1].startswith(urls[1] + ":") and messages[3].startswith(urls[3] + ":")


def test_audio_root_moves_the_workers_paths_only(beam, demo_world):
    from msd_triplet.config import load_config

    config = load_config(_config(demo_world, "local"))
    cache = _cache(demo_world, "local")
    moved = beam._worker_paths(config, cache, "gs://bucket/msd/")
    root = str(demo_world / "data") + "/"
    assert all(p.startswith(root) for p in cache.audio_paths)
    assert list(moved) == ["gs://bucket/msd/" + p[len(root) :] for p in cache.audio_paths]
    assert list(beam._worker_paths(config, cache, None)) == list(cache.audio_paths)


def test_beam_embeds_audio_behind_url_globs(url_scheme, savedmodel, audio_files, tmp_path):
    """URL inputs (a glob and a single file) in the launcher's process: the in-memory DirectRunner, where the
    test file system is registered; the vectors equal the local embed of the same files."""
    from msd_triplet import pipelines
    from msd_triplet.embed import embed_files
    from msd_triplet.errors import MsdTripletError

    prefix, _ = url_scheme
    folder = audio_files.good["wav_22k_mono"].parent
    inputs = [f"{prefix}{folder}/*.wav", f"{prefix}{audio_files.good['mp3_44k_stereo']}", f"{prefix}/nothing/*.mp3"]
    run = pipelines.BeamRun("DirectRunner", args=("--direct_running_mode=in_memory",), workers=1)
    report = pipelines.embed_files_beam(inputs, savedmodel, tmp_path / "u.npy", run, shard_size=3)
    wavs = sorted(map(str, folder.glob("*.wav")))
    local = embed_files([*wavs, audio_files.good["mp3_44k_stereo"]], savedmodel, tmp_path / "l.npy", workers=1)
    kept = list(pd.read_csv(report.tracks)["path"])
    assert kept == [prefix + p for p in pd.read_csv(local.tracks)["path"]]
    np.testing.assert_allclose(np.load(report.out), np.load(local.out), rtol=0, atol=1e-5)
    skipped = pd.read_csv(report.skipped_manifest)
    assert list(skipped["path"])[-1] == f"{prefix}/nothing/*.mp3" and list(skipped["kind"])[-1] == "missing"
    assert all(m.startswith(p + ":") for p, m in zip(skipped["path"], skipped["message"]))
    with pytest.raises(MsdTripletError, match="a URL; the local embed reads files on this machine"):
        embed_files(inputs[:1], savedmodel, tmp_path / "x.npy")

"""Apache Beam's DirectRunner (2 worker processes) against the local path, in one run, on the demo audio.

Two jobs, each done both ways on the same files, in this process:

* **features**: every prepared track's log-mel into a fresh feature cache:
  :func:`msd_triplet.features.extract_tracks` (decoding threads = usable CPUs)
  against :func:`msd_triplet.pipelines.extract_tracks_beam`
  (``--direct_num_workers=2``, ``multi_processing``, ``--chunk-size`` rows per
  work item, stored into the cache by the launcher at the end);
* **embeddings**: every audio file under the demo's ``audio/`` through the
  exported SavedModel: :func:`msd_triplet.embed.embed_files` against
  :func:`msd_triplet.pipelines.embed_files_beam` (RunInference).

Wall time of the whole call, start-up included (Beam's worker processes
import TensorFlow and load the model once each); files per second; the ratio
Beam / local (> 1: Beam is faster). Beam's fixed cost is measured apart as
the wall time of a run on ``--fixed`` files. Each result is checked against
the other (max |difference|). Fastest of ``--repeats`` runs each, since the
machine may be shared; the CPU time the rest of the machine used during each
timing is printed.

Needs the demo data and a trained demo run (what ``msd-triplet demo`` makes)::

    python benchmarks/beam.py --data data/demo --run runs/demo
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # also for Beam's worker processes, which inherit it
from _common import machine_cpu_seconds, markdown_table, own_cpu_seconds


def timed(fn, *args):
    machine, own, start = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    others = (machine_cpu_seconds() - machine) - (own_cpu_seconds() - own)
    return result, seconds, max(0.0, others)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo"), help="make-demo-data output")
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a trained run (msd-triplet demo)")
    parser.add_argument("--config", type=Path, default=Path("experiments/demo.yaml"))
    parser.add_argument("--workers", type=int, default=2, help="Beam worker processes")
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--shard-size", type=int, default=200)
    parser.add_argument("--fixed", type=int, default=4, help="files of the fixed-cost run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    for path, how in ((args.data / "audio", "msd-triplet make-demo-data"), (args.run, "msd-triplet demo")):
        if not path.exists():
            raise SystemExit(f"{path}: missing; make it with `{how}` (see --help)")

    from msd_triplet import embed, pipelines, prepare
    from msd_triplet.config import load_config
    from msd_triplet.export import export_savedmodel
    from msd_triplet.featurecache import FeatureCache, cache_dir
    from msd_triplet.features import default_workers, extract_tracks

    work = Path(args.workdir or tempfile.mkdtemp(prefix="beam-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    base = load_config(args.config)
    base = dataclasses.replace(base, data=dataclasses.replace(base.data, root=str(args.data.resolve())))
    tracks = prepare._ingest(base, lambda _m: None).tracks
    savedmodel = work / "savedmodel"
    if not savedmodel.exists():
        export_savedmodel(args.run, savedmodel)
    files = embed.find_audio([args.data / "audio"])
    beam = pipelines.BeamRun("DirectRunner", workers=args.workers, chunk_size=args.chunk_size)

    def config_for(name: str):
        folder = work / name
        shutil.rmtree(folder, ignore_errors=True)
        return dataclasses.replace(base, features=dataclasses.replace(base.features, cache=str(folder)))

    def features_local(rows, tag=""):
        config = config_for(f"cache-local{tag}")
        extract_tracks(config, rows, workers=default_workers())
        return FeatureCache(cache_dir(config))

    def features_beam(rows, tag=""):
        config = config_for(f"cache-beam{tag}")
        pipelines.extract_tracks_beam(config, rows, beam)
        return FeatureCache(cache_dir(config))

    def embed_local(paths, tag=""):
        out = work / f"local{tag}.npy"
        embed.embed_files(paths, savedmodel, out, shard_size=args.shard_size, workers=default_workers())
        return np.load(out)

    def embed_beam(paths, tag=""):
        out = work / f"beam{tag}.npy"
        shutil.rmtree(work / f"beam{tag}.shards", ignore_errors=True)
        pipelines.embed_files_beam(paths, savedmodel, out, beam, shard_size=args.shard_size)
        return np.load(out)

    jobs = {
        "features": (len(tracks), lambda n: tracks.iloc[:n], features_local, features_beam),
        "embeddings": (len(files), lambda n: files[:n], embed_local, embed_beam),
    }
    embed_local(files[:2], "-warm-up")  # trace the log-mel function and load TensorFlow before any timing
    rows, results = [], {}
    for job, (n, subset, local, on_beam) in jobs.items():
        for way, fn in (("local", local), ("Beam DirectRunner", on_beam)):
            best = None
            for _ in range(args.repeats):
                result, seconds, others = timed(fn, subset(n))
                if best is None or seconds < best[1]:
                    best = (result, seconds, others)
            _, fixed, _ = timed(fn, subset(args.fixed), "-fixed")
            results[job, way] = best[0]
            rows.append([job, way, n, f"{best[1]:.1f}", f"{n / best[1]:.1f}", f"{fixed:.1f}", f"{best[2]:.1f}"])
        local_s, beam_s = float(rows[-2][3]), float(rows[-1][3])
        rows[-1].append(f"{local_s / beam_s:.2f}")
        rows[-2].append("")
    a, b = results["features", "local"], results["features", "Beam DirectRunner"]
    ok = np.flatnonzero(a.status() == 1)
    feature_diff = float(np.abs(a.read(ok) - b.read(ok)).max())
    same_rows = bool(np.array_equal(a.status(), b.status())) and a.skipped().equals(b.skipped())
    embed_diff = float(np.abs(results["embeddings", "local"] - results["embeddings", "Beam DirectRunner"]).max())
    header = ["job", "path", "files", "seconds", "files/s", f"s for {args.fixed} files", "others' CPU s", "Beam/local"]
    print(markdown_table(header, rows))
    print(
        f"\nusable CPUs {default_workers()}, Beam workers {args.workers}; features: max |Beam - local| "
        f"{feature_diff:.2e}, same rows and skip manifest: {same_rows}; embeddings: max |Beam - local| {embed_diff:.2e}"
    )


if __name__ == "__main__":
    main()

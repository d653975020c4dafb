"""The whole pipeline on the embedded synthetic data set: data → prepare → fit → evaluate → export.

Every stage reuses what an earlier call finished (the data set, the feature
cache, the splits, the run's checkpoints), so an interrupted demo continues
where it stopped and a finished one only prints its table again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from msd_triplet.config import Config
from msd_triplet.runfolder import RunFolder


@dataclass
class DemoReport:
    run_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)  # stage → wall seconds
    evaluation: object = None  # runs.RunEvaluation
    export_dir: Optional[Path] = None


def run_demo(
    config: Config,
    *,
    tracks: Optional[int] = None,
    workers: Optional[int] = None,
    say: Callable[[str], None] = print,
    audio_progress=None,
    extraction_progress=None,
    verbose: int = 1,
) -> DemoReport:
    """Run every stage for ``config`` (the demo config) and return the timings and the evaluation."""
    from msd_triplet import runs, synthetic, training
    from msd_triplet.prepare import prepare_dataset

    report = DemoReport(training.run_directory(config))
    root = Path(config.data.root).expanduser()
    started = time.perf_counter()
    if not (root / "demo_info.json").is_file():
        say(f"[1/5] writing the synthetic data set to {root}")
        kwargs = {"tracks": tracks} if tracks else {}
        summary = synthetic.make_demo_data(root, workers=workers, progress=audio_progress, **kwargs)
        say(f"      {summary.n_tracks} tracks, {summary.n_artists} artists, {summary.n_albums} albums")
    else:
        say(f"[1/5] data set found in {root}")
    report.seconds["data"] = time.perf_counter() - started

    started = time.perf_counter()
    say("[2/5] prepare: tags, filter, features, splits")
    prepare_dataset(
        config, workers=workers, progress=lambda line: say(f"      {line}"), extraction_progress=extraction_progress
    )
    report.seconds["prepare"] = time.perf_counter() - started

    started = time.perf_counter()
    say(f"[3/5] fit → {report.run_dir}")
    resume = RunFolder(report.run_dir).state.is_file()
    training.fit(config, resume=resume, verbose=verbose, say=lambda line: say(f"      {line}"))
    report.seconds["fit"] = time.perf_counter() - started

    started = time.perf_counter()
    say(f"[4/5] evaluate on the {config.evaluation.split} split, beside an untrained model of the same architecture")
    report.evaluation = runs.evaluate_run(report.run_dir, say=lambda line: say(f"      {line}"))
    report.seconds["evaluate"] = time.perf_counter() - started

    from msd_triplet.export import export_savedmodel

    started = time.perf_counter()
    report.export_dir = RunFolder(report.run_dir).savedmodel
    say(f"[5/5] export the SavedModel to {report.export_dir}")
    export_savedmodel(report.run_dir, report.export_dir, overwrite=report.export_dir.exists())
    report.seconds["export"] = time.perf_counter() - started
    return report

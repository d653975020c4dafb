"""Every failure of the command line is one ``error:`` line on stderr: exit 1 for our errors and any OSError,
2 for usage errors, 130 for Ctrl-C; never a traceback. TensorFlow's start-up log stays quiet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_run_config

from msd_triplet.cli import main

LATIN1 = "seed: 1\n# caf\u00e9\n".encode("latin-1")
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00"


pytestmark = pytest.mark.usefixtures("keep_log_level")  # conftest: commands set TF_CPP_MIN_LOG_LEVEL


def error_line(result, code: int) -> str:
    """The one ``error:`` line of a failed command on stderr, after checking exit code and no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "error:" not in result.stdout
    return lines[0]


@pytest.fixture()
def a_file(tmp_path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


# --------------------------------------------------------------------------- 1. config files that are not UTF-8


@pytest.mark.parametrize(
    "command", [["prepare"], ["topics"], ["fit"], ["fit", "--dry-run"], ["demo"], ["grid"], ["ablate"]]
)
@pytest.mark.parametrize("data, where", [(LATIN1, "byte 13 (line 2, 0xe9)"), (BINARY, "byte 0 (line 1, 0x89)")])
def test_a_config_that_is_not_utf8_is_one_error_line(runner, tmp_path, command, data, where):
    path = tmp_path / "exp.yaml"
    path.write_bytes(data)
    line = error_line(runner.invoke(main, [*command, "--config", str(path)]), 1)
    assert line == f"error: {path}: {where} is not UTF-8; a config file must be UTF-8 text (YAML)"


# --------------------------------------------------------------------------- 2. output folders that cannot be made


def test_make_demo_data_into_a_folder_under_a_file_or_proc(runner, a_file):
    line = error_line(runner.invoke(main, ["make-demo-data", "--out", str(a_file / "demo")]), 1)
    assert line.startswith(f"error: {a_file}") and line.endswith(": Not a directory")
    line = error_line(runner.invoke(main, ["make-demo-data", "--out", "/proc/no-such/demo"]), 1)
    assert line.startswith("error: /proc/no-such") and line.endswith(": No such file or directory")


def test_an_oserror_without_a_file_name_is_one_line(runner, monkeypatch, tmp_path):
    from msd_triplet import synthetic

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(synthetic, "make_demo_data", full)
    line = error_line(runner.invoke(main, ["make-demo-data", "--out", str(tmp_path / "d")]), 1)
    assert line == "error: No space left on device"


def test_fit_into_a_run_folder_under_a_file(runner, prepared_root, tmp_path, a_file):
    config = write_run_config(prepared_root, tmp_path / "runs", epochs=1, name="errors-fit.yaml")
    line = error_line(runner.invoke(main, ["fit", "--config", str(config), "--run", str(a_file / "run")]), 1)
    assert line.startswith(f"error: {a_file}") and "Not a directory" in line


def test_prepare_into_a_folder_under_a_file(runner, tiny_dataset, tmp_path, a_file):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"data:\n  root: {tiny_dataset.root}\n  audio: audio/{{track_id}}.mp3\n  prepared: {a_file / 'prepared'}\n"
    )
    line = error_line(runner.invoke(main, ["prepare", "--config", str(config), "--no-features"]), 1)
    assert line.startswith(f"error: {a_file}") and "Not a directory" in line


@pytest.mark.parametrize(
    "command", [["export-savedmodel", "{run}", "--out", "{out}"], ["projector", "{run}", "--out", "{out}"]]
)
def test_run_outputs_into_a_folder_under_a_file(runner, tiny_run, a_file, command):
    args = [a.format(run=tiny_run, out=a_file / "out") for a in command]
    line = error_line(runner.invoke(main, args), 1)
    if command[0] == "export-savedmodel":
        assert line == f"error: {a_file / 'out'}: its parent {a_file} is not a folder; choose another --out"
    else:
        assert line.startswith(f"error: {a_file}") and "Not a directory" in line


def test_export_under_a_file_names_out_and_says_its_parent_is_not_a_folder(runner, tmp_path, a_file):
    """Checked before the model is loaded: a run folder with only its config.yaml is enough."""
    from msd_triplet.config import Config, save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(Config(), run / "config.yaml")
    for out, tail in ((a_file / "x", ""), (a_file / "x" / "y", f" ({a_file} is not a folder)")):
        line = error_line(runner.invoke(main, ["export-savedmodel", str(run), "--out", str(out)]), 1)
        assert line == f"error: {out}: its parent {out.parent} is not a folder{tail}; choose another --out"
    assert a_file.read_text() == "not a folder\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "run"]
    # a good --out gets past the check to the run's missing checkpoint
    line = error_line(runner.invoke(main, ["export-savedmodel", str(run), "--out", str(tmp_path / "out")]), 1)
    assert "no checkpoint (last.keras)" in line and not (tmp_path / "out").exists()


def test_embed_into_a_folder_under_a_file(runner, tiny_run, audio_files, a_file):
    audio = str(next(iter(audio_files.good.values())))
    line = error_line(
        runner.invoke(main, ["embed", audio, "--model", str(tiny_run), "--out", str(a_file / "out" / "x.npy")]), 1
    )
    assert str(a_file) in line


# --------------------------------------------------------------------------- 3. usage errors, help, Ctrl-C


@pytest.mark.parametrize(
    "args, message, command",
    [
        (["fitt"], "No such command 'fitt'. Did you mean 'fit'?", ""),
        (["fit", "--confg", "x.yaml"], "No such option '--confg'. Did you mean '--config'?", " fit"),
        (["evaluate"], "Missing argument 'RUN_DIR'.", " evaluate"),
        (["prepare"], "Missing option '--config'.", " prepare"),
        (
            ["evaluate", "run", "--split", "dev"],
            "Invalid value for '--split': 'dev' is not one of 'train', 'validation', 'test'.",
            " evaluate",
        ),
        (
            ["embed", "a.wav", "--model", ".", "--out", "x.csv", "--projector", "p"],
            "Invalid value for --projector: x.csv: --projector needs the .npy output (--out X.npy)",
            " embed",
        ),
    ],
)
def test_a_usage_error_is_one_line_with_exit_code_2(runner, args, message, command):
    line = error_line(runner.invoke(main, args), 2)
    assert line == f"error: {message} (see msd-triplet{command} --help)"
    assert "Usage:" not in runner.invoke(main, args).output


def test_help_and_version_still_exit_0(runner):
    for args in (["--help"], ["-h"], ["fit", "--help"], ["--version"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "error:" not in result.output, (args, result.output)
    assert runner.invoke(main, ["fit", "--help"]).output.startswith("Usage: main fit [OPTIONS]")


def test_ctrl_c_is_error_interrupted_with_exit_code_130(runner, monkeypatch, tmp_path):
    from msd_triplet import synthetic

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "make_demo_data", interrupted)
    line = error_line(runner.invoke(main, ["make-demo-data", "--out", str(tmp_path / "d")]), 130)
    assert line == "error: interrupted"


# --------------------------------------------------------------------------- 4. run names that leave training.runs


@pytest.mark.parametrize("name", ["../../escape", "''"])
def test_a_run_name_that_is_not_one_folder_is_refused_before_training(runner, tmp_path, name):
    config = tmp_path / "exp.yaml"
    config.write_text(f"name: {name}\ntraining:\n  runs: {tmp_path / 'runs'}\n")
    line = error_line(runner.invoke(main, ["fit", "--config", str(config)]), 1)
    assert line.startswith(f"error: {config}: name: must be one folder name")
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escape").exists()


# --------------------------------------------------------------------------- 5. evaluating another split


@pytest.mark.slow
def test_evaluating_validation_leaves_the_test_metrics_alone(runner, tiny_run):
    import json

    from msd_triplet import runs

    if not (tiny_run / "metrics.json").is_file():
        runs.evaluate_run(tiny_run, say=lambda _: None)
    before = {name: (tiny_run / name).read_bytes() for name in ("metrics.json", "metrics.md", "per_query.npz")}
    result = runner.invoke(main, ["evaluate", str(tiny_run), "--split", "validation", "--no-untrained"])
    assert result.exit_code == 0, result.output
    assert {name: (tiny_run / name).read_bytes() for name in before} == before
    metrics = json.loads((tiny_run / "metrics-validation.json").read_text())
    assert metrics["split"] == "validation" and json.loads(before["metrics.json"])["split"] == "test"
    assert (tiny_run / "metrics-validation.md").read_text().startswith("P@3 on the validation split")
    queries = runs.PerQuery.load(tiny_run / "per_query-validation.npz")
    assert len(queries.track_ids) == metrics["tracks"] and list(queries.models) == ["trained"]
    assert result.output.splitlines()[-1] == (
        f"wrote {tiny_run / 'metrics-validation.json'}, "
        f"{tiny_run / 'metrics-validation.md'} and "
        f"{tiny_run / 'per_query-validation.npz'}"
    )


def test_split_file_names():
    from msd_triplet.runs import METRICS_FILE, PER_QUERY_FILE, split_file

    assert split_file(METRICS_FILE, "test") == "metrics.json"
    assert split_file(METRICS_FILE, "validation") == "metrics-validation.json"
    assert split_file(PER_QUERY_FILE, "train") == "per_query-train.npz"


# --------------------------------------------------------------------------- 6. TensorFlow's start-up log

TF_NOISE = ("I0000", "port.cc", "oneDNN custom operations", "cpu_feature_guard", "absl::InitializeLog")


def _environment(**changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(changes)
    return env


def test_a_tensorflow_command_prints_no_start_up_log(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  widths: [2, 2, 4, 4]\n  embedding_dim: 8\ntraining:\n  batch_size: 6\n")
    done = subprocess.run(
        [sys.executable, "-m", "msd_triplet.cli", "fit", "--config", str(config), "--dry-run"],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "parameters" in done.stdout
    assert not [line for line in done.stderr.splitlines() if any(noise in line for noise in TF_NOISE)], done.stderr


def test_an_oserror_in_a_real_process_is_one_line_without_traceback(tmp_path):
    (tmp_path / "a-file").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "msd_triplet.cli", "make-demo-data", "--out", str(tmp_path / "a-file" / "demo")],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'a-file' / 'demo'}: Not a directory"
    ], done.stderr


def test_importing_the_package_and_the_cli_changes_no_environment(tmp_path):
    # (the package's own Keras-registration hook is expected in sys.meta_path)
    probe = (
        "import os, sys; before = dict(os.environ); "
        "import msd_triplet, msd_triplet.cli, msd_triplet.config; "
        "assert dict(os.environ) == before and 'TF_CPP_MIN_LOG_LEVEL' not in os.environ; "
        "assert 'tensorflow' not in sys.modules; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=_environment(), cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_users_own_log_level_is_kept(monkeypatch):
    from msd_triplet import cli

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert cli._quiet_tensorflow() == ()  # the user's info log is not filtered


def test_decoder_noise_written_by_c_code_is_filtered_and_the_rest_passes(tmp_path):
    """libmpg123 writes to file descriptor 2 directly: simulate it with os.write inside a command."""
    script = (
        "import os, sys, click\n"
        "from msd_triplet.cli import main\n"
        "@main.command('noisy')\n"
        "def noisy():\n"
        "    os.write(2, b'[src/libmpg123/layer3.c:INT123_do_layer3():1774] error: part2_3_length (1056) too "
        "large for available bit count (936)\\n')\n"
        "    os.write(2, b'kept line one\\n')\n"
        "    os.write(2, b'Note: Illegal Audio-MPEG-Header 0x00000000 at offset 2796.\\n'\n"
        "             b'Note: Trying to resync...\\n')\n"
        "    os.write(2, b'\\rprogress 50%')\n"
        "    click.echo('kept line two', err=True)\n"
        "main(['noisy'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=_environment(), cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "kept line one" in done.stderr and "kept line two" in done.stderr and "progress 50%" in done.stderr
    for noise in ("libmpg123", "part2_3_length", "Illegal Audio-MPEG-Header", "resync"):
        assert noise not in done.stderr, done.stderr

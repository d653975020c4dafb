"""Config: YAML in, frozen dataclasses out; every mistake names the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from msd_triplet.config import PAPER_SPLIT_SIZES, Config, config_from_dict, load_config, save_config, with_overrides
from msd_triplet.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "experiments").glob("*.yaml")))
def test_shipped_configs_load_and_round_trip(tmp_path, name):
    cfg = load_config(REPO / "experiments" / name)
    saved = save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(saved) == cfg


def test_paper_config_holds_the_papers_numbers():
    cfg = load_config(REPO / "experiments" / "paper.yaml")
    assert cfg.training.batch_size == 600
    assert (cfg.loss.positive_threshold, cfg.loss.negative_threshold) == (0.8, 0.2)
    assert (cfg.features.n_mels, cfg.features.n_fft, cfg.features.hop_length) == (80, 2048, 1024)
    assert (cfg.features.fmin, cfg.features.fmax) == (16.0, 11000.0)
    assert cfg.model.embedding_dim == 256 and cfg.evaluation.k == 100
    assert cfg.data.split_proportions == tuple(float(n) for n in PAPER_SPLIT_SIZES)


def test_demo_ablation_shares_the_demos_data_splits_and_model():
    demo, ablation = (load_config(REPO / "experiments" / n) for n in ("demo.yaml", "demo-ablation.yaml"))
    for section in ("data", "features", "lsi", "model", "evaluation"):
        assert getattr(demo, section) == getattr(ablation, section), section
    assert demo.seed == ablation.seed and demo.training.batch_size == ablation.training.batch_size


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == Config()


def test_frozen():
    with pytest.raises(AttributeError):
        Config().training.batch_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("trainig:\n  epochs: 3\n", ["unknown key 'trainig'", "did you mean 'training'"]),
        ("training:\n  bach_size: 3\n", ["unknown key 'training.bach_size'", "'training.batch_size'"]),
        ("training:\n  batch_size: '600'\n", ["'training.batch_size' must be an integer", "'600'"]),
        ("training:\n  batch_size: true\n", ["'training.batch_size' must be an integer"]),
        ("loss:\n  margin: fast\n", ["'loss.margin' must be a number"]),
        ("loss:\n  mining: hardest\n", ["'loss.mining' must be one of", "'batch_hard'", "'hardest'"]),
        ("loss:\n  album_filter: 1\n", ["'loss.album_filter' must be true or false"]),
        ("data:\n  tags: file.h5\n", ["'data.tags' must be a list"]),
        ("data:\n  tag_sets: [genres, colours]\n", ["unknown tag set 'colours'"]),
        ("data: [1, 2]\n", ["'data' must be a mapping"]),
        ("- a\n- b\n", ["'top level' must be a mapping"]),
        ("loss:\n  positive_threshold: 0.1\n  negative_threshold: 0.5\n", ["negative_threshold <= positive_threshold"]),
        ("training:\n  batch_size: 1\n", ["training.batch_size", ">= 2"]),
        ("features:\n  fmax: 20000\n", ["features.fmin/fmax"]),
        ("lsi:\n  k: 0\n", ["lsi.k: must be > 0"]),
        ("data:\n  tag_sets: [genres]\n", ["lsi.tag_sets", "not in data.tag_sets"]),
        ("model:\n  widths: [8, 16]\n", ["model.widths: expected four"]),
        ("evaluation:\n  bootstrap_resamples: 99\n", ["evaluation.bootstrap_resamples: must be >= 100", "got 99"]),
        ("evaluation:\n  confidence: 1.0\n", ["evaluation.confidence: must lie strictly between 0 and 1"]),
        ("evaluation:\n  confidence: high\n", ["'evaluation.confidence' must be a number"]),
        ("evaluation:\n  bootstrap_unit: track\n", ["'evaluation.bootstrap_unit' must be one of", "'album'"]),
        ("grid:\n  seeds: [1, 2, 1]\n", ["grid.seeds: repeated seeds in [1, 2, 1]"]),
        ("grid:\n  seeds: [-3]\n", ["grid.seeds: seeds must be >= 0"]),
        ("training:\n  warmup_epochs: -1\n", ["training.warmup_epochs: must be >= 0", "got -1"]),
        ("training:\n  batch_composition: related\n  group_size: 1\n", ["training.group_size", "got 1"]),
        (
            "training:\n  batch_composition: related\n  batch_size: 8\n  group_size: 9\n",
            ["training.group_size", "training.batch_size (8)", "got 9"],
        ),
        ("training:\n  batch_composition: pk\n", ["'training.batch_composition' must be one of", "'related'"]),
        ("loss:\n  relatedness: tfidf\n", ["'loss.relatedness' must be one of", "'jaccard'", "'tfidf'"]),
        ("loss:\n  soft_margin: yes please\n", ["'loss.soft_margin' must be true or false"]),
        ("grid:\n  seeds: 3\n", ["'grid.seeds' must be a list"]),
    ],
)
def test_bad_values_name_key_and_file(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, message


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "training:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: line \d+ not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_ints_are_accepted_as_floats_and_lists_become_tuples():
    cfg = config_from_dict({"loss": {"margin": 1}, "model": {"widths": [4, 8, 16, 32]}})
    assert cfg.loss.margin == 1.0 and isinstance(cfg.loss.margin, float)
    assert cfg.model.widths == (4, 8, 16, 32)


def test_optional_field_accepts_null_and_string():
    assert config_from_dict({"data": {"albums": None}}).data.albums is None
    assert config_from_dict({"data": {"albums": "a.csv"}}).data.albums == "a.csv"


def test_with_overrides():
    cfg = with_overrides(Config(), {"training.epochs": 2, "seed": 7})
    assert cfg.training.epochs == 2 and cfg.seed == 7
    with pytest.raises(ConfigError, match="'training.epochz'"):
        with_overrides(Config(), {"training.epochz": 2})
    with pytest.raises(ConfigError, match="unknown section 'trainng'"):
        with_overrides(Config(), {"trainng.epochs": 2})


def test_data_paths_resolve_against_root(tmp_path):
    cfg = config_from_dict({"data": {"root": str(tmp_path)}})
    assert cfg.data.path("x.h5") == tmp_path / "x.h5"
    assert cfg.data.path("/abs/x.h5") == Path("/abs/x.h5")
    assert cfg.data.prepared_dir == tmp_path / "prepared"


def test_uncertainty_defaults_and_values():
    cfg = Config()
    assert (cfg.evaluation.bootstrap_resamples, cfg.evaluation.confidence, cfg.evaluation.bootstrap_unit) == (
        1000,
        0.95,
        "query",
    )
    assert cfg.grid.seeds == ()
    cfg = config_from_dict({"evaluation": {"bootstrap_unit": "album", "confidence": 0.9}, "grid": {"seeds": [3, 1]}})
    assert cfg.evaluation.bootstrap_unit == "album" and cfg.evaluation.confidence == 0.9
    assert cfg.grid.seeds == (3, 1)


@pytest.mark.parametrize(
    "data, where",
    [
        ("seed: 1\n# caf\u00e9 in Latin-1\n".encode("latin-1"), "byte 13 (line 2, 0xe9) is not UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "byte 0 (line 1, 0x89) is not UTF-8"),
        (b"seed: 1\n\x00\x01\x02binary", "character 8 (#x0000) is not allowed in YAML"),
    ],
)
def test_a_config_that_is_not_utf8_text_is_a_config_error(tmp_path, data, where):
    path = tmp_path / "exp.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {where}") and "\n" not in message
    assert message.endswith("a config file must be UTF-8 text (YAML)")


@pytest.mark.parametrize("name", ["../../escape", "", ".", "..", "a/b", "/abs", "a\\b", "nul\0"])
def test_a_run_name_must_be_one_folder_name(name):
    with pytest.raises(ConfigError, match=r"^<dict>: name: must be one folder name .*got "):
        config_from_dict({"name": name})


def test_a_run_name_that_escapes_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"exp.yaml: name: must be one folder name .*got '../../escape'$"):
        load_config(_write(tmp_path, "name: ../../escape\n"))


@pytest.mark.parametrize("name", ["demo", "my run 2", "..hidden-ish", "a.b", "café"])
def test_ordinary_run_names_are_kept(tmp_path, name):
    assert config_from_dict({"name": name}).name == name

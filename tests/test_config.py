import pytest

from voxray.audio import AudioSpec
from voxray.config import ConfigError, load_config, parse_overrides, to_yaml


def test_defaults():
    config = load_config()
    assert config.audio == AudioSpec()
    assert config.audio.sample_rate == 22050 and config.audio.n_mels == 80
    assert (config.preprocess.min_seconds, config.preprocess.max_seconds) == (0.5, 20.0)
    assert (config.preprocess.split.train, config.preprocess.split.val) == (0.8, 0.1)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("audio:\n  hop_length: 200\n  n_fft: 800\n  win_length: 800\npreprocess:\n  min_seconds: 1.0\n")
    config = load_config(str(path), ["preprocess.min_seconds=2", "preprocess.g2p=char",
                                     "preprocess.split.train=0.7", "preprocess.split.test=0.2"])
    assert config.audio.hop_length == 200
    assert config.preprocess.min_seconds == 2.0
    assert config.preprocess.g2p == "char"
    assert config.preprocess.split.test == 0.2


def test_override_values_are_typed():
    assert parse_overrides(["a.b=1", "a.c=true", "d=x", "e=[1, 2]", "f=0.5"]) == {
        "a": {"b": 1, "c": True}, "d": "x", "e": [1, 2], "f": 0.5}


@pytest.mark.parametrize("override, named", [
    ("preprocess.min_second=1", "preprocess.min_second"),
    ("prepocess.min_seconds=1", "prepocess"),
    ("audio.sample_rte=16000", "audio.sample_rte"),
    ("preprocess.split.dev=0.1", "preprocess.split.dev"),
])
def test_unknown_keys_are_named(override, named):
    with pytest.raises(ConfigError, match=f"unknown config key '{named}'"):
        load_config(overrides=[override])


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preprocess:\n  loudnes_lufs: -20\n")
    with pytest.raises(ConfigError, match="preprocess.loudnes_lufs"):
        load_config(str(path))


@pytest.mark.parametrize("override, named", [
    ("preprocess.min_seconds=abc", "preprocess.min_seconds = 'abc'"),
    ("preprocess.g2p=festival", "preprocess.g2p = 'festival'"),
    ("preprocess.max_seconds=0.1", "min_seconds"),
    ("audio.fmax=20000", "fmax"),
    ("preprocess.split.train=0.95", "sum to 1"),
    ("audio.win_length=2048", "win_length"),
])
def test_bad_values_are_named(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("(", r"\(")):
        load_config(overrides=[override])


def test_section_given_a_value():
    with pytest.raises(ConfigError, match="'preprocess' is a section"):
        load_config(overrides=["preprocess=3"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["preprocess.min_seconds"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(str(bad))


def test_resolved_config_round_trips(tmp_path):
    config = load_config(overrides=["preprocess.min_seconds=0.7"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(config))
    assert load_config(str(path)) == config


def test_configs_are_frozen():
    with pytest.raises(Exception):
        load_config().audio.sample_rate = 16000  # type: ignore[misc]


def test_each_family_has_its_schema_and_a_key_of_another_family_names_it(tmp_path):
    vocoder = load_config(family="vocoder")
    assert vocoder.family == "vocoder" and vocoder.train.betas == (0.8, 0.99) and vocoder.train.lr == 2e-4
    assert load_config().train.betas == (0.9, 0.98)                       # acoustic: transformer values
    with pytest.raises(ConfigError, match="'model.upsample_rates' belongs to the vocoder family, not to this acoustic"):
        load_config(overrides=["model.upsample_rates=[8, 8, 4]"])
    with pytest.raises(ConfigError, match="'loss.duration' belongs to the acoustic family"):
        load_config(overrides=["loss.duration=1"], family="vocoder")
    with pytest.raises(ConfigError, match="unknown model family 'talkr'"):
        load_config(family="talkr")
    path = tmp_path / "v.yaml"
    path.write_text("family: vocoder\nmodel:\n  preset: v1\n")
    assert load_config(str(path)).model.preset == "v1"                     # the file names its family
    with pytest.raises(ConfigError, match="the config is for the 'vocoder' family"):
        load_config(str(path), family="acoustic")
    saved = tmp_path / "saved.yaml"
    saved.write_text(to_yaml(load_config(str(path))))
    assert "family: vocoder" in saved.read_text() and load_config(str(saved)) == load_config(str(path))

"""The settings table: precedence, parsing and clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgekv.config import SETTINGS, Config, ConfigError, load_config


def test_settings_table_and_config_fields_agree() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Config) if f.name != "tokens"}
    assert fields == {s.name: s.default for s in SETTINGS}


def test_defaults_are_the_embedded_pop() -> None:
    config = load_config(env={})
    assert (config.host, config.port, config.data_dir) == ("127.0.0.1", 8787, "./edgekv-data")
    assert config.tokens == ()


def test_flag_beats_environment_beats_file(tmp_path: Path) -> None:
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text('port = 1111\nhost = "127.0.0.2"\nnode_name = "fra"\n')
    env = {"EDGEKV_PORT": "2222", "EDGEKV_NODE_NAME": "ams"}
    config = load_config({"port": 3333, "host": None}, env=env, config_file=config_file)
    assert (config.port, config.host, config.node_name) == (3333, "127.0.0.2", "ams")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EDGEKV_PORT": "eighty"}, "expected int"),
        ({"EDGEKV_SYNCHRONOUS": "sometimes"}, "not one of"),
        ({"EDGEKV_MAX_KEY_BYTES": "0"}, "at least"),
    ],
)
def test_bad_values_name_the_setting_and_source(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(env=env)
    assert next(iter(env)) in str(raised.value)


def test_unknown_file_setting_is_an_error(tmp_path: Path) -> None:
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(env={}, config_file=config_file)


def test_float_in_int_setting_is_refused(tmp_path: Path) -> None:
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text("port = 80.5\n")
    with pytest.raises(ConfigError, match="expected int"):
        load_config(env={}, config_file=config_file)


def test_invalid_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(env={}, config_file=broken)
    with pytest.raises(ConfigError, match="not found"):
        load_config(env={}, config_file=tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"region": "eu west"}, "region"),
        ({"backbone_stream": "EDGE.KV"}, "backbone_stream"),
        ({"backbone": "http://127.0.0.1:4222"}, "nats://"),
        ({"max_region_peers": "0"}, "at least 1"),
    ],
)
def test_region_and_backbone_settings_are_checked(cli: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(cli, env={})


def test_region_and_backbone_settings_are_taken() -> None:
    config = load_config(
        {"region": "eu-west", "backbone": "nats://127.0.0.1:4222", "max_region_peers": "4"},
        env={},
    )
    assert (config.region, config.backbone, config.max_region_peers) == (
        "eu-west",
        "nats://127.0.0.1:4222",
        4,
    )
    assert load_config(env={}).region == "default"

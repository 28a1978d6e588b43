"""prepare_config: every path in a job config stays inside the configured roots (in process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.configs import ConfigRejected, prepare_config
from service.settings import Settings


@pytest.fixture
def settings(attnlab_home: Path) -> Settings:
    (attnlab_home / "data" / "fmnist").mkdir(parents=True)
    return Settings(home=attnlab_home, data_roots=[attnlab_home / "data"])


def test_relative_data_root_resolves_under_a_data_root(settings):
    prepared = prepare_config({"data": {"root": "fmnist"}}, settings)
    assert prepared["data"]["root"] == str(settings.data_roots[0] / "fmnist")


@pytest.mark.parametrize("config, loc", [
    ({"data": {"root": "../outside"}}, ("data", "root")),
    ({"data": {"kind": "video", "manifests": {"train": "/etc/passwd"}}}, ("data", "manifests", "train")),
    ({"cluster": {"storage_path": "/srv/elsewhere"}}, ("cluster", "storage_path")),
    ({"search": {"space": {"data.root": {"grid": ["fmnist", "/etc"]}}}},
     ("search", "space", "data.root", "grid", 1)),
    ({"search": {"space": {"tracking.uri": {"grid": ["sqlite:////tmp/x.db"]}}}},
     ("search", "space", "tracking.uri", "grid", 0)),
    ({"cluster": {"address": "ray://attacker:10001"}}, ("cluster", "address")),
])
def test_escapes_are_rejected_naming_the_field(settings, config, loc):
    with pytest.raises(ConfigRejected) as raised:
        prepare_config(config, settings)
    assert raised.value.loc == loc


def test_symlink_pointing_out_of_the_root_is_rejected(settings, tmp_path):
    (settings.data_roots[0] / "link").symlink_to(tmp_path)
    with pytest.raises(ConfigRejected, match="resolves outside the configured data roots"):
        prepare_config({"data": {"root": "link"}}, settings)


def test_output_paths_inside_the_output_root_are_kept(settings):
    inside = str(settings.output_root / "ray")
    assert prepare_config({"cluster": {"storage_path": inside}}, settings)["cluster"]["storage_path"] == inside

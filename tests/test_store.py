"""Saved VM settings: atomic writes, corrupt files set aside, safe paths."""

from __future__ import annotations

import json
import os

import pytest

from vm_manager.core.errors import InvalidConfig, StoreError
from vm_manager.core.store import VMStore, default_config_dir
from vm_manager.core.vm_config import GPUPassthroughConfig, VMConfig


@pytest.fixture
def store(tmp_path) -> VMStore:
    return VMStore(tmp_path / "cfg")


def test_config_dir_precedence(tmp_path):
    assert default_config_dir({"NEURONOS_CONFIG_DIR": "/x/y"}) == default_config_dir(
        {"NEURONOS_CONFIG_DIR": "/x/y", "XDG_CONFIG_HOME": "/other"}
    )
    assert str(default_config_dir({"NEURONOS_CONFIG_DIR": "/x/y"})) == "/x/y"
    assert str(default_config_dir({"XDG_CONFIG_HOME": "/home/u/.cfg"})) == "/home/u/.cfg/neuronos"
    # a relative XDG_CONFIG_HOME is ignored, as the XDG spec says
    assert default_config_dir({"XDG_CONFIG_HOME": "rel"}).is_absolute()


def test_env_override_is_default(isolated_env):
    assert VMStore().config_dir == isolated_env


def test_save_and_load_round_trip(store):
    config = VMConfig(name="win", vm_type="windows11",
                      gpu_passthrough=GPUPassthroughConfig("01:00.0"))
    path = store.save(config)
    assert path == store.vms_dir / "win.json"
    assert json.loads(path.read_text())["config"]["vm_type"] == "windows11"
    assert store.load("win") == config
    assert store.names() == ["win"]
    assert store.load("other") is None


def test_overwrite_leaves_no_temp_files(store):
    for memory in ("2G", "3G", "4G"):
        store.save(VMConfig(name="vm", memory_mb=memory))
    assert store.load("vm").memory_mb == 4096
    assert sorted(os.listdir(store.vms_dir)) == ["vm.json"]


def test_failed_write_keeps_the_old_file(store, monkeypatch):
    store.save(VMConfig(name="vm", memory_mb="2G"))

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StoreError, match="No space left"):
        store.save(VMConfig(name="vm", memory_mb="8G"))
    monkeypatch.undo()
    assert store.load("vm").memory_mb == 2048
    assert sorted(os.listdir(store.vms_dir)) == ["vm.json"]  # the temp file was removed


@pytest.mark.parametrize(
    "content", ["{not json", "[]", '{"format": 99, "config": {}}',
                '{"format": 1, "config": {"name": "vm", "vcpus": "lots"}}',
                '{"format": 1, "config": {"name": "someone-else"}}', ""],
)
def test_corrupt_file_is_set_aside_and_reported(store, content):
    store.save(VMConfig(name="good"))
    store.vms_dir.joinpath("vm.json").write_text(content)
    with pytest.raises(StoreError) as caught:
        store.load("vm")
    message = str(caught.value)
    assert str(store.vms_dir / "vm.json") in message
    assert str(store.vms_dir / "vm.json.corrupt") in message
    assert (store.vms_dir / "vm.json.corrupt").read_text() == content
    assert store.load("vm") is None  # moved out of the way: the next read is clean
    # and a full scan still returns every good file
    store.vms_dir.joinpath("vm.json").write_text(content)
    scan = store.load_all()
    assert list(scan.configs) == ["good"]
    assert len(scan.problems) == 1
    assert any(p.name.startswith("vm.json.corrupt-") for p in store.vms_dir.iterdir())


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden"])
def test_names_cannot_escape_the_folder(store, name):
    with pytest.raises(InvalidConfig):
        store.path_for(name)


def test_delete(store):
    store.save(VMConfig(name="vm"))
    assert store.delete("vm") is True
    assert store.delete("vm") is False
    assert store.names() == []


def test_unwritable_folder_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write"):
        VMStore(blocker).save(VMConfig(name="vm"))

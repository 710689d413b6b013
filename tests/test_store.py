"""Saved VM settings: atomic writes, corrupt files set aside, safe paths."""

from __future__ import annotations

import json
import os

import pytest

from vm_manager.base.errors import InvalidConfig, StaleSettings, StoreError
from vm_manager.base.store import VMStore, default_config_dir
from vm_manager.base.vm_config import GPUPassthroughConfig, VMConfig


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


# --- settings are keyed by the VM's UUID, not only its name -------------------------------

A = "6f1c0a52-3b0e-4c57-9d7e-0b2f5a9c1d01"
B = "0d9e4f61-7a2b-4c3d-8e5f-1a2b3c4d5e6f"


def test_settings_remember_the_uuid_of_their_domain(store):
    store.save(VMConfig(name="win", memory_mb="4G"), uuid=A.upper())
    assert json.loads((store.vms_dir / "win.json").read_text())["uuid"] == A
    assert store.owner("win") == A
    store.save(VMConfig(name="win", memory_mb="8G"))  # a save that does not know it keeps it
    assert store.owner("win") == A
    assert store.load("win", A).memory_mb == 8192
    assert store.belongs("win", A) and not store.belongs("win", B)
    assert not store.belongs("other", A)


def test_settings_of_another_vm_of_the_name_are_never_applied(store):
    store.save(VMConfig(name="win", memory_mb="4G"), uuid=A)
    with pytest.raises(StaleSettings) as caught:
        store.load("win", B)
    message = str(caught.value)
    assert f"written for another VM named win (uuid {A}; this one is {B})" in message
    aside = store.vms_dir / f"win.json.other-{A}"
    assert str(aside) in message and aside.exists()  # the old VM's settings are kept aside
    assert store.load("win", B) is None and store.names() == []
    assert isinstance(caught.value, StoreError)  # shown like any unreadable file


def test_a_scan_checks_each_file_against_its_domain(store):
    store.save(VMConfig(name="old", vm_type="windows11"), uuid=A)
    store.save(VMConfig(name="new", vm_type="linux"), uuid=B)
    store.save(VMConfig(name="before-uuids", vm_type="linux"))
    scan = store.load_all(None, {"old": B, "new": B, "before-uuids": A})
    assert sorted(scan.configs) == ["before-uuids", "new"]  # no uuid yet: taken as it is
    assert [type(problem) for problem in scan.problems] == [StaleSettings]


def test_delete_with_a_uuid_leaves_another_vms_settings(store):
    store.save(VMConfig(name="win"), uuid=A)
    assert store.delete("win", B) is False
    assert store.names() == ["win"]
    assert store.delete("win", A) is True
    store.save(VMConfig(name="win"))  # from before UUIDs: may be anyone's, so it goes
    assert store.delete("win", B) is True


def test_a_vm_remade_outside_neuronos_does_not_inherit_the_old_settings(make_host, tmp_path):
    """A VM made by NeuronOS, deleted with virsh, and another domain defined under its name:
    the list, `info`, the settings dialog's read and `delete` never take the old VM's
    settings for the new one's."""
    from vm_manager.actions import Context
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.core.inventory import list_vms, vm_details
    from vm_manager.core.vm_creator import VMCreator
    from vm_manager.core.vm_destroyer import VMDestroyer

    store = VMStore(tmp_path / "config")
    with LibvirtConnection(make_host()) as conn:
        made = VMCreator(conn, store=store, images_dir=tmp_path / "images").create(
            VMConfig(name="win", vm_type="linux", network="none", disk_size_gb=2))
        assert store.owner("win") == made.uuid
        assert list_vms(conn, store).vms[0].vm_type == "linux"
        conn.execute(lambda c: c.lookupByName("win").undefine())  # as `virsh undefine` would
        conn.execute(lambda c: c.defineXML(
            "<domain type='test'><name>win</name><memory unit='MiB'>512</memory>"
            "<os><type>hvm</type></os></domain>"))
        ctx = Context(conn.uri, connection=conn, store=store, events=False)
        details = vm_details(conn, "win", store)
        assert details["settings"] is None
        assert "written for another VM named win" in details["settings_problem"]
        inventory = list_vms(conn, store)
        assert inventory.vms[0].vm_type != "linux"
        assert inventory.problems == []  # moved aside by the first read, reported there
        assert ctx.settings("win") is None
        assert (store.vms_dir / f"win.json.other-{made.uuid}").exists()
        store.save(VMConfig(name="win", vm_type="linux"), uuid=made.uuid)  # back again
        plan = VMDestroyer(conn, store=store, images_dir=tmp_path / "images",
                           shm_dir=tmp_path).plan("win")
        assert plan.settings_file is None  # the other VM's settings are not this one's
        ctx.close()

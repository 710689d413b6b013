"""VMCreator: the transaction, fault injection at every step, hostile input."""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vm_manager.cli import main
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.errors import InvalidConfig, VMCreationError
from vm_manager.base.store import VMStore
from vm_manager.base.vm_config import VMConfig
from vm_manager.core.vm_creator import VMCreator
from vm_manager.templates.loader import PACKAGE_DIR, TemplateLoader
from support.fakes import FakeDomain


@pytest.fixture
def env(tmp_path, make_host):
    """A test-driver host with one domain, an images folder and a settings store."""
    images = tmp_path / "images"
    images.mkdir()
    uri = make_host([FakeDomain("existing", uuid="11111111-2222-3333-4444-555555555555")])
    conn = LibvirtConnection(uri).open()
    yield conn, images, VMStore(tmp_path / "config")
    conn.close()


def creator_for(conn, images, store, **kwargs):
    return VMCreator(conn, store=store, images_dir=images, **kwargs)


def linux(name="vm1", **kwargs) -> VMConfig:
    return VMConfig(name=name, vm_type="linux", domain_type="qemu", network="none",
                    disk_size_gb=2, **kwargs)


def domain_names(conn) -> set[str]:
    return set(conn.execute(lambda c: [d.name() for d in c.listAllDomains()]))


def assert_nothing_left(conn, images, store, name="vm1"):
    assert domain_names(conn) == {"existing"}
    assert list(images.iterdir()) == []
    assert store.names() == []
    assert not (store.vms_dir / f"{name}.json").exists()


# --- the happy path ---------------------------------------------------------------------------

def test_create_makes_disk_domain_and_settings(env):
    conn, images, store = env
    steps = []
    result = creator_for(conn, images, store).create(linux(), progress=steps.append)
    assert steps == ["check", "disk", "render", "validate", "define", "save settings"]
    disk = images / "vm1.qcow2"
    assert result.disk_path == str(disk) and result.disk_created
    assert disk.read_bytes()[:4] == b"QFI\xfb"  # a real qcow2 image
    assert "vm1" in domain_names(conn)
    saved = store.load("vm1")
    assert saved.disk_path == str(disk) and saved.vm_type.value == "linux"


def test_existing_name_fails_before_touching_anything(env):
    conn, images, store = env
    with pytest.raises(InvalidConfig) as caught:
        creator_for(conn, images, store).create(linux("existing"))
    assert caught.value.field == "name"
    assert list(images.iterdir()) == [] and store.names() == []


def test_existing_disk_file_is_never_overwritten(env):
    conn, images, store = env
    precious = images / "vm1.qcow2"
    precious.write_bytes(b"user data")
    with pytest.raises(InvalidConfig, match="never overwrites"):
        creator_for(conn, images, store).create(linux())
    assert precious.read_bytes() == b"user data"
    assert domain_names(conn) == {"existing"}


def test_existing_disk_is_used_and_kept_on_failure(env, tmp_path):
    conn, images, store = env
    own = tmp_path / "mine.img"
    own.write_bytes(b"\0" * 1024)
    config = VMConfig(name="vm1", vm_type="linux", disk_path=str(own), network="none",
                      domain_type="qemu")
    broken = tmp_path / "config-is-a-file"
    broken.write_text("")
    with pytest.raises(VMCreationError, match="save settings"):
        creator_for(conn, images, VMStore(broken)).create(config)
    assert own.exists()  # the user's disk survives the rollback
    result = creator_for(conn, images, store).create(config)
    assert result.disk_path == str(own) and not result.disk_created


def test_missing_iso_is_an_input_error(env):
    conn, images, store = env
    with pytest.raises(InvalidConfig) as caught:
        creator_for(conn, images, store).create(linux(iso_path="/nonexistent/x.iso"))
    assert caught.value.field == "iso_path"
    assert list(images.iterdir()) == []


# --- fault injection: each step fails for real; nothing is left behind ------------------------

def test_fault_disk_step(env):
    conn, images, store = env
    with pytest.raises(VMCreationError) as caught:
        creator_for(conn, images, store, qemu_img="/nonexistent/qemu-img").create(linux())
    assert caught.value.step == "disk"
    assert_nothing_left(conn, images, store)


def test_fault_disk_step_images_folder_is_a_file(env, tmp_path):
    conn, _, store = env
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(VMCreationError) as caught:
        creator_for(conn, blocker, store).create(linux())
    assert caught.value.step == "disk"
    assert domain_names(conn) == {"existing"} and store.names() == []


def user_templates(tmp_path, text: str) -> TemplateLoader:
    user = tmp_path / "user-templates"
    user.mkdir(exist_ok=True)
    (user / "linux-basic.xml.j2").write_text(text)
    return TemplateLoader([("user", user), ("package", PACKAGE_DIR)])


def test_fault_render_step(env, tmp_path):
    conn, images, store = env
    loader = user_templates(tmp_path, "<domain>{% for %}</domain>")
    with pytest.raises(VMCreationError) as caught:
        creator_for(conn, images, store, loader=loader).create(linux())
    assert caught.value.step == "render" and "line 1" in str(caught.value)
    assert_nothing_left(conn, images, store)


def test_fault_validate_step(env, tmp_path):
    conn, images, store = env
    loader = user_templates(tmp_path, "<domain type='test'><name>{{ name }}</name><bogus/>"
                                      "</domain>")
    with pytest.raises(VMCreationError) as caught:
        creator_for(conn, images, store, loader=loader).create(linux())
    assert caught.value.step == "validate"
    assert_nothing_left(conn, images, store)


def test_fault_define_step(env, tmp_path):
    conn, images, store = env
    # Schema-valid, but its UUID belongs to the domain "existing": libvirt refuses it.
    loader = user_templates(tmp_path, (
        "<domain type='test'><name>{{ name }}</name>"
        "<uuid>11111111-2222-3333-4444-555555555555</uuid><memory unit='MiB'>512</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os>"
        "<devices><disk type='file' device='disk'><source file='{{ disk.path }}'/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"))
    with pytest.raises(VMCreationError) as caught:
        creator_for(conn, images, store, loader=loader).create(linux())
    assert caught.value.step == "define"
    assert_nothing_left(conn, images, store)


def test_fault_save_settings_step(env, tmp_path):
    conn, images, _ = env
    blocker = tmp_path / "config-file"
    blocker.write_text("")
    store = VMStore(blocker)
    with pytest.raises(VMCreationError) as caught:
        creator_for(conn, images, store).create(linux())
    assert caught.value.step == "save settings"
    assert domain_names(conn) == {"existing"}  # undefined again
    assert list(images.iterdir()) == []  # disk removed again


# --- hostile input ---------------------------------------------------------------------------

path_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x7f"),
    min_size=1, max_size=40,
).filter(lambda s: s not in (".", ".."))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(folder=path_text, filename=path_text)
def test_hostile_paths_reach_the_xml_verbatim_and_escaped(env, tmp_path_factory, folder,
                                                           filename):
    conn, images, store = env
    base = tmp_path_factory.mktemp("media") / folder
    base.mkdir(parents=True, exist_ok=True)
    iso = base / filename
    if iso.is_dir():
        return
    iso.write_bytes(b"")
    config = linux(iso_path=str(iso))
    xml = creator_for(conn, images, store).print_xml(config, template=None)
    root = ET.fromstring(xml)  # well-formed whatever the path holds
    sources = [s.get("file") for s in root.iter("source")]
    assert str(iso) in sources
    assert [e.text for e in root.iter("name")] == ["vm1"]


@given(st.text(max_size=80))
def test_hostile_names_never_reach_a_path(name):
    try:
        config = linux(name)
    except InvalidConfig:
        return
    images = Path("/var/lib/libvirt/images")
    path = images / f"{config.name}.qcow2"
    assert path.parent == images and ".." not in path.parts


def test_quote_and_markup_names_are_refused():
    for name in ["a'b", 'a"b', "<x>", "a&b", "../up", "a b", "ü"]:
        with pytest.raises(InvalidConfig):
            linux(name)


# --- CLI ---------------------------------------------------------------------------------------

def cli(argv, conn):
    out, err = io.StringIO(), io.StringIO()
    return main(argv, connection=conn, out=out, err=err), out.getvalue(), err.getvalue()


def test_cli_windows11_with_2g_exits_2_naming_memory(env):
    conn, _, _ = env
    code, out, err = cli(["create", "x", "--template", "windows11", "--memory", "2G"], conn)
    assert code == 2
    assert "--memory" in err and "memory" in err and "4096 MiB (4 GiB)" in err


def test_cli_print_xml_changes_nothing(env, monkeypatch):
    conn, images, store = env
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    code, out, _ = cli(["create", "vm1", "--template", "linux", "--network", "none",
                        "--domain-type", "qemu", "--print-xml"], conn)
    assert code == 0 and out.startswith("<domain type='qemu'>")
    assert domain_names(conn) == {"existing"} and list(images.iterdir()) == []


def test_cli_create_and_json(env, monkeypatch):
    conn, images, _ = env
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    code, out, err = cli(["--json", "create", "vm2", "--template", "linux", "--disk-size", "1G",
                          "--network", "none", "--domain-type", "qemu"], conn)
    assert code == 0, err
    data = json.loads(out)
    assert data["name"] == "vm2" and data["disk_created"] is True
    assert os.path.exists(data["disk_path"])
    code, out, err = cli(["create", "vm3", "--template", "linux", "--usb", "nonsense"], conn)
    assert code == 2 and "VID:PID" in err


def test_cli_templates(tmp_path):
    code, out, _ = cli(["templates", "list"], None)
    assert code == 0 and "windows11-passthrough" in out and "package" in out
    code, out, _ = cli(["templates", "show", "linux-basic"], None)
    assert code == 0 and "{% extends" in out
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain type='qemu'><name>x</name></domain>")
    code, _, err = cli(["templates", "validate", str(bad)], None)
    assert code == 1 and "not valid" in err


def test_design_notes_test_commands_work():
    from vm_manager.base.vm_config import VMType

    config = VMConfig(name="test-vm", vm_type=VMType.LINUX, memory_mb=2048, vcpus=2)
    creator = VMCreator()  # no connection is opened until it is needed
    assert creator.store is not None and config.memory_mb == 2048


def test_creator_refuses_a_non_viable_or_boot_gpu(env, tmp_path):
    from support.fakes import FakePCIDevice, add_pci_devices, nvidia_turing_gpu

    conn, images, store = env
    shared = add_pci_devices(tmp_path / "shared", [
        *nvidia_turing_gpu(group=7), FakePCIDevice("0000:02:00.0", 0x1022, 0x43B7, 0x010601,
                                                   "ahci", 7)])
    boot = add_pci_devices(tmp_path / "boot", nvidia_turing_gpu(boot_vga=True))
    gpu_config = {"vm_type": "windows10", "memory_mb": 4096, "domain_type": "qemu",
                  "network": "none"}
    for root, words in ((shared, "not viable"), (boot, "boot GPU")):
        config = VMConfig.from_dict({"name": "g", **gpu_config,
                                     "gpu_passthrough": {"pci_address": "01:00.0"}})
        with pytest.raises(InvalidConfig, match=words) as caught:
            creator_for(conn, images, store, host_root=root).create(config)
        assert caught.value.field == "gpu.pci_address"
    assert list(images.iterdir()) == [] and domain_names(conn) == {"existing"}
    opted = VMConfig.from_dict({"name": "g", **gpu_config, "gpu_passthrough": {
        "pci_address": "01:00.0", "allow_boot_gpu": True}})
    result = creator_for(conn, images, store, host_root=boot).create(opted)
    assert result.xml.count("type='pci' managed='yes'") == 4


def test_reconfigure_a_stopped_vm_keeps_uuid_and_disk(env, tmp_path):
    conn, images, store = env
    creator = creator_for(conn, images, store)
    created = creator.create(linux(memory_mb="2G", vcpus=2))
    saved = store.load("vm1")
    data = saved.to_dict()
    data.update(memory_mb=4096, vcpus=4)
    result = creator.reconfigure(VMConfig.from_dict(data))
    assert result.uuid == created.uuid and not result.disk_created
    xml = conn.execute(lambda c: c.lookupByName("vm1").XMLDesc(0))
    assert "<vcpu placement='static'>4</vcpu>" in xml and "4194304" in xml
    assert created.disk_path in xml and store.load("vm1").vcpus == 4
    assert sorted(p.name for p in images.iterdir()) == ["vm1.qcow2"]
    conn.execute(lambda c: c.lookupByName("vm1").create())
    from vm_manager.base.errors import LifecycleError

    with pytest.raises(LifecycleError, match="stop it"):
        creator.reconfigure(VMConfig.from_dict(data))


def test_reconfigure_puts_the_old_definition_back_if_saving_fails(env, tmp_path):
    conn, images, store = env
    creator_for(conn, images, store).create(linux(memory_mb="2G"))
    data = store.load("vm1").to_dict()
    data.update(memory_mb=3072)
    blocker = tmp_path / "config-file"
    blocker.write_text("")
    broken = creator_for(conn, images, VMStore(blocker))
    with pytest.raises(Exception):
        broken.reconfigure(VMConfig.from_dict(data))
    xml = conn.execute(lambda c: c.lookupByName("vm1").XMLDesc(0))
    assert "2097152" in xml  # still 2 GiB

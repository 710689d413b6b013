"""Unattended Windows setup (issue 14): the answer file, the setup medium built with pycdlib
and read back with xorriso, the checks on the installer and virtio-win ISOs, the secrets,
and the CLI's bad-input answers. The media are shaped like the real ones (tests/support/
media.py); no Windows image exists on these machines."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pwd
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vm_manager.cli import main
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.errors import InvalidConfig
from vm_manager.base.guest_config import UnattendedConfig, check_account_name
from vm_manager.base.store import VMStore
from vm_manager.base.vm_config import VMConfig
from vm_manager.guest.media import FIRST_LOGON, answer_file, build_windows_medium
from vm_manager.guest.windows import computer_name, inspect_installer, inspect_virtio
from vm_manager.templates.loader import PACKAGE_DIR, TemplateLoader
from support.media import linux_iso, virtio_win_iso, windows_iso

GOLDEN = Path(__file__).parent / "golden" / "unattend"
UPDATE = os.environ.get("NEURONOS_UPDATE_GOLDEN") == "1"
NS = {"u": "urn:schemas-microsoft-com:unattend"}
KEY = "VK7JG-NPHTM-C97JM-9MPGT-3V66T"  # Microsoft's generic key of Windows Pro
HOSTILE_PASSWORDS = ["p<a>&\"s'w]]>rd", "Pässwörd ✓ 密码", "</Value><PlainText>false",
                     "&amp; ${x} $(y) `z`"]


class Secrets:
    def __init__(self, password, product_key=None):
        self.password, self.product_key = password, product_key


@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("isos")
    return {"windows": windows_iso(folder / "Win11_24H2_English_x64.iso"),
            "windows10": windows_iso(folder / "Win10_22H2.iso",
                                     editions=("Windows 10 Home", "Windows 10 Pro"),
                                     image="install.esd"),
            "virtio": virtio_win_iso(folder / "virtio-win.iso"),
            "virtio_old": virtio_win_iso(folder / "virtio-win-old.iso", versions=("w10",),
                                         label="virtio-win-0.1.100"),
            "linux": linux_iso(folder / "ubuntu.iso")}


def sha512_crypt(password: str, salted: str) -> str:
    """glibc's crypt(3) itself (through ctypes: Python 3.13 has no crypt module)."""
    import ctypes
    import ctypes.util

    libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    libcrypt.crypt.restype = ctypes.c_char_p
    return libcrypt.crypt(password.encode(), salted.encode()).decode()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def xorriso_files(iso: Path, joliet: bool = False) -> list[str]:
    """The file list as xorriso reads it: Rock Ridge names (Linux), or Joliet (Windows)."""
    mode = ["-rockridge", "off", "-joliet", "on"] if joliet else []
    out = subprocess.run(["xorriso", *mode, "-indev", str(iso), "-find", "/", "-type", "f"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.strip().strip("'") for line in out.splitlines() if line.strip())


def xorriso_read(iso: Path, path: str, target: Path) -> bytes:
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", path,
                    str(target)], capture_output=True, check=True)
    return target.read_bytes()


# --- the media as NeuronOS reads them --------------------------------------------------------

def test_the_installer_and_its_editions_are_read_from_the_disc(isos):
    info = inspect_installer(isos["windows"])
    assert info.is_windows and info.image == "/sources/install.wim"
    assert info.label == "CCCOMA_X64FRE_EN-US_DV9"
    assert info.editions == ("Windows 11 Home", "Windows 11 Pro")
    esd = inspect_installer(isos["windows10"])
    assert esd.image == "/sources/install.esd" and "Windows 10 Pro" in esd.editions
    linux = inspect_installer(isos["linux"])
    assert not linux.is_windows and linux.label == "Ubuntu 24.04"


def test_not_an_iso_names_the_field(tmp_path):
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"not an iso" * 1000)
    with pytest.raises(InvalidConfig) as caught:
        inspect_installer(junk)
    assert caught.value.field == "iso_path" and "cannot be read as an ISO" in str(caught.value)


def test_the_setup_drivers_for_each_windows_version(isos):
    new = inspect_virtio(isos["virtio"], "windows11")
    assert new.missing == () and new.guest_tools
    assert "/viostor/w11/amd64/viostor.inf" in new.drivers["viostor"]
    old = inspect_virtio(isos["virtio_old"], "windows11")
    assert old.missing == ("viostor", "vioscsi", "NetKVM")
    assert inspect_virtio(isos["virtio_old"], "windows10").missing == ()


# --- the answer file -------------------------------------------------------------------------

@pytest.mark.parametrize("vm_type", ["windows11", "windows10"])
def test_golden_answer_files(vm_type):
    setup = UnattendedConfig(user="anna", locale="de-DE", timezone="W. Europe Standard Time",
                             edition=f"Windows {vm_type[-2:]} Pro")
    text = answer_file(TemplateLoader(), f"{vm_type}-desk", setup, Secrets("correct horse"))
    golden = GOLDEN / f"{vm_type}.xml"
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden.name} differs"
    root = ET.fromstring(text.encode())
    passes = [s.get("pass") for s in root.findall("u:settings", NS)]
    assert passes == ["windowsPE", "specialize", "oobeSystem"]
    for component in root.iter("{urn:schemas-microsoft-com:unattend}component"):
        assert component.get("processorArchitecture") == "amd64"
        assert component.get("publicKeyToken") == "31bf3856ad364e35"
        assert component.get("versionScope") == "nonSxS"
    assert root.find(".//u:ComputerName", NS).text == f"{vm_type.upper()}-DESK"
    assert "LabConfig" not in text  # no bypass unless asked
    assert ":\\" not in text.replace("HKLM\\", "")  # no drive letter anywhere


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_hostile_values_reach_the_file_escaped_and_verbatim(password):
    setup = UnattendedConfig(user="O'Brien & Söhne", edition="Windows 11 Pro <N>")
    text = answer_file(TemplateLoader(), "w", setup, Secrets(password, KEY))
    root = ET.fromstring(text.encode())  # still one well-formed document
    values = [v.text for v in root.iterfind(".//u:Password/u:Value", NS)]
    assert values == [password, password]
    assert root.find(".//u:LocalAccount/u:Name", NS).text == "O'Brien & Söhne"
    assert root.find(".//u:MetaData/u:Value", NS).text == "Windows 11 Pro <N>"
    assert root.find(".//u:CommandLine", NS).text == FIRST_LOGON


def test_the_bypass_is_written_only_when_asked():
    setup = UnattendedConfig(bypass_hardware_checks=True, edition="Windows 11 Pro")
    text = answer_file(TemplateLoader(), "w", setup, Secrets("x"))
    assert text.count("LabConfig") == 3 and "BypassTPMCheck" in text


def test_a_user_answer_file_template_overrides_the_package_one(tmp_path):
    (tmp_path / "_autounattend.xml.j2").write_text("<unattend>{{ user }}</unattend>\n")
    loader = TemplateLoader([("user", tmp_path), ("package", PACKAGE_DIR)])
    assert answer_file(loader, "w", UnattendedConfig(user="a&b", edition="E"),
                       Secrets("x", KEY)) == "<unattend>a&amp;b</unattend>\n"


@pytest.mark.parametrize("name, why", [
    ("a" * 21, "Windows allows 20"), ('we"ird', "cannot contain"), ("x/y", "cannot contain"),
    ("a<b", "cannot contain"), ("...", "only dots"), ("Administrator", "reserves"),
    ("guest", "reserves"), ("CON", "reserves"), ("", "give the name"), ("tab\there",
                                                                         "cannot contain"),
])
def test_account_names_windows_refuses(name, why):
    with pytest.raises(InvalidConfig, match=why):
        check_account_name(name)


def test_computer_names_follow_netbios():
    assert computer_name("win11") == "WIN11"
    assert computer_name("my_work.vm-with-a-long-name") == "MY-WORK-VM-WITH"
    assert computer_name("1234") == "VM-1234" and len(computer_name("x" * 40)) == 15
    assert computer_name("-._-") == "NEURONOS-VM"


# --- the medium ------------------------------------------------------------------------------

def test_the_medium_read_back_with_xorriso(isos, tmp_path):
    """Built by pycdlib, read by another real reader: the file list under both the Rock
    Ridge (Linux) and Joliet (Windows) names, the contents, the drivers of the right Windows
    version, mode 0600, and the original ISOs untouched."""
    before = {key: sha256(path) for key, path in isos.items()}
    target = tmp_path / "w11-setup.iso"
    installer = tmp_path / "looking-glass-host-B7.zip"
    import zipfile

    with zipfile.ZipFile(installer, "w") as archive:
        archive.writestr("looking-glass-host-setup.exe", b"MZ" + b"\x90" * 4000)
    setup = UnattendedConfig(user="anna", edition="Windows 11 Pro",
                             lg_host_installer=str(installer))
    listed = build_windows_medium(target, loader=TemplateLoader(), vm_name="w11",
                                  vm_type="windows11", setup=setup,
                                  secrets=Secrets("pw <&>"), virtio_iso=isos["virtio"])
    assert (target.stat().st_mode & 0o777) == 0o600
    drivers = [f"/$WinPEDriver$/{d}/{d.lower()}.{ext}" for d in ("NetKVM", "vioscsi", "viostor")
               for ext in ("cat", "inf", "sys")]
    expected = sorted(drivers + ["/Autounattend.xml", "/neuronos/firstlogon.ps1",
                                 "/neuronos/looking-glass-host-setup.exe",
                                 "/neuronos/setup.json"])
    assert listed == expected
    assert xorriso_files(target) == expected
    assert xorriso_files(target, joliet=True) == expected
    out = tmp_path / "out"
    out.mkdir()
    answer = xorriso_read(target, "/Autounattend.xml", out / "a.xml").decode()
    assert ET.fromstring(answer.encode()).find(".//u:Password/u:Value", NS).text == "pw <&>"
    inf = xorriso_read(target, "/$WinPEDriver$/viostor/viostor.inf", out / "v.inf")
    assert b"for w11" in inf  # the Windows 11 driver, not the Windows 10 one
    source = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(isos["virtio"]),
                             "-extract", "/viostor/w11/amd64/viostor.sys", str(out / "s")],
                            capture_output=True, check=True)
    assert source.returncode == 0
    assert xorriso_read(target, "/$WinPEDriver$/viostor/viostor.sys", out / "t") == \
        (out / "s").read_bytes()
    assert xorriso_read(target, "/neuronos/looking-glass-host-setup.exe", out / "lg")[:2] == \
        b"MZ"
    settings = json.loads(xorriso_read(target, "/neuronos/setup.json", out / "j"))
    assert settings == {"vm": "w11", "windows": "windows11", "virtio_folder": "w11",
                        "user": "anna", "looking_glass_host": True, "winfsp": False,
                        "shares": [], "gpu_driver_switches": {}}
    assert {key: sha256(path) for key, path in isos.items()} == before
    assert not list(tmp_path.glob(".setup-*"))  # the scratch folder is gone


# --- through the CLI: plans, refusals, secrets --------------------------------------------------

@pytest.fixture
def world(make_host, tmp_path, monkeypatch, isos):
    images = tmp_path / "images"
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    password = tmp_path / "password"
    password.write_text("Sw0rdfish <&> ünïcode\n")
    password.chmod(0o600)
    uri = make_host()
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    store = VMStore(tmp_path / "config")
    with LibvirtConnection(uri) as conn:
        yield conn, store, images, password


def run(world, *argv) -> tuple[int, str, str]:
    conn, store, _, _ = world
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), connection=conn, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def create_args(isos, password, *extra, name="w11"):
    return ["create", name, "--template", "windows11", "--iso", str(isos["windows"]),
            "--virtio-iso", str(isos["virtio"]), "--network", "none", "--force",
            "--unattended", "--user", "anna", "--password-file", str(password), *extra]


def test_create_unattended_makes_the_medium_and_keeps_the_password_out(world, isos, caplog):
    conn, store, images, password = world
    caplog.set_level(logging.DEBUG)
    code, out, err = run(world, *create_args(isos, password))
    assert code == 0, err
    medium = images / "w11-setup.iso"
    assert "unattended setup: Windows 11 Pro" in out and str(medium) in out
    assert (medium.stat().st_mode & 0o777) == 0o600
    xml = conn.execute(lambda c: c.lookupByName("w11").XMLDesc(0))
    assert str(medium) in xml and "org.qemu.guest_agent.0" in xml
    secret = "Sw0rdfish"
    saved = store.path_for("w11").read_text()
    assert "anna" in saved and secret not in saved
    code, info, _ = run(world, "info", "w11", "--json")
    assert code == 0 and secret not in info
    assert secret not in caplog.text and secret not in out + err
    assert secret.encode() in medium.read_bytes()  # only here: on the 0600 medium


@pytest.mark.parametrize("extra, field, words", [
    (["--iso", "LINUX"], "--iso", "is not a Windows installer"),
    (["--edition", "Windows 11 Education"], "--edition", "it holds: Windows 11 Home, Windows"
                                                         " 11 Pro"),
    (["--virtio-iso", "OLD"], "--virtio-iso", "has no viostor, vioscsi, NetKVM driver for"
                                              " Windows 11"),
    (["--user", "Administrator"], "--user", "reserves"),
    (["--user", "a" * 21], "--user", "Windows allows 20"),
    (["--locale", "english"], "--locale", "expected e.g. en-US"),
    (["--product-key", "123"], "--product-key", "XXXXX-XXXXX"),
    (["--lg-host-release", "B7"], "--lg-host-release", "goes with --lg-host-installer"),
])
def test_bad_setup_input_exits_2_and_leaves_nothing(world, isos, extra, field, words):
    conn, store, images, password = world
    extra = [{"LINUX": str(isos["linux"]), "OLD": str(isos["virtio_old"])}.get(a, a)
             for a in extra]
    code, _, err = run(world, *create_args(isos, password, *extra))
    assert code == 2, err
    assert err.startswith(f"neuron-vm: {field}") and words in err, err
    assert not images.exists() or not list(images.iterdir())
    assert conn.execute(lambda c: c.listDefinedDomains()) == [] or "w11" not in \
        conn.execute(lambda c: c.listDefinedDomains())
    assert store.load("w11") is None


def test_setup_needs_its_media_and_a_windows_or_linux_template(world, isos, tmp_path):
    _, _, _, password = world
    code, _, err = run(world, "create", "w", "--template", "windows11", "--unattended",
                       "--virtio-iso", str(isos["virtio"]), "--password-file", str(password))
    assert code == 2 and "--iso" in err and "installer ISO" in err
    code, _, err = run(world, "create", "w", "--template", "windows11", "--unattended",
                       "--iso", str(isos["windows"]), "--password-file", str(password))
    assert code == 2 and "--virtio-iso" in err
    code, _, err = run(world, "create", "w", "--template", "linux", "--unattended",
                       "--password-file", str(password))
    assert code == 2 and "--cloud-image" in err and "starts from a cloud image" in err
    code, _, err = run(world, "create", "w", "--template", "macos", "--opencore",
                       str(password), "--unattended", "--password-file", str(password))
    assert code == 2 and "--unattended" in err and "for Windows and Linux" in err
    code, _, err = run(world, "create", "w", "--template", "windows11", "--user", "anna")
    assert code == 2 and "--user" in err and "goes with --unattended" in err


def test_password_file_rules(world, isos, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    code, _, err = run(world, *create_args(isos, empty))
    assert code == 2 and "--password-file" in err and "empty" in err
    loose = tmp_path / "loose"
    loose.write_text("hunter2hunter2\n")
    loose.chmod(0o644)
    code, _, err = run(world, *create_args(isos, loose))
    assert code == 0 and "can be read by other users (mode 0644): chmod 600" in err
    group = tmp_path / "group"  # issue 28: a group's members are other users too
    group.write_text("hunter2hunter2\n")
    group.chmod(0o640)
    code, _, err = run(world, *create_args(isos, group, name="w3"))
    assert code == 0 and "can be read by other users (mode 0640): chmod 600" in err
    code, _, err = run(world, *create_args(isos, tmp_path / "nope", name="w2"))
    assert code == 2 and "cannot read" in err


def test_the_looking_glass_host_must_match_the_client(world, isos, tmp_path, monkeypatch,
                                                      make_host):
    """The client here (the fake) is B7: a B6 host installer is refused naming both; one
    whose name says no release needs --lg-host-release."""
    from support.fakes import add_pci_devices, nvidia_turing_gpu

    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="neuronos-lg-"))  # reachable by the desktop user
    folder.chmod(0o755)
    fake = folder / "looking-glass-client"
    shutil.copy(Path(__file__).parent / "bin" / "looking-glass-client", fake)
    fake.chmod(0o755)
    monkeypatch.setenv("NEURONOS_LG_CLIENT", str(fake))
    _, _, _, password = world
    if os.geteuid() == 0:
        monkeypatch.setenv("SUDO_USER", "nobody")  # the desktop user the release is read as
        mine = folder / "password"  # and whose password file it is (they must read it)
        shutil.copy(password, mine)
        os.chown(mine, pwd.getpwnam("nobody").pw_uid, -1)
        password = mine
        # the files they give must be files they could read themselves (issue 28)
        isos = {key: Path(shutil.copy(path, folder / path.name)) for key, path in isos.items()}
    root = add_pci_devices(tmp_path / "host", nvidia_turing_gpu())
    old = folder / "looking-glass-host-B6.zip"
    nameless = folder / "host-setup.exe"
    for path in (old, nameless):
        path.write_bytes(b"MZ")
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
    gpu = ["--gpu", "01:00.0", "--looking-glass"]
    code, _, err = run(world, *create_args(isos, password, *gpu, "--lg-host-installer",
                                           str(old)))
    assert code == 2 and "is B6 but this host's client is B7" in err, err
    code, _, err = run(world, *create_args(isos, password, *gpu, "--lg-host-installer",
                                           str(nameless)))
    assert code == 2 and "give --lg-host-release" in err, err
    code, out, err = run(world, *create_args(isos, password, *gpu))
    assert code == 0, err
    assert "does not install the Looking Glass host: get the B7 host" in out
    # no host installer on the medium: setup has no "looking-glass" stage to wait in
    from vm_manager.base.domain_xml import read_domain

    xml = world[0].execute(lambda c: c.lookupByName("w11").XMLDesc(0))
    setup = read_domain(xml).setup
    assert setup.kind == "windows" and setup.looking_glass is False
    shutil.rmtree(folder)


def test_a_failed_creation_removes_the_medium(make_host, tmp_path, isos):
    """A template that renders invalid XML fails at "validate", after the medium was made:
    the medium goes with the disk."""
    from vm_manager.base.errors import VMCreationError
    from vm_manager.core.vm_creator import VMCreator

    user = tmp_path / "templates"
    user.mkdir()
    (user / "windows11-basic.xml.j2").write_text("<domain type='kvm'><name>{{ name }}</name>"
                                                 "<broken/></domain>\n")
    loader = TemplateLoader([("user", user), ("package", PACKAGE_DIR)])
    images = tmp_path / "images"
    with LibvirtConnection(make_host()) as conn:
        creator = VMCreator(conn, store=VMStore(tmp_path / "config"), loader=loader,
                            images_dir=images)
        config = VMConfig(name="w11", vm_type="windows11", iso_path=str(isos["windows"]),
                          virtio_iso_path=str(isos["virtio"]), network="none",
                          unattended={"user": "anna"})
        with pytest.raises(VMCreationError) as caught:
            creator.create(config, force=True, secrets=Secrets("pw"))
        assert caught.value.step == "validate"
    assert list(images.iterdir()) == []  # neither the disk nor the medium


# --- the stages on the test driver (its real lifecycle events), and the faces ------------------

def test_stages_follow_events_and_setup_status_tells_them(world, isos):
    """`create --unattended`: stage "created" in the domain's metadata; starting it (the
    test driver's real "started" event) moves it to "installing"; an agent that answers
    while first-logon runs moves it to "first-logon". setup-status says where it stands and
    what comes next; `info --json` carries the stage, never the password."""
    import threading

    from vm_manager.actions import setup
    from vm_manager.actions.context import Context

    conn, store, images, password = world
    assert run(world, *create_args(isos, password))[0] == 0
    code, out, _ = run(world, "setup-status", "w11")
    assert code == 0 and "w11: created (windows setup)" in out and "neuron-vm start w11" in out
    ctx = Context(connection=conn, store=store)
    try:
        reached = {stage: threading.Event() for stage in ("installing", "first-logon")}
        stop = setup.follow(ctx, "w11", lambda c: reached[c.new].set())
        ctx.setup_tracker().boot_prompt_s = 0
        ctx.lifecycle.start("w11")
        assert reached["installing"].wait(10)
        ctx.setup_tracker().agent_connected("w11", stage_text="guest-tools")
        assert reached["first-logon"].wait(10)
        stop()
        status = setup.status(ctx, "w11")
        assert status.stage == "first-logon"
        # create recorded "created" with its time; the start, then the agent, moved it on
        assert [s["stage"] for s in status.steps] == ["created", "installing", "first-logon"]
        assert "setup medium exist" in status.steps[0]["note"]
    finally:
        ctx.close()
    code, out, _ = run(world, "setup-status", "w11", "--json")
    data = json.loads(out)
    assert code == 0 and data["stage"] == "first-logon" and data["kind"] == "windows"
    assert "guest tools" in data["steps"][-1]["note"]
    code, info, _ = run(world, "info", "w11", "--json")
    assert '"first-logon"' in info and "Sw0rdfish" not in info
    code, _, err = run(world, "setup-status", "nope")
    assert code == 3


def test_setup_status_of_a_vm_without_setup_exits_2(three_vm_uri):
    with LibvirtConnection(three_vm_uri) as conn:
        out, err = io.StringIO(), io.StringIO()
        assert main(["setup-status", "alpha"], connection=conn, out=out, err=err) == 2
        assert "was not created with --unattended" in err.getvalue()


def test_console_without_virt_viewer_says_how_to_install_it(three_vm_uri, monkeypatch,
                                                            tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no virt-viewer on it
    monkeypatch.delenv("NEURONOS_VIRT_VIEWER", raising=False)
    with LibvirtConnection(three_vm_uri) as conn:
        out, err = io.StringIO(), io.StringIO()
        assert main(["console", "alpha"], connection=conn, out=out, err=err) == 1
        assert "sudo apt install virt-viewer" in err.getvalue()
        assert "sudo pacman -S virt-viewer" in err.getvalue()
        assert err.getvalue().count("\n") == 1
        assert main(["console", "nope"], connection=conn, out=out, err=err) == 3
    from vm_manager.doctor.host_check import WARN, check_console_viewer

    host = tmp_path / "host"  # a host tree without it, then with it
    check = check_console_viewer(host, {"PATH": str(tmp_path)})
    assert check.status == WARN and "virt-viewer" in check.fix
    (host / "usr" / "bin").mkdir(parents=True)
    (host / "usr" / "bin" / "virt-viewer").write_bytes(b"")
    assert check_console_viewer(host, {}).status == "ok"


# --- Linux cloud images (cloud-init NoCloud) ----------------------------------------------------

@pytest.fixture
def cloud(tmp_path):
    base = tmp_path / "debian-12-genericcloud-amd64.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "256M"], check=True)
    key = tmp_path / "id_ed25519.pub"
    key.write_text("# my laptop\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0example "
                   'anna@laptop: "quoted" #tail\n')
    return base, key


def linux_args(base, key, *extra, name="lin"):
    return ["create", name, "--template", "linux", "--cloud-image", str(base), "--network",
            "none", "--unattended", "--user", "dev", "--ssh-key", str(key), *extra]


def test_a_cloud_image_vm_gets_an_overlay_and_a_seed(world, cloud, tmp_path):
    import yaml

    conn, store, images, password = world
    base, key = cloud
    before = sha256(base)
    code, out, err = run(world, *linux_args(base, key, "--password-file", str(password)))
    assert code == 0, err
    assert f"on {base}, which is never written" in out and "1 SSH key(s)" in out
    disk, seed = images / "lin.qcow2", images / "lin-setup.iso"
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["backing-filename"] == str(base) and info["backing-filename-format"] == "qcow2"
    assert (seed.stat().st_mode & 0o777) == 0o600
    # no network-config: cloud-init's fallback (DHCP on the first NIC) is the known-good
    # shape; a name-matched config left Debian 12's guest with no address (issue 25)
    assert xorriso_files(seed) == ["/meta-data", "/user-data"]
    label = subprocess.run(["xorriso", "-indev", str(seed), "-pvd_info"], capture_output=True,
                           text=True).stdout
    assert "Volume Id    : cidata" in label
    out_dir = tmp_path / "seed"
    out_dir.mkdir()
    meta = yaml.safe_load(xorriso_read(seed, "/meta-data", out_dir / "m"))
    vm_uuid = conn.execute(lambda c: c.lookupByName("lin").UUIDString())
    assert meta == {"instance-id": f"iid-{vm_uuid}", "local-hostname": "lin"}
    user_data = xorriso_read(seed, "/user-data", out_dir / "u").decode()
    assert user_data.startswith("#cloud-config\n")
    config = yaml.safe_load(user_data)
    account = config["users"][0]
    assert account["name"] == "dev" and account["lock_passwd"] is False
    assert "plain_text_passwd" not in account and "Sw0rdfish" not in user_data
    hashed = account["passwd"]  # SHA-512 crypt of the password, as chpasswd -e takes it
    assert hashed.startswith("$6$") and sha512_crypt("Sw0rdfish <&> ünïcode", hashed) == hashed
    assert account["ssh_authorized_keys"] == [
        'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0example anna@laptop: "quoted" #tail']
    assert "qemu-guest-agent" in config["packages"]
    # the last command: once cloud-init is done, restart the agent (the event of "done")
    assert config["runcmd"][-1] == [
        "systemd-run", "--no-block", "--collect", "--unit=neuronos-setup-done", "sh", "-c",
        "cloud-init status --wait >/dev/null 2>&1; systemctl restart qemu-guest-agent"]
    xml = conn.execute(lambda c: c.lookupByName("lin").XMLDesc(0))
    assert "kind='cloud-init'" in xml.replace('"', "'") and str(seed) in xml
    assert "Sw0rdfish" not in store.path_for("lin").read_text()
    assert sha256(base) == before


def test_a_key_only_account_needs_no_password(world, cloud):
    import yaml

    _, _, images, _ = world
    base, key = cloud
    code, _, err = run(world, *linux_args(base, key))
    assert code == 0, err
    seed = images / "lin-setup.iso"
    listing = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(seed), "-extract",
                              "/user-data", str(images / "u")], capture_output=True)
    assert listing.returncode == 0
    account = yaml.safe_load((images / "u").read_text())["users"][0]
    assert account["lock_passwd"] is True and "plain_text_passwd" not in account


@pytest.mark.parametrize("change, field, words", [
    (("--ssh-key", "PRIVATE"), "--ssh-key", "is a private key"),
    (("--ssh-key", "EMPTY"), "--ssh-key", "holds no SSH public key"),
    (("--user", "Root"), "--user", "not a Linux user name"),
    (("--user", "root"), "--user", "system account"),
    (("--cloud-image", "MISSING"), "--cloud-image", "does not exist"),
])
def test_bad_cloud_image_input_exits_2(world, cloud, tmp_path, change, field, words):
    base, key = cloud
    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n")
    empty = tmp_path / "empty.pub"
    empty.write_text("# nothing\n")
    args = linux_args(base, key)
    flag, value = change
    value = {"PRIVATE": str(private), "EMPTY": str(empty),
             "MISSING": str(tmp_path / "nope.qcow2")}.get(value, value)
    args[args.index(flag) + 1] = value
    code, _, err = run(world, *args)
    assert code == 2 and err.startswith(f"neuron-vm: {field}") and words in err, err
    _, _, images, _ = world
    assert not images.exists() or not list(images.iterdir())


@pytest.mark.parametrize("extra", [["--edition", "X"], ["--locale", "de-DE"],
                                   ["--bypass-hardware-checks"]])
def test_windows_options_on_linux_exit_2(world, cloud, extra):
    base, key = cloud
    code, _, err = run(world, *linux_args(base, key, *extra))
    assert code == 2 and "goes with a Windows template" in err, err


def test_linux_without_key_or_password_off_a_terminal_exits_2(world, cloud):
    base, _ = cloud
    code, _, err = run(world, "create", "lin", "--template", "linux", "--cloud-image",
                       str(base), "--network", "none", "--unattended", "--user", "dev")
    assert code == 2 and "--password-file" in err and "not on a terminal" in err


# --- setup-restart -----------------------------------------------------------------------------

def test_setup_restart_puts_a_stopped_setup_back_at_its_start(world, isos):
    """Kept: the VM, its disk and a medium that is still there; back to "created" with the
    history kept. A medium that is gone is made again (the password is needed then); the
    disk is made empty only with --wipe-disk; a running VM needs --force; a finished setup
    has nothing to restart."""
    conn, store, images, password = world
    assert run(world, *create_args(isos, password))[0] == 0
    disk, medium = images / "w11.qcow2", images / "w11-setup.iso"
    conn.execute(lambda c: c.lookupByName("w11").create())
    code, _, err = run(world, "setup-restart", "w11")
    assert code == 1 and "is running" in err and "--force" in err
    code, out, err = run(world, "setup-restart", "w11", "--force")
    assert code == 0, err
    assert "kept the setup medium" in out and "next: start it" in out
    assert not conn.execute(lambda c: c.lookupByName("w11").isActive())
    medium.unlink()  # say the user removed it
    code, _, err = run(world, "setup-restart", "w11")
    assert code == 2 and "--password-file" in err and "needs the account's password" in err
    disk.write_bytes(disk.read_bytes() + b"\0" * 4096 * 256)  # a half-done installation
    grown = disk.stat().st_size
    code, out, err = run(world, "setup-restart", "w11", "--password-file", str(password),
                         "--wipe-disk")
    assert code == 0, err
    assert "made the setup medium" in out and "made the disk" in out
    assert (medium.stat().st_mode & 0o777) == 0o600 and disk.stat().st_size < grown
    assert subprocess.run(["qemu-img", "check", "-q", str(disk)]).returncode == 0
    code, data, _ = run(world, "setup-status", "w11", "--json")
    steps = [s["stage"] for s in json.loads(data)["steps"]]
    # create's own step, then the two restarts; nobody listened when it was started by
    # libvirt directly and it was stopped before any `setup-status`: no "installing"
    assert steps == ["created", "created", "created"]
    code, _, err = run(world, "setup-restart", "alpha-not-there")
    assert code == 3
    import libvirt

    from vm_manager.base.domain_xml import SETUP_NS

    conn.execute(lambda c: c.lookupByName("w11").setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<setup kind='windows' stage='ready'/>",
        "neuronos-setup", SETUP_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    code, _, err = run(world, "setup-restart", "w11")
    assert code == 2 and "finished" in err


def test_setup_restart_of_a_cloud_vm_gives_cloud_init_a_new_instance(world, cloud):
    import yaml

    conn, _, images, _ = world
    base, key = cloud
    assert run(world, *linux_args(base, key))[0] == 0
    code, _, err = run(world, "setup-restart", "lin")
    assert code == 0, err
    seed = images / "lin-setup.iso"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(seed), "-extract",
                    "/meta-data", str(images / "m")], capture_output=True, check=True)
    vm_uuid = conn.execute(lambda c: c.lookupByName("lin").UUIDString())
    assert yaml.safe_load((images / "m").read_text())["instance-id"] == f"iid-{vm_uuid}-2"
    disk = images / "lin.qcow2"
    before = disk.read_bytes()
    conn.execute(lambda c: c.lookupByName("lin").snapshotCreateXML(  # issue 27, item 3
        "<domainsnapshot><name>s1</name></domainsnapshot>", 0))
    code, _, err = run(world, "setup-restart", "lin", "--wipe-disk")
    assert code == 2 and "has snapshots (s1), held inside its disk" in err, err
    assert disk.read_bytes() == before  # the disk and its snapshots are as they were
    conn.execute(lambda c: c.lookupByName("lin").snapshotLookupByName("s1").delete(0))
    code, _, err = run(world, "setup-restart", "lin", "--wipe-disk")
    assert code == 0, err
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json",
                                      str(images / "lin.qcow2")], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["backing-filename"] == str(base)  # on the same cloud image again


def test_events_and_create_start_follow_the_setup(world, isos):
    """`create --unattended --start` follows the stages it sees (here to "installing"), and
    ends with exit 1 and one line when the VM stops mid-setup; `events` streams setup
    stages among the state changes."""
    import threading
    import time

    conn, store, images, password = world
    out, err, code = io.StringIO(), io.StringIO(), []

    def follow() -> None:
        code.append(main(create_args(isos, password, "--start"), connection=conn, out=out,
                         err=err))

    thread = threading.Thread(target=follow)
    thread.start()
    deadline = time.monotonic() + 20
    while "w11: setup installing" not in out.getvalue():
        assert time.monotonic() < deadline and thread.is_alive(), out.getvalue() + err.getvalue()
        time.sleep(0.05)  # reading another thread's text output: nothing to wait on
    assert "following the setup of w11" in out.getvalue()
    conn.execute(lambda c: c.lookupByName("w11").destroy())  # it stops mid-setup
    thread.join(timeout=20)
    assert code == [1] and "the VM stopped during setup" in out.getvalue()

    from vm_manager.actions import setup
    from vm_manager.actions.context import Context

    from conftest import EventRecorder
    from vm_manager.base.events import EVENT_METADATA

    ctx = Context(connection=conn, store=store)
    recorder = EventRecorder()
    token = conn.subscribe(recorder)
    ctx.setup_tracker().reset("w11", "test: again")  # back to created
    # its metadata-change event must be out before the watcher listens, or it is the
    # watcher's first event (seen once in a full run)
    recorder.wait_for(lambda e: getattr(e, "event", None) == EVENT_METADATA)
    conn.unsubscribe(token)
    events, said, done = io.StringIO(), io.StringIO(), []
    watcher = threading.Thread(target=lambda: done.append(main(
        ["events", "w11", "--count", "2"], connection=conn, out=events, err=said)))
    watcher.start()
    deadline = time.monotonic() + 20
    try:
        while "Watching w11" not in said.getvalue():  # said once it listens
            assert time.monotonic() < deadline
            time.sleep(0.05)
        conn.execute(lambda c: c.lookupByName("w11").create())
        watcher.join(timeout=20)
    finally:
        ctx.close()
    text = events.getvalue()
    assert done == [0] and "w11  setup created -> installing" in text, text
    assert setup.stage(Context(connection=conn, store=store), "w11") == "installing"


def test_configure_mid_setup_keeps_the_media_and_the_stage(world, isos):
    """A change of settings while a setup waits (stopped) changes the memory only: the
    installer, the virtio ISO, the setup medium and the stage stay."""
    import libvirt

    from vm_manager.base.domain_xml import read_domain

    conn, _, _, password = world
    assert run(world, *create_args(isos, password))[0] == 0

    def domain():
        return read_domain(conn.execute(lambda c: c.lookupByName("w11").XMLDesc(
            libvirt.VIR_DOMAIN_XML_INACTIVE)))

    before = domain()
    code, _, err = run(world, "configure", "w11", "--memory", "6G")
    assert code == 0, err
    after = domain()
    assert after.memory_mib == 6144 and after.disks == before.disks
    assert [d.source for d in after.disks if d.device == "cdrom"] == [
        d.source for d in before.disks if d.device == "cdrom"] and len(after.disks) == 4
    assert after.setup == before.setup and after.setup.stage == "created"


def test_configure_after_the_setup_keeps_its_record(world, isos):
    """Once the setup is ready, a change of settings keeps its record (stage and steps): the
    list still says "ready" and setup-restart still says it finished."""
    import libvirt

    from vm_manager.base.domain_xml import SETUP_NS, read_domain

    conn, _, _, password = world
    assert run(world, *create_args(isos, password))[0] == 0
    conn.execute(lambda c: c.lookupByName("w11").setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<setup kind='windows' stage='ready'"
        " looking-glass='no'><step stage='ready' at='2026-12-02T03:00:00Z'>done</step>"
        "</setup>", "neuronos-setup", SETUP_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    code, _, err = run(world, "configure", "w11", "--memory", "6G")
    assert code == 0, err
    domain = read_domain(conn.execute(lambda c: c.lookupByName("w11").XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE)))
    assert domain.memory_mib == 6144
    assert domain.setup.stage == "ready" and domain.setup.steps == (
        ("ready", "2026-12-02T03:00:00Z", "done"),)
    code, _, err = run(world, "setup-restart", "w11")
    assert code == 2 and "finished" in err



# --- shared folders in an unattended Windows -----------------------------------------------

MSI_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")  # Windows Installer files are OLE compound files


def test_windows_with_shares_gets_winfsp_and_the_virtiofs_service(world, isos, tmp_path):
    """--winfsp-installer: the .msi goes onto the medium byte for byte, setup.json names
    the shares, and the first-logon script installs WinFsp before the guest tools (they
    register the VirtIO-FS service only where WinFsp is) and sets the service to start."""
    conn, store, images, password = world
    docs, music = tmp_path / "docs", tmp_path / "music"
    docs.mkdir()
    music.mkdir()
    msi = tmp_path / "winfsp-2.0.23075.msi"
    msi.write_bytes(MSI_MAGIC + bytes(range(256)) * 40)
    code, out, err = run(world, *create_args(isos, password, "--share", f"{docs}=docs",
                                             "--share", str(music),
                                             "--winfsp-installer", str(msi)))
    assert code == 0, err
    assert "setup installs WinFsp, the viofs driver and the VirtIO-FS service: Windows shows" \
        " the shared folder 'docs' as a drive" in out
    assert "'music' need a service instance each" in out + err
    medium = images / "w11-setup.iso"
    assert "/neuronos/winfsp.msi" in xorriso_files(medium, joliet=True)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert xorriso_read(medium, "/neuronos/winfsp.msi", out_dir / "w.msi") == msi.read_bytes()
    setup = json.loads(xorriso_read(medium, "/neuronos/setup.json", out_dir / "s.json"))
    assert (setup["shares"], setup["winfsp"], setup["virtio_folder"]) == (
        ["docs", "music"], True, "w11")
    script = xorriso_read(medium, "/neuronos/firstlogon.ps1", out_dir / "f.ps1").decode()
    assert script.index("winfsp.msi") < script.index("virtio-win-guest-tools.exe") \
        < script.index("Set-Service -Name 'VirtioFsSvc' -StartupType Automatic")
    assert "viofs\\$($setup.virtio_folder)\\amd64" in script
    xml = conn.execute(lambda c: c.lookupByName("w11").XMLDesc(0))
    assert xml.count("<driver type='virtiofs'/>") == 2


def test_windows_shares_without_winfsp_say_where_to_get_it(world, isos, tmp_path):
    _, _, images, password = world
    docs = tmp_path / "docs"
    docs.mkdir()
    code, out, err = run(world, *create_args(isos, password, "--share", str(docs)))
    assert code == 0, err
    assert "Windows shows shared folders only with WinFsp: get its installer (.msi) from" \
        " https://winfsp.dev/rel/ and pass --winfsp-installer" in out
    assert "/neuronos/winfsp.msi" not in xorriso_files(images / "w11-setup.iso")


@pytest.mark.parametrize("content, words", [
    (b"MZ\x90\x00 not an msi", "is not a Windows Installer (.msi) file"),
    (None, "does not exist or is not a file"),
])
def test_a_bad_winfsp_installer_exits_2_and_leaves_nothing(world, isos, tmp_path, content,
                                                           words):
    conn, store, images, password = world
    msi = tmp_path / "winfsp.msi"
    if content is not None:
        msi.write_bytes(content)
    code, _, err = run(world, *create_args(isos, password, "--winfsp-installer", str(msi)))
    assert code == 2 and err.startswith("neuron-vm: --winfsp-installer") and words in err, err
    assert store.load("w11") is None and not (images / "w11-setup.iso").exists()
    code, _, err = run(world, "create", "l", "--template", "linux", "--unattended",
                       "--cloud-image", str(msi), "--winfsp-installer", str(msi))
    assert code == 2 and "--winfsp-installer" in err and "goes with a Windows" in err, err

# --- shared folders: what is never shared ------------------------------------------------------

@pytest.mark.parametrize("path, words", [
    ("/", "the whole computer"), ("/etc", "inside /etc"), ("/etc/ssh", "inside /etc"),
    ("/proc", "inside /proc"), ("/var/lib/libvirt/qemu", "inside /var/lib/libvirt"),
    ("IMAGES", "inside"), ("PARENT", "holds the images folder"), ("MISSING", "not a folder"),
    ("LINK", "inside /etc"),
])
def test_shares_the_system_needs_are_refused_with_exit_2(world, tmp_path, path, words):
    conn, store, images, _ = world
    images.mkdir(exist_ok=True)
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    path = {"IMAGES": str(images), "PARENT": str(images.parent), "MISSING": str(tmp_path / "x"),
            "LINK": str(link)}.get(path, path)
    code, _, err = run(world, "create", "s", "--template", "linux", "--network", "none",
                       "--share", f"{path}=data")
    assert code == 2 and err.startswith("neuron-vm: --share") and words in err, err
    assert "s" not in conn.execute(lambda c: [d.name() for d in c.listAllDomains()])


def test_a_share_is_planned_with_its_tag(world, tmp_path):
    folder = tmp_path / "My Photos"
    folder.mkdir()
    code, out, err = run(world, "create", "s", "--template", "linux", "--network", "none",
                         "--share", str(folder), "--print-xml")
    assert code == 0, err
    assert f"<source dir='{folder}'/>" in out and "<target dir='My-Photos'/>" in out
    assert "<source type='memfd'/>" in out
    code, _, err = run(world, "create", "s", "--template", "linux", "--network", "none",
                       "--share", f"{folder}=bad tag")
    assert code == 2 and "is not a mount tag" in err


def test_the_setup_journey_tells_each_stage_and_how_it_ended(world, isos):
    """The action both faces follow a setup with: made before the VM starts, it sees
    "installing" and "first-logon" and ends "vm-stopped" when the VM stops mid-setup."""
    from vm_manager.actions import setup
    from vm_manager.actions.context import Context

    conn, store, _, password = world
    assert run(world, *create_args(isos, password))[0] == 0
    ctx = Context(connection=conn, store=store)
    seen = []
    journey = setup.SetupJourney(ctx, "w11", on_stage=lambda change: seen.append(change.new))
    try:
        ctx.setup_tracker().boot_prompt_s = 0
        ctx.lifecycle.start("w11")
        ends = []

        def until(stage):
            for _ in range(20):  # each wait returns with one event, or after 10 s
                if stage in seen:
                    return
                ends.append(journey.wait(10))
                assert ends[-1] is None, ends  # not ended before that stage
            raise AssertionError(f"{stage} not seen; saw {seen}")

        until("installing")
        ctx.setup_tracker().agent_connected("w11", stage_text="guest-tools")
        until("first-logon")
        conn.execute(lambda c: c.lookupByName("w11").destroy())
        end = next((e for e in (journey.wait(10) for _ in range(20)) if e), None)
        assert end == "vm-stopped" and seen == ["installing", "first-logon"]
        assert journey.session is None  # no display was asked for
    finally:
        journey.close()
        ctx.close()


def test_setup_restart_never_trusts_the_medium_path_in_the_metadata(world, isos, tmp_path):
    """Issue 28: a path planted in the domain's metadata made setup-restart unlink that file
    and write an ISO there (as root under sudo). Only the path NeuronOS derives is used; the
    planted one is named and left alone."""
    import libvirt

    from vm_manager.base.domain_xml import SETUP_NS

    conn, store, images, password = world
    assert run(world, *create_args(isos, password))[0] == 0
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0::/root:/bin/bash\n")
    conn.execute(lambda c: c.lookupByName("w11").setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        f"<setup kind='windows' stage='created' medium='{victim}'/>",
        "neuronos-setup", SETUP_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    code, _, err = run(world, "setup-restart", "w11", "--password-file", str(password))
    assert code == 2 and "names the setup medium /tmp/" in err and "not touched" in err
    assert victim.read_text() == "root:x:0:0::/root:/bin/bash\n"
    assert (images / "w11-setup.iso").exists()  # its own medium is still there

"""Remote hosts (issue 17): what only works on this computer's own libvirt refuses a remote
URI with one line naming why, before it connects anywhere; what libvirt can tell about a
remote host (its GPUs) comes from libvirt, never from this machine's /sys."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from vm_manager.cli import main

REMOTE = "qemu+ssh://anna@192.0.2.7/system"  # TEST-NET-1: nothing answers there


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv, words", [
    (["display", "win"], "the VM's shared memory is on the other machine"),
    (["shm-permissions", "win", "--apply"], "/etc/tmpfiles.d"),
    (["gpu", "prepare", "0000:01:00.0", "--apply"], "boot configuration"),
    (["gpu", "prepare", "0000:01:00.0"], "boot configuration"),
    (["gpu", "unprepare"], "boot configuration"),
    (["snapshot", "create", "win", "s1"], "UEFI variables and TPM state"),
    (["snapshot", "revert", "win", "s1"], "UEFI variables and TPM state"),
    (["snapshot", "delete", "win", "s1"], "UEFI variables and TPM state"),
])
def test_local_only_commands_refuse_a_remote_uri(argv, words):
    code, out, err = run("-c", REMOTE, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and "works only on this computer's own libvirt" in err
    assert REMOTE in err and words in err
    assert "cannot reach" not in err  # refused before connecting to anything


def test_display_points_at_the_console_instead():
    _, _, err = run("-c", REMOTE, "display", "win")
    assert f"neuron-vm --connect {REMOTE} console win" in err


def test_doctor_of_a_remote_host_uses_only_what_libvirt_reports():
    """Judged from libvirt's facts (pure): KVM from the domain capabilities, the IOMMU from
    the node devices' groups, firmware and TPM from the domain capabilities; what libvirt
    does not report is "unknown" with the command to run there, never this machine's."""
    from vm_manager.doctor.remote_checks import UNKNOWN, _judge

    domcaps = ("<domainCapabilities><os><loader supported='yes'><value>/usr/share/OVMF/"
               "OVMF_CODE_4M.ms.fd</value><enum name='secure'><value>yes</value></enum>"
               "</loader></os><devices><tpm supported='yes'><enum name='backendModel'>"
               "<value>emulator</value></enum></tpm></devices></domainCapabilities>")
    facts = {"version": 9_000_000, "host": "workstation", "kvm": domcaps, "qemu": domcaps,
             "default_net": "missing"}
    checks = {c.name: c for c in _judge(REMOTE, facts, {14: ["0000:01:00.0"]})}
    assert checks["CPU virtualization"].status == "ok" and "workstation" in \
        checks["CPU virtualization"].detail
    assert checks["IOMMU"].detail == "1 IOMMU groups on workstation"
    assert checks["UEFI firmware (OVMF)"].detail.endswith("Secure Boot available")
    assert checks["swtpm (TPM 2.0)"].status == "ok"
    for name in ("vfio-pci", "kernel command line", "user groups"):
        assert checks[name].status == UNKNOWN and "on workstation" in checks[name].fix
    bare = {c.name: c for c in _judge(REMOTE, dict(facts, kvm=None), {})}
    assert bare["CPU virtualization"].status == "fail" and bare["IOMMU"].status == "fail"


def fake_ssh(folder: Path, script: str, monkeypatch) -> None:
    """``ssh`` as libvirt finds it (on PATH: a URI's ``command=`` is refused, issue 28)."""
    folder.mkdir(exist_ok=True)
    ssh = folder / "ssh"
    ssh.write_text("#!/bin/sh\n" + script)
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")


def test_doctor_against_a_host_that_does_not_answer(tmp_path, monkeypatch):
    fake_ssh(tmp_path / "bin", "exit 1\n", monkeypatch)
    code, out, err = run("-c", "qemu+ssh://anna@192.0.2.7/system?no_tty=1", "doctor")
    assert code == 1
    assert "[fail] libvirtd:" in out and "virsh -c" in out
    assert "console viewer" in out  # this computer's own programs are still checked


def test_two_hosts_with_a_vm_of_the_same_name_keep_their_own_settings(tmp_path):
    """Settings are kept per host: this computer's (every local URI) in the config folder,
    each remote host's in its own folder (the URI's query, e.g. keyfile=, does not make
    another host); a VM called "win" on two hosts never shares its settings."""
    from vm_manager.actions import Context
    from vm_manager.base.primitives import host_key
    from vm_manager.base.vm_config import VMConfig

    here = Context("qemu:///system").store
    there = Context("qemu+ssh://anna@192.0.2.7/system?keyfile=/home/anna/.ssh/id").store
    other = Context("qemu+ssh://anna@192.0.2.8/system").store
    assert Context("qemu:///session").store.config_dir == here.config_dir
    assert Context("qemu+ssh://anna@192.0.2.7/system").store.config_dir == there.config_dir
    assert len({here.config_dir, there.config_dir, other.config_dir}) == 3
    assert there.config_dir.parent.name == "hosts"
    assert there.config_dir.name.startswith("192.0.2.7-")
    for store, memory in ((here, 4096), (there, 8192), (other, 16384)):
        store.save(VMConfig(name="win", vm_type="windows11", memory_mb=memory))
    assert [s.load("win").memory_mb for s in (here, there, other)] == [4096, 8192, 16384]
    assert host_key("qemu+ssh://a@h:2222/system") != host_key("qemu+ssh://a@h:2223/system")
    assert host_key("qemu+ssh://a@h/system") != host_key("qemu+ssh://a@h/session")


@pytest.mark.parametrize("uri, name", [
    ("qemu+ssh://anna@workstation:2222/system?keyfile=/k", "workstation"),
    ("qemu://192.0.2.7/system", "192.0.2.7"),
    ("qemu+ssh://[2001:db8::7]:22/system", "[2001:db8::7]"),
    ("qemu:///system", "this computer"),
    ("qemu+unix:///system", "this computer"),
    ("test:///default", "this computer"),
])
def test_host_names_as_people_say_them(uri, name):
    from vm_manager.base.primitives import host_name

    assert host_name(uri) == name


def test_a_remote_hosts_files_are_its_pools_volumes(make_host, tmp_path):
    """What `create` names on a remote host is looked up among that host's storage volumes
    (kind and format from libvirt), never on this machine: a file that exists here but in
    no pool there is missing, with the fix in the message; the plan takes an existing
    qcow2 volume as the disk with its format."""
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.base.errors import InvalidConfig
    from vm_manager.core.host import _remote_path_facts
    from vm_manager.core.planning import plan_creation
    from vm_manager.base.vm_config import VMConfig

    here = tmp_path / "vmlinuz-here"
    here.write_bytes(b"a kernel on this machine, not on the remote host")
    with LibvirtConnection(make_host()) as conn:  # the test driver's pools stand in for its
        pool = conn.execute(lambda c: c.storagePoolDefineXML(
            "<pool type='dir'><name>boot</name><target><path>/srv/boot</path></target>"
            "</pool>"))
        pool.create(0)
        for name, fmt in (("vmlinuz", "raw"), ("initrd.img", "raw"), ("data.qcow2", "qcow2")):
            pool.createXML(f"<volume><name>{name}</name><capacity unit='MiB'>1</capacity>"
                           f"<target><format type='{fmt}'/></target></volume>", 0)
        config = VMConfig(name="lin", vm_type="linux", network="none", domain_type="qemu",
                          kernel_path="/srv/boot/vmlinuz", initrd_path="/srv/boot/initrd.img",
                          disk_path="/srv/boot/data.qcow2", serial_log_path="/var/log/x.log")
        facts = _remote_path_facts(conn, config, Path("/var/lib/libvirt/images"))
        assert facts["/srv/boot/vmlinuz"].kind == "file"
        assert facts["/srv/boot/data.qcow2"].kind == "file"
        assert facts["/srv/boot/data.qcow2"].format == "qcow2"
        assert facts["/var/lib/libvirt/images/lin.qcow2"].kind == "missing"  # free there
        assert facts["/var/log/x.log"].parent_writable  # libvirt makes it there

        from vm_manager.core.host_facts import HostFacts
        from vm_manager.base.vm_config import HostResources

        def plan(config):
            paths = _remote_path_facts(conn, config, Path("/var/lib/libvirt/images"))
            return plan_creation(config, HostFacts(
                uri=REMOTE, kvm_usable=None, hyperv_features=None,
                resources=HostResources(memory_mb=16384, cpus=8), libvirt_version=9_000_000,
                images_dir=Path("/var/lib/libvirt/images"), domain_names=frozenset(),
                pci=None, uefi_firmware=(), networks=None, paths=paths, remote=True))

        made = plan(config)
        assert (made.disk.path, made.disk.format, made.disk.create) == (
            "/srv/boot/data.qcow2", "qcow2", False)
        elsewhere = VMConfig(name="lin", vm_type="linux", network="none", domain_type="qemu",
                             kernel_path=str(here), disk_size_gb=2)
        with pytest.raises(InvalidConfig) as caught:
            plan(elsewhere)
        message = str(caught.value)
        assert caught.value.field == "kernel_path"
        assert " is in no storage pool of " in message and "does not exist" not in message
        assert message.endswith(" pool-refresh POOL`); give a regular file")
        assert here.read_bytes().startswith(b"a kernel")  # there, and still not taken


# --- a real remote host: an sshd on 127.0.0.1, qemu+ssh:// to this machine's libvirtd ------

@pytest.fixture
def ssh_uri(system_daemon, tmp_path_factory, monkeypatch):
    """An sshd the test starts (key only, an unprivileged port, this folder's host key),
    torn down after; the qemu+ssh:// URI that reaches this machine's libvirtd through it."""
    import shutil
    import socket
    import subprocess

    from conftest import unavailable

    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or os.geteuid() != 0:
        unavailable("needs openssh-server and root (apt-get install openssh-server)",
                    "no sshd to run as root (.ci/run installs openssh-server)")
    folder = tmp_path_factory.mktemp("sshd")
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(folder / key)], check=True)
    (folder / "authorized_keys").write_text((folder / "client.pub").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"StrictModes no\nPidFile {folder / 'sshd.pid'}\n")
    os.makedirs("/run/sshd", exist_ok=True)  # its privilege separation folder
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(folder / "sshd_config")],
                              stderr=subprocess.PIPE, text=True)
    said = []
    for line in server.stderr:  # blocks until sshd says it listens, or exits
        said.append(line)
        if "Server listening" in line:
            break
    else:
        pytest.fail(f"sshd did not start: {''.join(said)}")
    # the host key checked as a user's first `ssh` would have it: known, in a known_hosts
    # file the ssh on PATH is told about (no_verify=1 is refused, issue 28)
    host_key = (folder / "host.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (folder / "bin").mkdir()
    wrapper = folder / "bin" / "ssh"
    real_ssh = shutil.which("ssh", path="/usr/bin:/bin")  # never another test's wrapper
    wrapper.write_text(f"#!/bin/sh\nexec {real_ssh} -o StrictHostKeyChecking=yes"
                       f" -o UserKnownHostsFile={folder / 'known_hosts'} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder / 'bin'}:{os.environ['PATH']}")
    try:
        yield f"qemu+ssh://root@127.0.0.1:{port}/system?keyfile={folder / 'client'}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.daemon
def test_a_vm_on_a_remote_host_over_ssh(ssh_uri, tiny_guest, tmp_path, monkeypatch):
    """Through qemu+ssh:// alone, with no qemu-img on this side's PATH (only ssh): create
    (the kernel and initrd are found as volumes of a pool there, the disk is a volume
    libvirt makes in the images pool), start, force-stop, delete with and without
    --delete-disks; its settings are kept in the host's own folder; display refuses; a
    kernel outside every pool is "missing" there (exit 2), never looked up here."""
    import shutil
    import uuid as uuid_module

    from vm_manager.actions import Context, delete, display
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.base.errors import LocalOnly, OperationFailed
    from vm_manager.base.primitives import VMState
    from vm_manager.core.vm_lifecycle import ShutdownMethod
    from vm_manager.base.vm_config import VMConfig
    from support.domains import remove_domain, remove_pool

    only_ssh = tmp_path / "bin"
    only_ssh.mkdir()
    (only_ssh / "ssh").symlink_to(shutil.which("ssh"))
    monkeypatch.setenv("PATH", str(only_ssh))
    images = Path(f"/var/lib/libvirt/images/neuron-ssh-{uuid_module.uuid4().hex[:6]}")
    names = [f"neuron-ssh-{uuid_module.uuid4().hex[:6]}" for _ in range(2)]
    ctx = Context(ssh_uri, images_dir=images)
    local = LibvirtConnection("qemu:///system")
    from vm_manager.base.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match="kernel_path"):  # in no pool over there (yet)
        ctx.creator().plan(VMConfig(name=names[0], vm_type="linux", network="none",
                                    kernel_path=str(tiny_guest.kernel), domain_type="qemu"))
    boot = local.execute(lambda c: c.storagePoolDefineXML(
        f"<pool type='dir'><name>neuron-ssh-boot-{names[0][-6:]}</name><target><path>"
        f"{tiny_guest.kernel.parent}</path></target></pool>"))
    boot.create(0)
    try:
        for name in names:
            ctx.creator().create(VMConfig(
                name=name, vm_type="linux", kernel_path=str(tiny_guest.kernel),
                initrd_path=str(tiny_guest.initrd), disk_size_gb=1, network="none",
                domain_type="qemu", memory_mb=512), force=True)
        disks = [str(images / f"{name}.qcow2") for name in names]
        for disk in disks:  # made by libvirt as a volume of the pool, seen from here too
            volume = local.execute(lambda c, d=disk: c.storageVolLookupByPath(d))
            assert volume.info()[1] == 1 << 30
        saved = ctx.store.path_for(names[0])
        assert saved.exists() and saved.parent.parent.parent.name == "hosts"
        assert ctx.lifecycle.start(names[0], timeout=120).state == VMState.RUNNING
        with pytest.raises(LocalOnly, match="shared memory is on the other machine"):
            display.open_display(ctx, display.DisplayRequest(names[0]))
        stopped = ctx.lifecycle.stop(names[0], method=ShutdownMethod.FORCE)
        assert stopped.state == VMState.SHUTOFF
        kept = delete.delete(ctx, delete.DeleteRequest(names[0]))
        assert any(path == disks[0] for path, _ in kept.kept)
        gone = delete.delete(ctx, delete.DeleteRequest(names[1], delete_disks=True))
        assert disks[1] in gone.removed
        with pytest.raises(OperationFailed, match="no storage vol"):
            local.execute(lambda c: c.storageVolLookupByPath(disks[1]))
        assert os.path.exists(disks[0]) and not os.path.exists(disks[1])

        # a cloud-init VM: its seed is built here and sent into that host's pool, its disk
        # is an overlay volume on a cloud image there; "ready" deletes the seed through
        # the pool, --delete-disks the overlay (never the cloud image)
        from vm_manager.guest.iso import IsoReader

        base = f"{images}/cloud-base.qcow2"
        pool = local.execute(
            lambda c: c.storageVolLookupByPath(disks[0]).storagePoolLookupByVolume())
        pool.createXML("<volume><name>cloud-base.qcow2</name><capacity unit='M'>64"
                       "</capacity><target><format type='qcow2'/></target></volume>", 0)
        key = tmp_path / "id_ed25519.pub"
        key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0example anna@laptop\n")
        cloudy = names[1] + "-c"
        names.append(cloudy)
        made = ctx.creator().create(VMConfig(
            name=cloudy, vm_type="linux", network="none", domain_type="qemu",
            cloud_image_path=base, disk_size_gb=1, memory_mb=512,
            unattended={"user": "dev", "ssh_key_path": str(key)}), force=True)
        seed = f"{images}/{cloudy}-setup.iso"
        volume = local.execute(lambda c: c.storageVolLookupByPath(seed))  # libvirt knows it
        assert volume.info()[1] == os.path.getsize(seed) > 0
        with IsoReader(Path(seed)) as iso, iso.open(iso.find("/user-data")) as data:
            user_data = data.read().decode()  # the same machine: read what was sent
        assert "anna@laptop" in user_data and "dev" in user_data
        assert os.stat(seed).st_mode & 0o777 == 0o600  # it names the account

        def instance() -> str:
            with IsoReader(Path(seed)) as iso, iso.open(iso.find("/meta-data")) as data:
                return data.read().decode()

        first = instance()
        from vm_manager.actions import setup

        setup.restart(ctx, cloudy)  # a new seed (a new instance), sent again over the old
        assert instance() != first and os.stat(seed).st_mode & 0o777 == 0o600
        overlay = local.execute(lambda c: c.storageVolLookupByPath(made.disk_path))
        assert f"<path>{base}</path>" in overlay.XMLDesc(0)  # backing: the cloud image
        ctx.setup_tracker().finish(cloudy, "test: the guest said it is ready")
        with pytest.raises(OperationFailed, match="no storage vol"):
            local.execute(lambda c: c.storageVolLookupByPath(seed))
        assert not os.path.exists(seed)
        gone = delete.delete(ctx, delete.DeleteRequest(cloudy, delete_disks=True))
        assert made.disk_path in gone.removed and os.path.exists(base)

        # a creation that fails after the seed was sent takes it back out of the pool
        from vm_manager.base.errors import VMCreationError

        creator = ctx.creator()
        monkeypatch.setattr(creator, "define", lambda xml: (_ for _ in ()).throw(
            OperationFailed("libvirt said no (injected)", 1)))
        with pytest.raises(VMCreationError, match="everything done before it was undone"):
            creator.create(VMConfig(
                name=cloudy, vm_type="linux", network="none", domain_type="qemu",
                cloud_image_path=base, disk_size_gb=1, memory_mb=512,
                unattended={"user": "dev", "ssh_key_path": str(key)}), force=True)
        for path in (seed, made.disk_path):
            with pytest.raises(OperationFailed, match="no storage vol"):
                local.execute(lambda c, p=path: c.storageVolLookupByPath(p))
    finally:
        ctx.close()
        for name in names:
            remove_domain(local, name)
        boot.destroy()
        boot.undefine()
        remove_pool(local, images)
        local.close()
        shutil.rmtree(images, ignore_errors=True)


@pytest.mark.daemon
def test_an_unattended_windows_vm_on_a_remote_host(ssh_uri, tmp_path, monkeypatch):
    """`neuron-vm -c qemu+ssh://… create --unattended` for Windows 11, with only ssh on this
    side's PATH: the installer and virtio-win ISOs are volumes of a pool there, read through
    libvirt (their editions and drivers, never copied whole); the setup medium is built
    here and sent into that host's images pool (0600); an edition the installer does not
    have is refused naming those it has; --delete-disks removes the medium and the disk
    through the pool and never the ISOs."""
    import shutil
    import uuid as uuid_module

    from support.domains import remove_domain, remove_pool
    from support.media import virtio_win_iso, windows_iso
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.guest.iso import IsoReader

    tag = uuid_module.uuid4().hex[:6]
    media, images = (Path(f"/var/lib/libvirt/images/neuron-ssh-{kind}-{tag}")
                     for kind in ("media", "images"))
    media.mkdir(mode=0o711)
    installer = windows_iso(media / "Win11_24H2_English_x64.iso")
    virtio = virtio_win_iso(media / "virtio-win.iso")
    shutil.rmtree(media / "virtio-win.iso.tree", ignore_errors=True)
    password = tmp_path / "password"
    password.write_text("correct horse\n")
    only_ssh = tmp_path / "bin"
    only_ssh.mkdir()
    (only_ssh / "ssh").symlink_to(shutil.which("ssh"))
    monkeypatch.setenv("PATH", str(only_ssh))
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    name = f"neuron-ssh-w11-{tag}"
    local = LibvirtConnection("qemu:///system")
    from vm_manager.core import storage

    local.execute(lambda c: storage.images_pool(c, media))  # the ISOs are volumes there

    def create(*extra):
        return run("-c", ssh_uri, "create", name, "--template", "windows11", "--iso",
                   str(installer), "--virtio-iso", str(virtio), "--network", "none",
                   "--domain-type", "qemu", "--force", "--unattended", "--user", "anna",
                   "--password-file", str(password), *extra)

    import pycdlib

    def never_here(self, *args, **kwargs):
        raise AssertionError(f"an ISO of the remote host was opened here: {args}")

    try:
        with monkeypatch.context() as patch:  # only libvirt's download stream reads them
            patch.setattr(pycdlib.PyCdlib, "open", never_here)
            code, _, err = create("--edition", "Windows 11 Education")
            assert code == 2 and "Windows 11 Home, Windows 11 Pro" in err, err  # read there
            code, out, err = create()
            assert code == 0, err
        medium = images / f"{name}-setup.iso"
        volume = local.execute(lambda c: c.storageVolLookupByPath(str(medium)))
        assert volume.info()[1] == medium.stat().st_size
        assert medium.stat().st_mode & 0o777 == 0o600  # it holds the account's password
        with IsoReader(medium) as iso:
            files = set(iso.files())
            with iso.open(iso.find("/autounattend.xml")) as answer:
                assert b"anna" in answer.read()
        assert any(f.lower().startswith("/$winpedriver$/viostor/") for f in files), files
        code, out, err = run("-c", ssh_uri, "delete", name, "--delete-disks", "--yes")
        assert code == 0, err
        assert not medium.exists() and not (images / f"{name}.qcow2").exists()
        assert installer.exists() and virtio.exists()
    finally:
        remove_domain(local, name)
        for folder in (media, images):
            remove_pool(local, folder)
            shutil.rmtree(folder, ignore_errors=True)
        local.close()


USB_NODEDEVS = [
    """<device><name>usb_usb1</name><path>/sys/devices/pci0000:00/0000:00:14.0/usb1</path>
    <capability type='usb_device'><bus>1</bus><device>1</device>
    <product id='0x0002'>2.0 root hub</product><vendor id='0x1d6b'>Linux Foundation</vendor>
    </capability></device>""",
    """<device><name>usb_1_4_2</name><path>/sys/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4.2
    </path><devnode type='dev'>/dev/bus/usb/001/007</devnode><parent>usb_1_4</parent>
    <driver><name>usb</name></driver><capability type='usb_device'><bus>1</bus>
    <device>7</device><product id='0xc52b'>Unifying Receiver</product>
    <vendor id='0x046d'>Logitech, Inc.</vendor></capability></device>""",
    """<device><name>usb_3_1</name><path>/sys/devices/pci0000:00/0000:00:14.0/usb3/3-1</path>
    <capability type='usb_device'><bus>3</bus><device>2</device>
    <product id='0x0407'>Yubikey 4/5 OTP+U2F+CCID</product><vendor id='0x1050'>Yubico.com
    </vendor></capability></device>""",
]


def test_usb_devices_of_a_remote_host_from_node_devices():
    """`virsh nodedev-dumpxml` of USB devices -> the sysfs reader's shape: bus and port from
    the device's path there, no root hubs, names from that host's usb.ids."""
    from vm_manager.passthrough.nodedev import usb_from_xml
    from vm_manager.passthrough.usb_attach import find_usb

    devices = usb_from_xml([xml.replace("\n    </path>", "</path>") for xml in USB_NODEDEVS])
    assert [(d.sysfs_name, d.vendor_id, d.product_id, d.devnum) for d in devices] == [
        ("1-4.2", "046d", "c52b", 7), ("3-1", "1050", "0407", 2)]
    assert devices[0].name == "Logitech, Inc. Unifying Receiver"
    assert find_usb("1050:0407", devices=devices).sysfs_name == "3-1"
    assert find_usb("1-4.2", devices=devices).product_id == "c52b"


def test_a_remote_hosts_uefi_firmware_comes_from_its_domain_capabilities():
    """Its firmware images are the ones its domain capabilities list (read by the one
    reader, base.domcaps), never this computer's descriptors."""
    from vm_manager.base.domcaps import read_domain_capabilities

    domcaps = ("<domainCapabilities><os><loader supported='yes'><value>/usr/share/OVMF/"
               "OVMF_CODE_4M.ms.fd</value><value>/usr/share/OVMF/OVMF_CODE_4M.fd</value>"
               "</loader></os></domainCapabilities>")
    assert read_domain_capabilities(domcaps).firmware == (
        "/usr/share/OVMF/OVMF_CODE_4M.ms.fd", "/usr/share/OVMF/OVMF_CODE_4M.fd")


def test_planning_refuses_what_needs_the_remote_hosts_own_files():
    """Pure planning on a remote host's facts: shared folders are refused with the field
    named (the facts hold no local file checks for them); an unattended setup is planned
    (its medium is built here and sent to that host)."""
    import dataclasses

    from vm_manager.base.errors import InvalidConfig
    from vm_manager.core.host_facts import HostFacts, PathFact
    from vm_manager.core.planning import plan_creation
    from vm_manager.base.vm_config import HostResources, VMConfig

    facts = HostFacts(uri=REMOTE, kvm_usable=True, hyperv_features=None,
                      resources=HostResources(memory_mb=32768, cpus=16),
                      libvirt_version=11_000_000, images_dir=Path("/var/lib/libvirt/images"),
                      paths={"/srv/base.qcow2": PathFact("file", format="qcow2"),
                             "/home/anna/key.pub": PathFact("file")}, remote=True)
    shared = VMConfig(name="s", vm_type="linux", network="none",
                      shares=[{"path": "/home/anna/Photos"}])
    with pytest.raises(InvalidConfig) as refused:
        plan_creation(shared, facts)
    assert refused.value.field == "shares" and "remote host" in str(refused.value)
    # a setup medium is built here (the ISOs read through libvirt) and sent into that
    # host's pool: planned, for Windows and for a cloud-init seed alike
    windows = VMConfig(name="w", vm_type="windows11", network="none", iso_path="/srv/w.iso",
                       virtio_iso_path="/srv/virtio.iso", unattended={"user": "anna"})
    plan = plan_creation(windows, dataclasses.replace(facts, paths={
        **facts.paths, "/srv/w.iso": PathFact("file", format="raw"),
        "/srv/virtio.iso": PathFact("file", format="raw")}))
    assert plan.setup.kind == "windows"
    assert plan.setup.medium == "/var/lib/libvirt/images/w-setup.iso"
    unattended = VMConfig(name="u", vm_type="linux", network="none",
                          cloud_image_path="/srv/base.qcow2", disk_size_gb=8,
                          unattended={"user": "dev", "ssh_key_path": "/home/anna/key.pub"})
    plan = plan_creation(unattended, facts)
    assert plan.setup.kind == "cloud-init"
    assert plan.setup.medium == "/var/lib/libvirt/images/u-setup.iso"
    assert plan.disk.backing == "/srv/base.qcow2" and plan.disk.backing_format == "qcow2"
    assert plan_creation(VMConfig(name="p", vm_type="linux", network="none"), facts)

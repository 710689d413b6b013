"""Issue 28: no other local account reaches a VM's screen, input or shared memory through
NeuronOS. Each test runs the attack as another user the test makes and removes
(support/attacker.py), on the real daemon with real QEMU where the attack needs one.

Failed on the code before the fix: QEMU's SPICE server listened on 127.0.0.1 with no
password (another user's login was answered "error 0"), and a shared memory file another
user made first stayed the one QEMU mapped.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import uuid
from pathlib import Path

import pytest

from support.attacker import is_root, local_user, run_as, spice_link, spice_login_as
from support.domains import domain_xml, remove_domain

ROOT = pytest.mark.skipif(not is_root(), reason="making users needs root")
BOOT_TIMEOUT = 120


def qemu_pid(name: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())


def listening_tcp(pid: int) -> list[int]:
    """The TCP ports the process listens on (its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture
def vm(system_daemon, tiny_guest, tmp_path):
    """vm(extra_devices) -> a defined domain of the tiny guest with the product's SPICE
    display; destroyed and undefined afterwards."""
    from vm_manager.base.connection import LibvirtConnection

    conn = LibvirtConnection(system_daemon).open()
    names = []

    def make(extra=lambda name: "") -> str:
        name = f"neuron-sec-{uuid.uuid4().hex[:8]}"
        xml = domain_xml(name, tiny_guest, tmp_path / f"{name}.log", spice=True)
        conn.execute(lambda c: c.defineXML(xml.replace("</devices>",
                                                       extra(name) + "</devices>")))
        names.append(name)
        return name

    make.connection = conn
    yield make
    for name in names:
        remove_domain(conn, name)
        Path(f"/dev/shm/looking-glass-{name}").unlink(missing_ok=True)
    conn.close()


@pytest.mark.daemon
@ROOT
def test_spice_has_no_port_and_only_the_desktop_user_reaches_it(vm, system_daemon):
    """The screen and input of a VM: no TCP port at all; the display's relay socket answers
    SPICE for the desktop user and refuses everyone else."""
    from vm_manager.core.vm_lifecycle import VMLifecycleManager
    from vm_manager.display.spice_relay import SpiceRelay
    from vm_manager.passthrough.ivshmem import user_credentials

    name = vm()
    conn = vm.connection
    lifecycle = VMLifecycleManager(conn)
    try:
        lifecycle.start(name, timeout=BOOT_TIMEOUT)
    finally:
        lifecycle.close()
    with local_user("ndesk") as desk, local_user("nevil") as evil:
        ports = listening_tcp(qemu_pid(name))
        # before the fix: QEMU listened on 127.0.0.1:59xx and this login was "error 0"
        assert ports == [], [spice_login_as(evil, f"127.0.0.1:{port}") for port in ports]
        # virt-viewer's way in (--attach): libvirt hands a read-write client a connection
        server = socket.socket(fileno=conn.execute(
            lambda c: c.lookupByName(name).openGraphicsFD(0, 0)))
        with server:
            assert spice_link(server) == 0  # QEMU's SPICE server answered the link
        who = user_credentials(desk)
        with SpiceRelay(name, lambda: conn.execute(
                lambda c: c.lookupByName(name).openGraphicsFD(0, 0)), (who.uid, who.gid)) as relay:
            assert stat.S_IMODE(relay.folder.stat().st_mode) == 0o700
            assert relay.folder.stat().st_uid == who.uid
            assert spice_login_as(desk, str(relay.path)) == "error 0"
            assert spice_login_as(evil, str(relay.path)) == "refused EACCES"
            for _ in range(2):  # one connection per SPICE channel: each gets its own
                assert spice_login_as(desk, str(relay.path)) == "error 0"
        assert not relay.path.exists() and not relay.folder.exists()


SQUAT = r"""
import mmap, os, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
os.fchmod(fd, 0o666)
os.ftruncate(fd, 32 * 1024 * 1024)
view = mmap.mmap(fd, 32 * 1024 * 1024)  # kept: what QEMU writes here, this user reads
print(os.fstat(fd).st_ino, flush=True)
sys.stdin.read()
"""

OPEN = r"""
import os, sys, errno
try:
    os.close(os.open(sys.argv[1], os.O_RDONLY)); print("opened")
except OSError as e:
    print("refused", errno.errorcode[e.errno])
"""


@pytest.mark.daemon
@ROOT
def test_a_squatted_shared_memory_file_is_made_anew_at_start(vm, system_daemon, monkeypatch):
    """Another user makes /dev/shm/looking-glass-NAME first (0666) and keeps it mapped: the
    start replaces it with the desktop user's own file (0600 + QEMU's ACL entry), QEMU maps
    that one, and the squatter can neither open it nor see into QEMU's."""
    from vm_manager.actions import power
    from vm_manager.actions.context import Context
    from vm_manager.base.access import GROUP_OBJ, OTHER, USER, read_acl
    from vm_manager.passthrough.ivshmem import (
        access_problem, qemu_account, shm_name, user_credentials,
    )
    from vm_manager.templates.loader import TemplateLoader

    name = vm(lambda name: TemplateLoader().render_fragment(
        "shmem", {"shm_name": shm_name(name), "size_mb": 32}))
    conn = vm.connection
    path = Path(f"/dev/shm/{shm_name(name)}")
    with local_user("ndesk") as desk, local_user("nevil") as evil:
        squatter = run_as(evil, SQUAT, str(path), background=True)
        try:
            squatted = int(squatter.stdout.readline())
            assert path.stat().st_uid == user_credentials(evil).uid
            monkeypatch.setenv("SUDO_USER", desk)  # the person at the desktop
            ctx = Context(connection=conn)
            try:
                power.start(ctx, power.StartRequest(name, timeout=BOOT_TIMEOUT))
            finally:
                ctx.close()
            info = path.stat()
            assert info.st_ino != squatted and info.st_uid == user_credentials(desk).uid
            maps = Path(f"/proc/{qemu_pid(name)}/maps").read_text()
            mapped = {int(line.split()[4]) for line in maps.splitlines() if str(path) in line}
            assert mapped == {info.st_ino}, (mapped, squatted)  # QEMU maps the new file
            acl = {(tag, ident): perm for tag, perm, ident in read_acl(path)}
            qemu_uid = user_credentials(qemu_account()).uid
            assert acl[(USER, qemu_uid)] == 6 and acl[(GROUP_OBJ, 0xFFFFFFFF)] == 0
            assert acl[(OTHER, 0xFFFFFFFF)] == 0
            assert run_as(evil, OPEN, str(path)).stdout.strip() == "refused EACCES"
            assert run_as(desk, OPEN, str(path)).stdout.strip() == "opened"
            assert access_problem(path, desk) is None  # the display's check: theirs
        finally:
            squatter.kill()
            squatter.wait()


@ROOT
def test_display_refuses_a_shared_memory_file_of_another_user(tmp_path):
    """Mode bits that let the desktop user in are not enough: a file another user owns is
    someone's way to the screen, and the display says so with the fix."""
    from vm_manager.passthrough.ivshmem import access_problem, user_credentials

    shm = tmp_path / "looking-glass-win"
    shm.write_bytes(b"")
    os.chmod(tmp_path, 0o755)
    with local_user("ndesk") as desk, local_user("nevil") as evil:
        os.chown(shm, user_credentials(evil).uid, user_credentials(evil).gid)
        os.chmod(shm, 0o666)
        problem = access_problem(shm, desk)
        assert problem and f"not user {desk}'s own" in problem
        assert "start it with neuron-vm" in problem
        os.chown(shm, user_credentials(desk).uid, user_credentials(desk).gid)
        os.chmod(shm, 0o600)
        assert access_problem(shm, desk) is None


@ROOT
def test_claim_replaces_whatever_was_there(tmp_path):
    """The file is made anew even when it is a symlink or has a second name, and never
    follows one (the claim's O_EXCL|O_NOFOLLOW)."""
    from vm_manager.passthrough.ivshmem import claim_shared_memory, user_credentials

    os.chmod(tmp_path, 0o1777)
    target = tmp_path / "victim"
    target.write_text("root's file")
    shm = tmp_path / "looking-glass-win"
    with local_user("ndesk") as desk:
        who = user_credentials(desk)
        shm.symlink_to(target)
        said = claim_shared_memory(shm, who, None)
        assert "the old one removed" in said and target.read_text() == "root's file"
        info = os.lstat(shm)
        assert stat.S_ISREG(info.st_mode) and info.st_uid == who.uid and info.st_nlink == 1
        assert stat.S_IMODE(info.st_mode) == 0o600
        os.link(shm, tmp_path / "second-name")  # a hard link someone kept
        claim_shared_memory(shm, who, None)
        assert os.lstat(shm).st_ino != os.lstat(tmp_path / "second-name").st_ino


@ROOT
def test_settings_written_by_another_user_are_refused(tmp_path):
    """A settings file planted by another user (here: a share of /home and a serial log in
    /etc) configures nothing; it is left where it is, and the error says why and the fix.
    A file or folder others may write is refused the same way."""
    from vm_manager.base.errors import StoreError
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.passthrough.ivshmem import user_credentials

    store = VMStore(tmp_path / "config")
    path = store.save(VMConfig(name="win"))
    assert store.load("win") is not None  # this user's own file
    with local_user("nevil") as evil:
        who = user_credentials(evil)
        os.chown(path, who.uid, who.gid)
        with pytest.raises(StoreError, match=f"belongs to uid {who.uid}, not to you"):
            store.load("win")
        assert path.exists()  # not ours to move aside
    os.chown(path, 0, 0)
    os.chmod(path, 0o666)
    with pytest.raises(StoreError, match="may be written by other users"):
        store.load("win")
    os.chmod(path, 0o600)
    os.chmod(path.parent, 0o777)  # anyone could swap the file
    with pytest.raises(StoreError, match="its folder may be written by other users"):
        store.load("win")
    os.chmod(path.parent, 0o700)
    assert store.load("win").name == "win"


@ROOT
def test_paths_are_checked_for_what_the_desktop_user_may_do(make_host, tmp_path, monkeypatch):
    """Run for another user (root under sudo), ``--disk /etc/shadow`` and ``--serial-log
    /etc/passwd`` were accepted and the guest's console was appended to /etc/passwd. Now
    every path is checked for what the desktop user could do with it (read an ISO, read
    and write a disk, write the serial log): exit 2 naming the flag and the reason, and
    nothing made. Their own files are fine."""
    import io
    import tempfile

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.cli import main
    from vm_manager.passthrough.ivshmem import user_credentials

    images = tmp_path / "images"
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    mine = Path(tempfile.mkdtemp(prefix="neuronos-sec-"))
    mine.chmod(0o755)
    rooms = mine / "roots.raw"  # root's, 0600, in a folder anyone may enter
    rooms.write_bytes(b"\0" * 65536)
    rooms.chmod(0o600)
    with local_user("ndesk") as desk, LibvirtConnection(make_host()) as conn:
        monkeypatch.setenv("SUDO_USER", desk)
        who = user_credentials(desk)
        os.chown(mine, who.uid, who.gid)

        def create(name, *extra):
            out, err = io.StringIO(), io.StringIO()
            code = main(["create", name, "--template", "linux", "--network", "none", *extra],
                        connection=conn, out=out, err=err)
            return code, err.getvalue()

        for flag, path, words in [("--disk", "/etc/shadow", "lies in /etc"),
                                  ("--serial-log", "/etc/passwd", "lies in /etc"),
                                  ("--iso", "/etc/shadow", "lies in /etc"),
                                  ("--disk", str(rooms), "cannot read and write"),
                                  ("--serial-log", "/root/new.log", "cannot write"),
                                  # as given, not resolved: /proc/self/fd/1 is any stdout
                                  ("--serial-log", "/proc/self/fd/1", "lies in /proc"),
                                  ("--serial-log", "/dev/stdout", "lies in /proc")]:
            code, err = create("x", flag, path)
            assert code == 2 and err.startswith(f"neuron-vm: {flag}") and words in err, err
            assert not images.exists() or not list(images.iterdir())
        assert Path("/etc/passwd").read_text().count("\n") > 1  # untouched
        log = mine / "console.log"  # a new file in a folder of theirs
        code, err = create("ok", "--serial-log", str(log))
        assert code == 0, err
    shutil.rmtree(mine)


@ROOT
def test_system_files_are_refused_to_root_too(make_host, tmp_path, monkeypatch):
    """A walk run as plain root (no sudo: root is the desktop user, every check of what the
    desktop user may do passes) had ``--disk /etc/shadow``, ``--iso /etc/shadow`` and
    ``--serial-log /etc/passwd`` accepted, and the guest's console appended to a file in
    /etc. Now the system's folders are refused whoever asks: nothing written there (a new
    log in /var/log excepted), nothing read there that only its owner and group may read;
    the images folder, world-readable system files and root's own files stay usable."""
    import io
    import uuid as uuids

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.cli import main

    images = tmp_path / "images"
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("USER", "root")
    libvirt_images = Path("/var/lib/libvirt/images")
    libvirt_images.mkdir(parents=True, exist_ok=True)
    theirs = libvirt_images / f"neuron-sec-{uuids.uuid4().hex[:8]}.raw"
    theirs.write_bytes(b"\0" * 65536)
    rooms = tmp_path / "root-owned.raw"  # root's own file, outside the system's folders
    rooms.write_bytes(b"\0" * 65536)
    rooms.chmod(0o600)
    try:
        with LibvirtConnection(make_host()) as conn:
            def create(*extra):
                out, err = io.StringIO(), io.StringIO()
                code = main(["create", "x", "--template", "linux", "--network", "none",
                             "--print-xml", *extra], connection=conn, out=out, err=err)
                return code, err.getvalue()

            for flag, path, words in [
                    ("--disk", "/etc/shadow", "lies in /etc, a folder of the system"),
                    ("--iso", "/etc/shadow", "only its owner and group may read it"),
                    ("--serial-log", "/etc/passwd", "a VM never writes there"),
                    ("--serial-log", "/etc/neuronos-new.log", "lies in /etc"),  # sudoers.d
                    ("--serial-log", "/usr/local/neuronos-new.log", "lies in /usr"),
                    ("--serial-log", "/var/log/dpkg.log", "lies in /var"),  # appending to it
                    ("--disk", "/var/lib/dpkg/status", "lies in /var")]:
                code, err = create(flag, path)
                assert code == 2 and err.startswith(f"neuron-vm: {flag}") and words in err, \
                    (flag, path, err)
            for extra in (["--iso", "/usr/share/common-licenses/GPL-3"],
                          ["--serial-log", "/var/cache/neuronos/demo-serial.log"],  # make demo
                          ["--serial-log", f"/var/log/neuronos-{uuids.uuid4().hex[:8]}.log"],
                          ["--disk", str(theirs)], ["--disk", str(rooms)]):
                code, err = create(*extra)
                assert code == 0, (extra, err)
        assert not images.exists() or not list(images.iterdir())
        assert Path("/etc/passwd").read_text().count("\n") > 1  # untouched
    finally:
        theirs.unlink()


def test_a_disk_another_vm_uses_is_refused(make_host, tmp_path, monkeypatch):
    """The walk made a second VM on the first's disk: accepted, and only QEMU's image lock
    stopped it at start (delete already knew: "also used by VM"). Now `create --disk` of
    another VM's disk, or of the image another VM's disk builds on, is exit 2 naming the
    VM; a free copy is fine."""
    import io
    import subprocess

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.cli import main

    images = tmp_path / "images"
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    base = tmp_path / "cloud.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"], check=True)
    free = tmp_path / "free.qcow2"
    shutil.copy(base, free)
    with LibvirtConnection(make_host()) as conn:
        def create(name, *extra):
            out, err = io.StringIO(), io.StringIO()
            code = main(["create", name, "--template", "linux", "--network", "none",
                         *extra], connection=conn, out=out, err=err)
            return code, err.getvalue()

        assert create("first", "--disk-size", "1")[0] == 0
        assert create("layered", "--cloud-image", str(base), "--disk-size", "2")[0] == 0
        for disk, owner in [(images / "first.qcow2", "first"), (base, "layered")]:
            code, err = create("second", "--disk", str(disk))
            assert code == 2 and err.startswith("neuron-vm: --disk") and \
                f"VM {owner!r} uses it" in err, err
        assert conn.execute(lambda c: sorted(d.name() for d in c.listAllDomains(0)),
                            idempotent=True).count("second") == 0
        assert create("second", "--disk", str(free))[0] == 0


@ROOT
def test_create_refuses_a_share_every_start_would_refuse(system_daemon, tmp_path,
                                                         monkeypatch):
    """As root, `create --share /usr` (or any folder root owns) was accepted, and every
    start then refused it: NeuronOS serves a shared folder as its owner, never as root.
    Now create refuses it with the same words (exit 2, nothing defined)."""
    import io
    import tempfile

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.cli import main

    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("USER", "root")
    folder = Path(tempfile.mkdtemp(prefix="neuronos-root-share-"))
    name = f"neuron-sec-{uuid.uuid4().hex[:8]}"
    conn = LibvirtConnection(system_daemon).open()
    try:
        for path in ("/usr", str(folder)):
            out, err = io.StringIO(), io.StringIO()
            code = main(["create", name, "--template", "linux", "--network", "none",
                         "--domain-type", "qemu", "--disk-size", "1", "--share", path],
                        connection=conn, out=out, err=err)
            assert code == 2 and err.getvalue().startswith("neuron-vm: --share") and \
                "it belongs to root" in err.getvalue(), err.getvalue()
            assert name not in conn.execute(lambda c: [d.name() for d in
                                                       c.listAllDomains(0)],
                                            idempotent=True)
    finally:
        remove_domain(conn, name)  # made only where the check failed
        conn.close()
        shutil.rmtree(folder)


@ROOT
def test_a_share_swapped_for_a_symlink_after_create_is_refused_at_start(
        make_host, tmp_path, monkeypatch):
    """The share was the desktop user's folder at `create`; its parent is then swapped for a
    symlink to a root-only folder holding a 0600 file. Before, the next start served that
    file to the guest (checked once, followed through symlinks). Now the start refuses,
    naming the share and where it leads, and the VM stays off."""
    import io
    import tempfile

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.cli import main
    from vm_manager.passthrough.ivshmem import user_credentials

    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    top = Path(tempfile.mkdtemp(prefix="neuronos-sec-"))
    top.chmod(0o755)
    secret = Path(tempfile.mkdtemp(prefix="neuronos-root-"))  # root's, 0700
    (secret / "docs").mkdir()
    (secret / "docs" / "shadow").write_text("root only\n")
    os.chmod(secret / "docs" / "shadow", 0o600)
    try:
        with local_user("ndesk") as desk, LibvirtConnection(make_host()) as conn:
            monkeypatch.setenv("SUDO_USER", desk)
            who = user_credentials(desk)
            parent = top / "work"
            (parent / "docs").mkdir(parents=True)
            for path in (parent, parent / "docs"):
                os.chown(path, who.uid, who.gid)

            def cli(*argv):
                out, err = io.StringIO(), io.StringIO()
                code = main(list(argv), connection=conn, out=out, err=err)
                return code, out.getvalue() + err.getvalue()

            code, text = cli("create", "lin", "--template", "linux", "--network", "none",
                             "--share", str(parent / "docs"))
            assert code == 0, text
            shutil.rmtree(parent)
            parent.symlink_to(secret)  # the same path now leads into root's folder
            code, text = cli("start", "lin")
            assert code == 1 and "its shared folder" in text and "through a symlink" in text
            assert str(secret / "docs") in text, text
            assert not conn.execute(lambda c: c.lookupByName("lin").isActive())
            parent.unlink()
            (parent / "docs").mkdir(parents=True)  # back, but root's own now
            code, text = cli("start", "lin")
            assert code == 1 and f"belongs to root, not to {desk}" in text, text
            for path in (parent, parent / "docs"):
                os.chown(path, who.uid, who.gid)
            code, text = cli("start", "lin")
            assert code == 0, text
    finally:
        shutil.rmtree(top)
        shutil.rmtree(secret)


@pytest.mark.parametrize("uri, allowed", [
    ("qemu+ssh://anna@box/system?command=/tmp/evil", False),  # runs that program
    ("qemu+ssh://anna@box/system?netcat=/tmp/evil", False),
    ("qemu+tls://box/system?no_verify=1", False),  # turns the certificate check off
    ("qemu+ssh://box/system?known_hosts_verify=ignore", False),
    ("qemu+ext:///system?command=/tmp/evil", False),
    ("qemu+ssh://box/system?surprise=1", False),  # unknown: not guessed at
    ("qemu+ssh://box/system?keyfile=/home/anna/.ssh/id_ed25519&no_tty=1", True),
    ("qemu:///system", True),
])
def test_connection_uris_that_run_programs_or_skip_checks_are_refused(uri, allowed):
    """Issue 28: "Add connection..." (and --connect) took ``?command=`` and ``?no_verify=1``.
    Now refused before libvirt sees them, exit 2 naming the parameter; the desktop app's
    field takes only what would open."""
    import io

    pytest.importorskip("PySide6")
    from vm_manager.base.primitives import uri_problem
    from vm_manager.cli import main
    from vm_manager.gui.connections import connection_uri

    assert (uri_problem(uri) is None) is allowed
    assert (connection_uri(uri) == uri) is allowed
    if not allowed:
        err = io.StringIO()
        assert main(["--connect", uri, "list"], out=io.StringIO(), err=err) == 2
        assert err.getvalue().startswith(f"neuron-vm: --connect: {uri}")


@ROOT
def test_the_root_helper_is_out_of_the_users_reach_and_takes_only_its_operations(
        root_helper, tmp_path):
    """Issue 28: the guided fixes ran the venv's neuron-vm (the user's own files) as root.
    The helper and its package copy are root's and nobody else may write them; it ignores
    PYTHONPATH (a planted vm_manager is never imported); it acts only for the user polkit
    asked about, only for its fixed operations with checked arguments."""
    import subprocess

    usr = root_helper.parents[2]  # ROOT/usr/libexec/neuronos/neuron-vm-helper
    copy = list((usr / "lib" / "neuronos").rglob("*"))
    assert any(path.name == "virtiofs_launcher.py" for path in copy)
    for path in [root_helper, usr / "sbin" / "neuronos-virtiofsd", *copy]:
        info = os.lstat(path)
        assert info.st_uid == 0 and not info.st_mode & 0o022, path
    planted = tmp_path / "evil" / "vm_manager"
    planted.mkdir(parents=True)
    marker = tmp_path / "owned"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    import pwd

    with local_user("nhelp") as person:  # the desktop user polkit asks about
        uid = str(pwd.getpwnam(person).pw_uid)

        def helper(*argv, uid=uid, **extra):
            env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "evil"),
                   "PKEXEC_UID": uid, **extra}
            return subprocess.run([str(root_helper), *argv], env=env, capture_output=True,
                                  text=True, timeout=60)

        for argv in ([], ["rm", "-rf", "/"], ["groups", "mallory"], ["shm-rule"],
                     ["shm-rule", "../../etc/shadow"], ["gpu-prepare", "01:00.0;reboot"],
                     ["gpu-unprepare", "now"]):
            result = helper(*argv)
            assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert "not a valid name" in helper("shm-rule", "../../etc/shadow").stderr
        assert helper("groups", uid="0").returncode != 0  # never for root itself
        assert "through pkexec" in helper("groups", uid="").stderr
        assert "through pkexec" in helper("groups", uid="", SUDO_UID="0").stderr
        # root itself, through sudo: for the user behind it
        result = helper("groups", uid="", SUDO_UID=uid)
        assert result.returncode == 0, result.stderr
        groups = subprocess.run(["id", "-nG", person], capture_output=True, text=True).stdout
        assert {"libvirt", "kvm"} <= set(groups.split()), groups
    assert not marker.exists()  # -I: the planted package was never imported


def test_a_vm_made_with_a_spice_port_loses_it_at_its_next_start(make_host):
    """VMs NeuronOS made before this change had SPICE on 127.0.0.1 with no password: their
    next start through NeuronOS takes the port away (said so); a VM made by hand is left as
    its owner made it."""
    import io

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.base.domain_xml import read_domain
    from vm_manager.cli import main

    def domain(name: str, ours: bool) -> str:
        metadata = ("<metadata><neuronos:vm xmlns:neuronos='https://neuronos.org/xmlns/vm/1.0'>"
                    "<neuronos:template>linux-basic</neuronos:template></neuronos:vm>"
                    "</metadata>") if ours else ""
        return (f"<domain type='test'><name>{name}</name>{metadata}<memory>65536</memory>"
                "<os><type>hvm</type></os><devices><graphics type='spice' autoport='yes'"
                " listen='127.0.0.1'><listen type='address' address='127.0.0.1'/>"
                "<image compression='off'/></graphics></devices></domain>")

    with LibvirtConnection(make_host()) as conn:
        for name, ours in (("old", True), ("handmade", False)):
            conn.execute(lambda c, xml=domain(name, ours): c.defineXML(xml))
            before = conn.execute(lambda c, n=name: c.lookupByName(n).XMLDesc(0))
            out, err = io.StringIO(), io.StringIO()
            assert main(["start", name], connection=conn, out=out, err=err) == 0, err.getvalue()
            xml = conn.execute(lambda c, n=name: c.lookupByName(n).XMLDesc(0))
            [spice] = read_domain(xml).graphics
            assert (spice.listen_type == "none") is ours, xml
            graphics = re.compile(r"<graphics.*?</graphics>", re.S)  # only that changed
            live = re.sub(r" id='\d+'", "", xml, count=1)  # the running domain's id
            assert graphics.sub("", live) == graphics.sub("", before)
            assert ("<image compression='off'/>" in xml) and (
                ("reached through libvirt only" in err.getvalue()) is ours), err.getvalue()


@ROOT
def test_root_writes_in_a_users_home_without_following_their_symlinks(tmp_path):
    """The Looking Glass log of a client run for a user (root, --user) lies in that user's
    home, where they may plant symlinks: root followed them (a log appended to any file).
    Now each folder is entered without following a symlink, and so is the file."""
    import errno

    from vm_manager.base.user_files import open_beneath

    home = tmp_path / "home"
    home.mkdir()
    victim = tmp_path / "shadow"
    victim.write_text("root only\n")
    owner = (65534, 65534)
    relative = Path(".local/state/neuronos/looking-glass/win.log")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    os.close(open_beneath(home, relative, flags, owner))  # made, folders and all
    log = home / relative
    assert log.stat().st_uid == 65534 and (home / ".local").stat().st_uid == 65534
    assert stat.S_IMODE((home / ".local").stat().st_mode) == 0o700
    log.unlink()
    log.symlink_to(victim)  # the file swapped for a symlink
    with pytest.raises(OSError) as caught:
        open_beneath(home, relative, flags, owner)
    assert caught.value.errno == errno.ELOOP
    shutil.rmtree(home / ".local" / "state")
    (home / ".local" / "state").symlink_to(tmp_path)  # a folder on the way
    with pytest.raises(OSError) as caught:
        open_beneath(home, relative, flags, owner)
    assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert victim.read_text() == "root only\n" and victim.stat().st_uid == 0
    assert not (tmp_path / "neuronos").exists()


def test_the_virtiofsd_launcher_reads_the_folder_libvirt_passes():
    """libvirt 9.0 runs ``--fd=N -o source=DIR,cache=...`` and doubles a comma in DIR."""
    from vm_manager.core.virtiofs_launcher import Refused, source_of

    assert source_of(["--fd=3", "-o", "source=/home/anna/My,,Files,cache=auto,xattr"]) == \
        "/home/anna/My,Files"
    assert source_of(["--fd=3", "-o", "xattr,source=/srv/a"]) == "/srv/a"
    assert source_of(["--socket-path=/s", "--shared-dir=/home/anna/x"]) == "/home/anna/x"
    with pytest.raises(Refused, match="no source folder"):
        source_of(["--fd=3", "-o", "cache=auto"])


@ROOT
def test_the_launcher_never_serves_root_or_a_path_through_a_symlink(tmp_path):
    """Run as libvirt runs it (root, virtiofsd's arguments): a folder root owns, and a
    folder reached through a symlink, are refused with the reason (exit 1, libvirt's log),
    before any virtiofsd runs."""
    import subprocess
    import sys

    from vm_manager.passthrough.ivshmem import user_credentials

    def launch(folder):
        return subprocess.run(
            [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
             " from vm_manager.core.virtiofs_launcher import main;"
             " sys.exit(main(sys.argv[2:]))", str(Path(__file__).parent.parent / "src"),
             "--fd=3", "-o", f"source={folder},cache=auto"],
            capture_output=True, text=True, timeout=60)

    mine = tmp_path / "root-owned"
    mine.mkdir()
    result = launch(mine)
    assert result.returncode == 1 and "belongs to root" in result.stderr, result.stderr
    with local_user("nvfs") as owner:
        who = user_credentials(owner)
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, who.uid, who.gid)
        link = tmp_path / "link"
        link.symlink_to(theirs)
        result = launch(link / ".")
        assert result.returncode == 1 and "without a symlink" in result.stderr, \
            result.stderr
        result = launch(tmp_path / "theirs" / ".." / "root-owned")
        assert result.returncode == 1 and "'..'" in result.stderr


@ROOT
def test_the_launchers_filter_makes_the_identity_switch_a_no_op():
    """virtiofsd switches to the guest caller's uid/gid before it makes a file; in the
    launcher's namespace only the owner is mapped, so that switch is made a no-op (the
    file is the owner's): setresuid/setresgid return 0 and change nothing, and every other
    call still runs."""
    import ctypes

    from vm_manager.core.virtiofs_launcher import _arch, seccomp_program

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            program = seccomp_program(_arch())
            filters = ctypes.create_string_buffer(program)
            import struct

            fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(filters))
            assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
            assert libc.prctl(22, 2, fprog, 0, 0) == 0  # PR_SET_SECCOMP, FILTER
            os.setresgid(-1, 4242, -1)
            os.setresuid(-1, 4242, -1)
            said = f"{os.geteuid()} {os.getegid()} {os.getpid() > 0}"
        except BaseException as error:  # noqa: BLE001
            said = f"error {error!r}"
        os.write(write_end, said.encode())
        os._exit(0)
    os.close(write_end)
    said = os.read(read_end, 200).decode()
    os.waitpid(child, 0)
    assert said == "0 0 True", said


@pytest.mark.daemon
@ROOT
def test_old_shares_get_the_launcher_and_a_folder_root_owns_is_refused_in_words(
        system_daemon, tmp_path, monkeypatch):
    """A VM NeuronOS made before its shares had the launcher (virtiofsd as root) gets it at
    its next start, said so; a share the launcher would refuse (a folder root owns) stops
    the start in words, not with QEMU's "Connection refused" after the fact."""
    from vm_manager.actions import boot
    from vm_manager.actions.context import Context
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.base.domain_xml import read_domain
    from vm_manager.base.errors import OperationFailed
    from vm_manager.base.store import VMStore
    from vm_manager.passthrough.ivshmem import user_credentials

    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("USER", "root")
    folder = tmp_path / "Shared"
    folder.mkdir()
    name = f"neuron-sec-{uuid.uuid4().hex[:8]}"
    xml = (f"<domain type='qemu'><name>{name}</name><metadata><neuronos:vm xmlns:neuronos="
           "'https://neuronos.org/xmlns/vm/1.0'><neuronos:template>linux-basic"
           "</neuronos:template></neuronos:vm></metadata><memory unit='MiB'>128</memory>"
           "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"
           "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>"
           "<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>"
           f"<source dir='{folder}'/><target dir='docs'/></filesystem></devices></domain>")
    conn = LibvirtConnection(system_daemon).open()
    ctx = Context(connection=conn, store=VMStore(tmp_path / "config"),
                  images_dir=tmp_path / "images")
    try:
        conn.execute(lambda c: c.defineXML(xml))
        with pytest.raises(OperationFailed, match="belongs to root, and NeuronOS serves"):
            boot.prepare(ctx, name)
        [share] = read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(0))) \
            .filesystems
        assert share.binary == "/usr/sbin/neuronos-virtiofsd" and share.source == \
            str(folder)
        with local_user("nvfs") as owner:
            who = user_credentials(owner)
            os.chown(folder, who.uid, who.gid)
            assert boot.prepare(ctx, name) == []  # the launcher is there already
    finally:
        remove_domain(conn, name)
        ctx.close()


def test_an_upload_folder_a_killed_neuronos_left_is_removed(tmp_path):
    """A setup medium (the account's password inside) is built in a private folder before
    it is sent to a remote host; a NeuronOS killed meanwhile (SIGKILL: nothing runs) left
    it there. The next upload removes the folders of processes that no longer run, and
    only those: a running process keeps its own."""
    import subprocess

    from vm_manager.core.storage import UPLOAD_PREFIX, sweep_uploads

    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid runs no more
    dead = tmp_path / f"{UPLOAD_PREFIX}{gone.pid}-k3j2"
    dead.mkdir(mode=0o700)
    (dead / "neuronos-setup.iso").write_text("the password\n")
    live = tmp_path / f"{UPLOAD_PREFIX}{os.getpid()}-a1b2"
    live.mkdir()
    odd = tmp_path / f"{UPLOAD_PREFIX}notapid-x"
    odd.mkdir()
    assert sweep_uploads(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and live.is_dir() and odd.is_dir()

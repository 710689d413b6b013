"""Setup stages that follow every way a VM is started, deadlines that end a stage that
never moves, and the words each command prints (issue 25). On libvirt's test driver; the
same on a real guest: tests/test_cloud_guest.py, tests/test_setup_e2e.py."""

from __future__ import annotations

import json
import time

import pytest

import test_guest_setup
from test_guest_setup import create_args, linux_args, run
from vm_manager.core import setup_stages
from vm_manager.core.setup_stages import cloud_init_result, deadline, late_note


# the fixtures of tests/test_guest_setup.py: the test driver's host, the media, a cloud image
world, isos, cloud = test_guest_setup.world, test_guest_setup.isos, test_guest_setup.cloud


def _app_start(world, name):
    """What the desktop app's Start does: ``actions.power.start``."""
    from vm_manager.actions import Context, power

    conn, store, _, _ = world
    ctx = Context(connection=conn, store=store)
    try:
        outcome = power.start(ctx, power.StartRequest(name))
        return 0, f"{name}: setup {outcome.setup.stage}", ""
    finally:
        ctx.close()


def _outside(world, name):
    """`virsh start`, with no NeuronOS watching; then the user asks where setup is."""
    world[0].execute(lambda c: c.lookupByName(name).create())
    return run(world, "setup-status", name)


START_PATHS = {
    "neuron-vm start": lambda world, name: run(world, "start", name),
    "the desktop app's Start": _app_start,
    "setup-restart --start": lambda world, name: run(world, "setup-restart", name, "--start"),
    "a start outside NeuronOS, then setup-status": _outside,
}


@pytest.mark.parametrize("kind", ["windows", "cloud-init"])
@pytest.mark.parametrize("how", sorted(START_PATHS))
def test_setup_follows_every_way_of_starting(world, isos, cloud, how, kind):
    conn, store, images, password = world
    if kind == "windows":
        name, argv = "w11", create_args(isos, password)
    else:
        base, key = cloud
        name, argv = "lin", linux_args(base, key)
    assert run(world, *argv)[0] == 0
    code, out, err = START_PATHS[how](world, name)
    assert code == 0, err
    data = json.loads(run(world, "setup-status", name, "--json")[1])
    stages = [step["stage"] for step in data["steps"]]
    assert data["stage"] == "installing" and stages[0] == "created", data
    assert stages[-1] == "installing" and stages.count("installing") == 1, stages
    note = data["steps"][-1]["note"]
    if how.startswith("a start outside"):
        assert "no NeuronOS was watching" in note
    else:
        assert note.startswith("the VM started" if kind == "windows" else "the VM started from"
                               " its cloud image")
        assert "(libvirt id " in note
    if how != "a start outside NeuronOS, then setup-status":
        assert "setup installing" in out and "next: start it" not in out, out
    words = "Windows is installing" if kind == "windows" else "cloud-init is setting"
    assert words in data["next"] and ("Windows" in data["next"]) == (kind == "windows")


@pytest.fixture
def daemon(system_daemon, tmp_path):
    """The real daemon (the test driver cannot detach devices), its images folder."""
    from test_reconfigure import World

    made = World(system_daemon, tmp_path)
    made.images.mkdir(parents=True, exist_ok=True)
    yield made
    made.close()


def test_a_stage_past_its_deadline_fails_and_the_seed_goes(daemon, monkeypatch):
    """Nobody followed it: `setup-status` finds the running VM's stage past its deadline
    (the clock moved on an hour), says so with where to look, and the seed is detached
    and deleted; `setup-restart` makes and attaches it again. (Met in real time, by a
    following `create --start`: tests/test_cloud_guest.py.)"""
    import subprocess
    import uuid

    name = f"neuron-late-{uuid.uuid4().hex[:6]}"
    daemon.names.append(name)
    blank = daemon.images / "blank.qcow2"  # boots nothing: the stage never moves
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "64M"], check=True)
    key = daemon.folder / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0example dev@laptop\n")
    code, _, err = daemon.run(monkeypatch, "create", name, "--template", "linux",
                              "--cloud-image", blank, "--unattended", "--user", "dev",
                              "--ssh-key", key, "--network", "none", "--domain-type", "qemu",
                              "--memory", "512M", "--stage-timeout", "30m")
    assert code == 0, err
    assert daemon.run(monkeypatch, "start", name)[0] == 0
    seed = daemon.images / f"{name}-setup.iso"
    assert seed.exists()
    assert daemon.run(monkeypatch, "setup-status", name)[1].startswith(f"{name}: installing")
    real = time.time
    monkeypatch.setattr(setup_stages.time, "time", lambda: real() + 3600)
    code, out, err = daemon.run(monkeypatch, "setup-status", name, "--json")
    monkeypatch.setattr(setup_stages.time, "time", real)
    assert code == 0, err
    data = json.loads(out)
    assert data["stage"] == "failed", data
    note = data["steps"][-1]["note"]
    assert "installing for longer than its deadline" in note and "30 min" in note
    assert f"neuron-vm console {name}" in note and "--secure-boot off" in note
    assert f"setup-restart {name} --force --start" in note and "setup-restart" in data["next"]
    assert not seed.exists()
    from vm_manager.base.domain_xml import read_domain

    # gone from the definition (a live unplug of a virtio disk waits for the guest's
    # consent, which firmware that booted nothing never gives: the file is deleted anyway)
    assert str(seed) not in [disk.source for disk in read_domain(daemon.xml(name)).disks]
    # setup-restart makes the seed again, attaches it again, and starts over
    code, out, err = daemon.run(monkeypatch, "setup-restart", name, "--force")
    assert code == 0, err
    assert "made the setup medium" in out and "attached it again" in out
    assert str(seed) in [disk.source for disk in read_domain(daemon.xml(name)).disks]
    assert seed.exists()
    assert json.loads(daemon.run(monkeypatch, "setup-status", name, "--json")[1])[
        "stage"] == "created"


@pytest.mark.parametrize("kind, stage, domain_type, seconds", [
    ("cloud-init", "installing", "kvm", 15 * 60),
    ("cloud-init", "installing", "qemu", 60 * 60),
    ("windows", "installing", "kvm", 3 * 3600),
    ("windows", "installing", "qemu", 24 * 3600),
    ("windows", "first-logon", "kvm", 3600),
    ("windows", "first-logon", "qemu", 8 * 3600),
    ("windows", "looking-glass", "kvm", 15 * 60),
    ("windows", "looking-glass", "qemu", 15 * 60),
    ("windows", "created", "kvm", None),  # not started: nothing to wait for
    ("windows", "ready", "kvm", None),
    ("cloud-init", "failed", "qemu", None),
])
def test_every_running_stage_has_a_deadline_per_os_and_domain_type(kind, stage, domain_type,
                                                                   seconds):
    assert deadline(kind, stage, domain_type) == seconds
    if seconds is not None:
        assert deadline(kind, stage, domain_type, override=90) == 90  # --stage-timeout


@pytest.mark.parametrize("kind, stage, words", [
    ("cloud-init", "installing", "--secure-boot off"),
    ("windows", "installing", "press any key"),
    ("windows", "first-logon", r"C:\ProgramData\NeuronOS\setup.log"),
    ("windows", "looking-glass", "dummy plug"),
])
def test_a_late_stage_says_what_may_be_wrong_and_where_to_look(kind, stage, words):
    note = late_note(kind, stage, 5400, "vm1", "/var/log/vm1.serial")
    assert words in note and "neuron-vm console vm1" in note and "90 min" in note
    assert "/var/log/vm1.serial" in note


@pytest.mark.parametrize("text, errors", [
    (None, None),  # no result.json yet: cloud-init runs
    ("", None),
    ("{not json", None),
    ('{"v1": {"datasource": "DataSourceNoCloud [seed=/dev/vdb]", "errors": []}}', []),
    ('{"v1": {"errors": ["(\'locale\', ProcessExecutionError(...))"]}}',
     ["('locale', ProcessExecutionError(...))"]),
])
def test_cloud_init_result_is_read_as_cloud_init_writes_it(text, errors):
    assert cloud_init_result(text) == errors


@pytest.mark.parametrize("argv, flag, words", [
    (("--stage-timeout", "soon"), "--stage-timeout", "not a time like 90s"),
    (("--stage-timeout", "10s"), "--stage-timeout", "30 s to 7 days"),
    (("--secure-boot", "maybe"), "--secure-boot", "invalid choice"),
])
def test_bad_stage_timeout_or_secure_boot_exits_2(world, cloud, argv, flag, words):
    base, key = cloud
    code, _, err = run(world, *linux_args(base, key, *argv))
    assert code == 2 and flag in err and words in err, err


def test_secure_boot_off_is_for_linux_only(world, isos, cloud):
    _, _, _, password = world
    code, _, err = run(world, *create_args(isos, password, "--secure-boot", "off"))
    assert code == 2 and "--secure-boot" in err and "only a Linux VM" in err, err
    base, key = cloud
    code, out, err = run(world, *linux_args(base, key, "--secure-boot", "off", "--print-xml"))
    assert code == 0, err
    assert "<feature enabled='no' name='secure-boot'/>" in out
    assert "<feature enabled='no' name='enrolled-keys'/>" in out
    code, out, _ = run(world, *linux_args(base, key, "--print-xml"))
    assert code == 0 and "<feature enabled='yes' name='secure-boot'/>" in out  # stated
    assert "<feature enabled='yes' name='enrolled-keys'/>" in out  # (issue 30)


def test_relative_paths_are_taken_from_the_current_folder(world, cloud, tmp_path,
                                                          monkeypatch):
    base, key = cloud
    monkeypatch.chdir(tmp_path)
    code, _, err = run(world, "create", "lin", "--template", "linux", "--cloud-image",
                       base.name, "--network", "none", "--unattended", "--user", "dev",
                       "--ssh-key", key.name)
    assert code == 0, err
    settings = json.loads(run(world, "info", "lin", "--json")[1])["settings"]
    assert settings["cloud_image_path"] == str(base)
    assert settings["unattended"]["ssh_key_path"] == str(key)


def test_delete_dry_run_of_a_running_vm_says_what_the_real_run_does(world, cloud):
    conn = world[0]
    base, key = cloud
    assert run(world, *linux_args(base, key))[0] == 0
    conn.execute(lambda c: c.lookupByName("lin").create())
    code, out, _ = run(world, "delete", "lin", "--dry-run")
    assert code == 0 and "refused: it is running; --force stops it first" in out, out
    code, real_out, err = run(world, "delete", "lin", "--yes")
    assert code == 1 and "'lin': it is running; stop it first, or give --force" in err
    code, out, _ = run(world, "delete", "lin", "--dry-run", "--force")
    assert "  stop it first (graceful, forced after the timeout)" in out


def test_setup_restart_can_give_a_longer_deadline(world, cloud):
    """A deadline set too short (`create --stage-timeout 30s`) is not for ever:
    `setup-restart --stage-timeout 2h` gives every stage the new one."""
    from vm_manager.base.domain_xml import read_domain

    conn = world[0]
    base, key = cloud
    assert run(world, *linux_args(base, key, "--stage-timeout", "30s"))[0] == 0
    code, _, err = run(world, "setup-restart", "lin", "--stage-timeout", "5s")
    assert code == 2 and "--stage-timeout" in err and "30 s to 7 days" in err, err
    code, out, err = run(world, "setup-restart", "lin", "--stage-timeout", "2h")
    assert code == 0 and "every stage may now take 2 h" in out, out + err
    setup = read_domain(conn.execute(lambda c: c.lookupByName("lin").XMLDesc(0))).setup
    assert setup.timeout_s == 7200 and setup.stage == "created"


def test_steps_another_process_took_are_each_told_in_order(world, isos):
    """Issue 27, item 13: a subscriber saw installing -> ready while the metadata recorded
    installing -> first-logon -> ready (another NeuronOS took two steps before this one's
    metadata event was handled). Every step is told, in order: one history, two views."""
    import threading

    from vm_manager.core.guest_setup import SetupTracker

    conn, _, _, password = world
    assert run(world, *create_args(isos, password))[0] == 0
    listener = SetupTracker(conn).start()  # follows events; another tracker writes
    seen, done = [], threading.Event()

    def told(change):
        seen.append((change.old, change.new))
        if change.new == "ready":
            done.set()

    listener.subscribe(told)
    writer = SetupTracker(conn)
    try:
        listener.status("w11")  # what it has read is its starting point
        setup, _ = writer.info("w11")
        setup = writer._advance("w11", setup, "installing", "started elsewhere")
        setup = writer._advance("w11", setup, "first-logon", "the agent answers")
        writer._advance("w11", setup, "ready", "done elsewhere")
        assert done.wait(10), seen
        steps = [stage for stage, _, _ in writer.info("w11")[0].steps]
        assert [new for _, new in seen] == steps[-len(seen):]
        assert ("installing", "first-logon") in seen and ("first-logon", "ready") in seen
    finally:
        listener.close()

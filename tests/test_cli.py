"""neuron-vm: output, JSON, exit codes and start-up weight."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from vm_manager.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main
from vm_manager.base.store import VMStore
from vm_manager.base.vm_config import VMConfig


def run(argv, connection=None):
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, connection=connection, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def run_process(*argv, env=None):
    """The real entry point in a child process, as a user runs it."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "vm_manager", *argv],
        capture_output=True, text=True, env=full_env, timeout=60,
    )


def test_list_json_default_test_driver():
    code, out, err = run(["--connect", "test:///default", "--json", "list"])
    assert code == EXIT_OK, err
    vms = json.loads(out)
    assert [vm["name"] for vm in vms] == ["test"]
    assert set(vms[0]) >= {"name", "uuid", "state", "vcpus", "memory_mb"}
    assert vms[0]["state"] == "running"


def test_list_json_after_the_command(three_vm_uri):
    code, out, _ = run(["list", "--json", "--connect", three_vm_uri])
    assert code == EXIT_OK
    vms = json.loads(out)
    assert [(vm["name"], vm["state"], vm["vcpus"], vm["memory_mb"]) for vm in vms] == [
        ("alpha", "running", 2, 2048), ("beta", "shutoff", 1, 1024), ("gamma", "paused", 4, 4096)
    ]


def test_list_table_shows_type_from_saved_settings(three_vm_uri):
    VMStore().save(VMConfig(name="beta", vm_type="windows10"))
    code, out, _ = run(["-c", three_vm_uri, "list"])
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "VCPUS", "MEMORY", "TYPE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "shut off" in rows["beta"] and "windows10" in rows["beta"]
    assert "2.0 GiB" in rows["alpha"] and rows["alpha"].rstrip().endswith("-")


def test_list_survives_a_corrupt_settings_file(three_vm_uri, isolated_env):
    store = VMStore()
    store.save(VMConfig(name="alpha"))
    store.vms_dir.joinpath("beta.json").write_text("{broken")
    code, out, err = run(["-c", three_vm_uri, "--json", "list"])
    assert code == EXIT_OK
    assert len(json.loads(out)) == 3
    assert "beta.json" in err and "unreadable" in err


def test_info_text_and_json(three_vm_uri):
    VMStore().save(VMConfig(name="gamma", vm_type="linux", memory_mb=4096))
    code, out, _ = run(["-c", three_vm_uri, "info", "gamma"])
    assert code == EXIT_OK
    assert "State:" in out and "paused" in out and "System:" in out and "Linux" in out
    assert out.startswith("System\n") and "\nFirmware\n" in out  # the details pane's sections
    code, out, _ = run(["-c", three_vm_uri, "info", "gamma", "--json"])
    details = json.loads(out)
    assert details["name"] == "gamma" and details["vcpus"] == 4
    assert details["settings"]["memory_mb"] == 4096 and details["vm_type"] == "linux"


def test_info_missing_vm_exits_3_with_one_line():
    code, out, err = run(["--connect", "test:///default", "info", "nope"])
    assert code == EXIT_NOT_FOUND == 3
    assert out == ""
    assert err.strip().count("\n") == 0 and "nope" in err


def test_bad_uri_exits_1_naming_the_uri():
    code, _, err = run(["--connect", "bogus:///nowhere", "list"])
    assert code == EXIT_FAILED == 1
    assert "bogus:///nowhere" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["info"], ["list", "--bogus"]])
def test_usage_errors_exit_2(argv):
    code, _, _ = run(argv)
    assert code == EXIT_USAGE


def test_help_and_version():
    code, out, _ = run(["--version"])
    assert code == EXIT_OK
    from vm_manager import __version__

    assert __version__ in out
    code, out, _ = run(["--help"])
    assert code == EXIT_OK and "info" in out and "Exit codes" in out


def test_uri_from_environment(monkeypatch, three_vm_uri):
    monkeypatch.setenv("NEURONOS_LIBVIRT_URI", three_vm_uri)
    code, out, _ = run(["--json", "list"])
    assert code == EXIT_OK and len(json.loads(out)) == 3


def test_real_process_exit_codes(three_vm_uri):
    ok = run_process("--connect", three_vm_uri, "--json", "list")
    assert ok.returncode == 0 and len(json.loads(ok.stdout)) == 3
    missing = run_process("--connect", three_vm_uri, "info", "nope")
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr
    verbose = run_process("-v", "--connect", three_vm_uri, "info", "nope")
    assert verbose.returncode == 3 and "Traceback" in verbose.stderr


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from vm_manager.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('PySide6', 'jinja2', 'lxml', 'libvirt') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY="
    assert "usage: neuron-vm" in result.stdout


def test_list_does_not_import_gui_or_templates(three_vm_uri):
    code = (
        "import sys, io\n"
        "from vm_manager.cli import main\n"
        f"main(['-c', {three_vm_uri!r}, 'list'], out=io.StringIO())\n"
        "print(','.join(m for m in ('PySide6', 'jinja2', 'lxml') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_spinner_only_on_a_terminal_and_only_after_a_second():
    import argparse
    import time

    from vm_manager.cli import _Context, _Spinner

    def context(err, json_mode=False):
        return _Context(argparse.Namespace(json=json_mode), None, io.StringIO(), err)

    terminal = FakeTerminal()
    with _Spinner(context(terminal), "Stopping win11"):
        time.sleep(1.4)
    shown = terminal.getvalue()
    assert "Stopping win11…" in shown and "s" in shown.split("…")[-1]
    assert shown.endswith("\r\033[K")  # the line is cleared afterwards

    quick = FakeTerminal()
    with _Spinner(context(quick), "Pausing x"):
        pass
    assert quick.getvalue() == ""  # under a second: nothing

    for err, json_mode in ((io.StringIO(), False), (FakeTerminal(), True)):
        with _Spinner(context(err, json_mode), "Stopping"):
            time.sleep(1.2)
        assert err.getvalue() == ""  # piped, or --json: never


@pytest.mark.parametrize("argv, opens_libvirt", [
    (["list"], True), (["info", "alpha"], True), (["gpu", "list"], False),
    (["templates", "list"], False), (["--help"], False),
])
def test_one_shot_commands_start_no_event_loop(three_vm_uri, argv, opens_libvirt):
    """No event loop thread, no keepalive: only the main thread is left, and libvirt is not
    even imported by the commands that do not need it."""
    code = (
        "import io, sys, threading\n"
        "from vm_manager.cli import main\n"
        "try:\n"
        f"    main(['-c', {three_vm_uri!r}, *{argv!r}], out=io.StringIO())\n"
        "except SystemExit:\n    pass\n"
        "imported = 'libvirt' in sys.modules\n"
        "from vm_manager.base import events  # (imports libvirt itself)\n"
        "print(threading.active_count(), events._loop_thread is None, imported)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True", str(opens_libvirt)]


def test_gpu_list_and_doctor_run_without_libvirt_python(tmp_path):
    """The device machine has Python with jinja2 and lxml but no libvirt: the sysfs
    commands must run there (doctor says what is missing)."""
    code = (
        "import io, json, sys\n"
        "sys.modules['libvirt'] = None  # import libvirt now raises ImportError\n"
        "from vm_manager.cli import main\n"
        "out = io.StringIO()\n"
        "assert main(['gpu', 'list', '--json'], out=out) == 0\n"
        "json.loads(out.getvalue())\n"
        "out = io.StringIO()\n"
        "code = main(['doctor', '--json'], out=out)\n"
        "checks = {c['name']: c for c in json.loads(out.getvalue())}\n"
        "print(code, checks['libvirtd']['status'], 'libvirt-python' in checks['libvirtd']['detail'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, NEURONOS_HOST_ROOT=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "fail", "True"]


@pytest.mark.parametrize("argv, exit_code", [
    (["info", "nope"], EXIT_NOT_FOUND),  # an error: {"error", "field", "exit"}
    (["snapshot", "revert", "beta", "s0", "--yes"], EXIT_USAGE),  # argparse's error
    (["snapshot", "revert", "beta", "s0"], EXIT_NOT_FOUND),  # no such snapshot
    (["snapshot", "delete", "beta", "s0"], EXIT_NOT_FOUND),
    (["shm-permissions", "beta"], EXIT_USAGE),  # beta has no Looking Glass
    (["templates", "show", "windows11-basic"], EXIT_OK),  # a template: {"message"}
    (["templates", "show", "nope"], None),
    (["create", "x", "--memory", "lots"], EXIT_USAGE),
    (["no-such-command"], EXIT_USAGE),  # argparse's own error
    (["start", "alpha"], None),
])
def test_json_stdout_is_one_json_document_whatever_happens(three_vm_uri, tmp_path,
                                                           monkeypatch, argv, exit_code):
    """Issue 27, item 8: with --json, stdout is one JSON document for every command,
    errors included (`snapshot revert`, `snapshot delete`, `shm-permissions` printed text,
    and every error left stdout empty); stderr keeps its one readable line."""
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    code, out, err = run(["--connect", three_vm_uri, "--json", *argv])
    if exit_code is not None:
        assert code == exit_code, err
    document = json.loads(out)  # exactly one document: json.loads refuses two
    if code:
        assert set(document) == {"error", "field", "exit"} and document["exit"] == code
        assert document["error"] and err.count("\n") >= 1
    else:
        assert isinstance(document, (dict, list))


ODD_NAMES = ["win 11 (gaming)", "ünïcødé-vm", "quote'n\"amp&"]  # virsh and virt-manager allow them


@pytest.mark.parametrize("name", ODD_NAMES)
def test_every_command_works_on_a_domain_whose_name_neuronos_would_not_give(
        make_host, tmp_path, monkeypatch, name):
    """Issue 27, item 10: `info "win 11 (gaming)"` was exit 2 "not a valid name" while
    `stop` worked: the naming rule is for new VMs only (settings exist only for names
    NeuronOS gives)."""
    from support.fakes import FakeDomain
    from vm_manager.base.primitives import VMState

    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    from vm_manager.base.connection import LibvirtConnection

    uri = make_host([FakeDomain(name, VMState.SHUTOFF, vcpus=1, memory_mb=256)])
    conn = LibvirtConnection(uri)  # the test driver keeps its state per connection
    for argv in (["info", name], ["--json", "info", name], ["start", name], ["pause", name],
                 ["resume", name], ["reboot", name], ["reset", name], ["snapshot", "list", name],
                 ["share", "list", name], ["stop", name, "--force"],
                 ["delete", name, "--dry-run"], ["delete", name, "--yes"]):
        code, out, err = run(argv, connection=conn)
        assert code == EXIT_OK, (argv, err)
        assert "not a valid name" not in err
    code, out, err = run(["--json", "list"], connection=conn)
    assert json.loads(out) == []  # deleted
    code, _, err = run(["create", name, "--template", "linux"], connection=conn)
    conn.close()
    assert code == EXIT_USAGE and "is not a valid name" in err  # new VMs keep the rule


@pytest.mark.parametrize("uri, words", [
    ("qemu+ssh://nosuchhost.invalid/system", "check that `ssh nosuchhost.invalid` works"),
    ("qemu+tcp://127.0.0.1:1/system", "its libvirtd listens for tcp connections"),
    ("http://example.invalid/", "libvirt has no http transport"),
])
def test_a_remote_host_that_cannot_be_reached_gets_a_remote_hint(uri, words):
    """Issue 27, item 11: ssh and http failures were told to start the local libvirtd."""
    code, _, err = run(["--connect", uri, "list"])
    assert code == EXIT_FAILED and words in err and "systemctl start libvirtd" not in err, err


def test_small_refusals_say_the_right_thing_and_make_nothing(tmp_path, monkeypatch):
    """Issue 27, item 11: an unknown template is 'not found' (3); a relative
    NEURONOS_IMAGES_DIR is exit 2 before a folder is made."""
    code, _, err = run(["--connect", "test:///default", "templates", "show", "nope"])
    assert code == EXIT_NOT_FOUND and "no template named 'nope'" in err
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", "relative/images")
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    code, _, err = run(["--connect", "test:///default", "create", "r1", "--template", "linux",
                        "--network", "none"])
    assert code == EXIT_USAGE and "NEURONOS_IMAGES_DIR: 'relative/images' is not an absolute" \
        in err, err
    assert not (tmp_path / "relative").exists()


def test_a_vm_created_on_the_test_driver_says_its_files_stay(tmp_path, monkeypatch):
    """Issue 27, item 11: `create --connect test:///...` left a real qcow2 (and a setup
    medium, settings) per run without a word: the VM vanishes with the connection."""
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    code, out, err = run(["--connect", "test:///default", "create", "t1", "--template",
                          "linux", "--network", "none", "--disk-size", "1G"])
    assert code == EXIT_OK, err
    assert "warning: libvirt's test driver keeps this VM only while this connection is open" \
        in out and str(tmp_path / "images") in out  # the plan's warnings
    assert (tmp_path / "images" / "t1.qcow2").exists()


def test_configure_moves_a_vm_to_another_network_with_the_same_mac(make_host, tmp_path,
                                                                   monkeypatch):
    """`configure --network` (issue 29 item 6, the Settings field's CLI twin): the NIC moves
    with its MAC; a network libvirt does not have is exit 2; `none` takes the NIC away."""
    import re

    from support.fakes import FakeHost  # noqa: F401 - make_host's fields
    from vm_manager.base.connection import LibvirtConnection

    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    with LibvirtConnection(make_host(networks=("default", "lan"))) as conn:
        def nics():
            xml = conn.execute(lambda c: c.lookupByName("m").XMLDesc(0))
            return re.findall(r"<mac address='([^']+)'/>\s*<source network='([^']+)'", xml)

        assert run(["create", "m", "--template", "linux", "--disk-size", "1"], conn)[0] == 0
        (mac, _), = nics()
        code, out, err = run(["configure", "m", "--network", "lan"], conn)
        assert code == 0 and nics() == [(mac, "lan")], (out, err)
        code, _, err = run(["configure", "m", "--network", "nowhere"], conn)
        assert code == 2 and "--network" in err and nics() == [(mac, "lan")]
        assert run(["configure", "m", "--network", "none"], conn)[0] == 0 and nics() == []


def test_the_systems_defaults_fit_a_small_host_as_the_wizard_fills_them(make_host, tmp_path,
                                                                        monkeypatch):
    """On a 2-CPU, 6 GiB host, `create --template windows11` with no --cpus or --memory is
    not refused for the Windows 11 default of 4 vCPUs (a walk): it gets 2, and 4 GiB (a
    quarter of the host left, never below Windows 11's minimum), what the wizard fills in."""
    import io
    import json

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.base.vm_config import HostResources, VMConfig
    from vm_manager.cli import main

    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    conn = LibvirtConnection(make_host(cpus=2, memory_mb=6144)).open()
    out, err = io.StringIO(), io.StringIO()
    code = main(["create", "w", "--template", "windows11", "--disk-size", "64G",
                 "--domain-type", "qemu", "--network", "none"], connection=conn, out=out,
                err=err)
    assert code == 0, err.getvalue()
    out = io.StringIO()
    main(["info", "w", "--json"], connection=conn, out=out, err=io.StringIO())
    info = json.loads(out.getvalue())
    assert (info["vcpus"], info["memory_mb"]) == (2, 4096)
    assert VMConfig.defaults_within("windows11", HostResources(6144, 2)) == (4096, 2)
    from vm_manager.base.vm_config import DEFAULTS, VMType

    big = DEFAULTS[VMType.LINUX]  # a big host gives the system's own defaults
    assert VMConfig.defaults_within("linux", HostResources(65536, 32)) == (big.memory_mb,
                                                                          big.vcpus)
    conn.close()


@pytest.mark.parametrize("argv, words", [
    (["events", "--count", "-1"], "--count: -1: give 1 or more state changes to wait for"),
    (["events", "--count", "0"], "--count: 0: give 1 or more"),
    (["start", "test", "--timeout", "0"], "--timeout: 0 seconds: give more than 0 and at most"
     " 86400 (a day)"),
    (["stop", "test", "--timeout", "90000"], "--timeout: 90000 seconds: give more than 0"),
])
def test_counts_and_timeouts_out_of_range_are_refused_in_plain_words(argv, words, capsys):
    """Walk: `events --count -1` waited for nothing and exited 0, and `--timeout 0` said
    "0 is outside 0-86400 seconds"."""
    code, out, err = run(["--connect", "test:///default", *argv])
    err += capsys.readouterr().err  # argparse writes to sys.stderr
    assert code == 2 and words in err, err

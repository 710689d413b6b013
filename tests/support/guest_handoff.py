"""Runs INSIDE the handoff guest (tests/support/handoff_guest.py), as root, with the
guest's own python3: installs the root helper from the test disk the way the set-up does
(scripts/install-helper.sh), then hands the guest's only display device over again and
again through the helper and systemd, the way a desktop user's ``start`` does, and writes
what the kernel, systemd and libvirt said before, during and after each run to
``result.json`` on the test disk (the test on the host asserts on it).

Runs: the VM stops on its own; a fault injected after each step (``--fail-after=N``); the
handoff's main process killed with SIGKILL between two steps (``--kill-after=N``) and while
the VM runs (only the unit's stop path is left to give back); the handoff ended (``handoff-end``: SIGTERM); a VM that fails to
start. Usage: python3 guest_handoff.py DISK_FOLDER
"""

import glob
import json
import os
import subprocess
import sys
import time

URI = "qemu:///system"
HELPER = "/usr/libexec/neuronos/neuron-vm-helper"
VM, BROKEN = "handoff-vm", "handoff-broken"
UNIT = f"neuronos-handoff-{VM}.service"
# the VM: no OS (nested TCG boots none in time), the GPU as its hostdev (QEMU opens it
# through vfio); managed='no': the handoff detaches it; BROKEN's disk does not exist
DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{disk}
<video><model type='none'/></video>
<memballoon model='none'/>
<hostdev mode='subsystem' type='pci' managed='no'><source>
<address domain='0x0000' bus='0x{bus}' slot='0x{slot}' function='0x{function}'/></source>
</hostdev></devices></domain>"""
STOP_TIMEOUT = "10"  # no OS answers the power button: forced off after 10 s


def sh(*argv, check=False, env=None):
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if check and done.returncode:
        raise RuntimeError(f"{argv}: {done.returncode} {done.stderr.strip()}")
    return done


def read(path, default=None):
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return default


def link_name(path):
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def gpu_address():
    for folder in sorted(glob.glob("/sys/bus/pci/devices/*")):
        if read(f"{folder}/boot_vga") == "1":
            return os.path.basename(folder)
    return None


def state(gpu):
    consoles = {os.path.basename(folder): [read(f"{folder}/name"), read(f"{folder}/bind")]
                for folder in sorted(glob.glob("/sys/class/vtconsole/vtcon*"))}
    return {
        "driver": link_name(f"/sys/bus/pci/devices/{gpu}/driver"),
        "iommu_group": link_name(f"/sys/bus/pci/devices/{gpu}/iommu_group"),
        "consoles": consoles,
        "framebuffers": {os.path.basename(d): link_name(f"{d}/driver") for d in
                         glob.glob("/sys/bus/platform/devices/*-framebuffer.*")},
        "fb0": os.path.exists("/dev/fb0"),
        "dm": sh("systemctl", "is-active", "fake-dm.service").stdout.strip(),
        "vm": sh("virsh", "-c", URI, "domstate", VM).stdout.strip(),
        "unit": sh("systemctl", "is-active", UNIT).stdout.strip(),
        "vfio": sorted(os.listdir("/dev/vfio")) if os.path.isdir("/dev/vfio") else [],
    }


def wait(what, test, timeout=240.0):
    """Until ``test()`` holds (sysfs, systemd and libvirt have no event one script can wait
    on together here); False after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if test():
            return True
        time.sleep(0.5)
    print(f"timed out waiting for {what}; the unit says:", flush=True)
    print(sh("systemctl", "status", "--no-pager", "-l", UNIT).stdout, flush=True)
    for pid in sh("systemctl", "show", "-p", "MainPID", "--value", UNIT).stdout.split():
        for task in glob.glob(f"/proc/{pid}/task/*"):
            print(task, read(f"{task}/wchan"), read(f"{task}/stack"), flush=True)
    print(sh("journalctl", "-b", "-u", UNIT, "-u", "libvirtd", "--no-pager", "-o", "cat",
             "-n", "40").stdout, flush=True)
    return False


def unit_gone():
    return sh("systemctl", "is-active", UNIT).stdout.strip() in ("inactive", "failed", "unknown")


def journal():
    text = read(f"/run/neuronos/handoff/{VM}.last") or read(f"/run/neuronos/handoff/{VM}.journal")
    return [json.loads(line) for line in (text or "").splitlines() if line.strip()]


def handoff(vm=VM, *extra):
    return sh(HELPER, "handoff", vm, f"--stop-timeout={STOP_TIMEOUT}", *extra)


def one_run(gpu, name, extra=(), during=None, end=None):
    """A handoff; ``end(record)`` ends it once the VM runs (when ``during``)."""
    print(f"== {name}", flush=True)
    sh("rm", "-f", f"/run/neuronos/handoff/{VM}.last")
    record = {"name": name}
    started = handoff(VM, *extra)
    record["handoff"] = [started.returncode, started.stdout.strip(), started.stderr.strip()]
    print(f"handoff: {record['handoff']}", flush=True)
    if during and started.returncode == 0:
        record["running"] = wait("the VM running", lambda: state(gpu)["vm"] == "running")
        record["during"] = state(gpu)
        record["end"] = end(record) if end else None
    record["gone"] = wait("the handoff's unit to end", unit_gone)
    record["after"] = state(gpu)
    record["journal"] = journal()
    record["unit_log"] = sh("journalctl", "-b", "-u", UNIT, "--no-pager", "-o", "cat",
                            "-n", "60").stdout.splitlines()[-60:]
    sh("journalctl", "--rotate")
    sh("journalctl", "--vacuum-time=1s")
    print(json.dumps({k: record[k] for k in ("name", "after")}), flush=True)
    return record


def main(folder):
    result = {"started": time.time()}
    try:
        run_all(folder, result)
    except Exception:  # noqa: BLE001 - written down for the host's test to show
        import traceback

        result["error"] = traceback.format_exc()
        print(result["error"], flush=True)
    result["ended"] = time.time()
    with open(os.path.join(folder, "result.json"), "w") as file:
        json.dump(result, file, indent=1)
    print("HANDOFF-RESULT-WRITTEN", flush=True)


def run_all(folder, result):
    os.chdir(folder)
    install = sh("bash", "scripts/install-helper.sh", "/")
    result["install"] = [install.returncode, install.stderr.strip()[-2000:]]
    sh("udevadm", "settle")
    result["lspci"] = sh("lspci", "-nnk").stdout
    result["cmdline"] = read("/proc/cmdline")
    result["dmesg"] = [line for line in sh("dmesg").stdout.splitlines()
                       if any(word in line for word in ("DMAR", "efifb", "fbcon", "vgaarb",
                                                        "vfio", "Console:"))]
    gpu = result["gpu"] = gpu_address()
    if gpu is None:
        raise RuntimeError("no PCI device reads boot_vga 1")
    result["before"] = state(gpu)
    result["libvirtd"] = sh("journalctl", "-b", "-u", "libvirtd", "-u", "virtlogd",
                            "--no-pager", "-o", "cat").stdout.splitlines()[-40:]
    bus, slot, function = gpu.split(":")[1], *gpu.split(":")[2].split(".")
    missing = ("<disk type='file' device='disk'><source file='/nonexistent.img'/>"
               "<target dev='vda' bus='virtio'/></disk>")
    for name, disk in ((VM, ""), (BROKEN, missing)):
        with open(f"/tmp/{name}.xml", "w") as file:
            file.write(DOMAIN.format(name=name, disk=disk, bus=bus, slot=slot,
                                     function=function))
    result["define"] = [sh("virsh", "-c", URI, "define", path).stderr.strip()
                        for path in (f"/tmp/{VM}.xml", f"/tmp/{BROKEN}.xml")]
    print(f"defined: {result['define']}", flush=True)
    runs = result["runs"] = []
    # the VM ends on its own: QEMU quits, as after a guest's power-off (libvirt: STOPPED)
    quit_ = ["virsh", "-c", URI, "qemu-monitor-command", VM, '{"execute":"quit"}']
    runs.append(one_run(gpu, "the VM stops", during=True,
                        end=lambda r: sh(*quit_).returncode))
    steps = len(runs[0]["journal"][0].get("steps", [])) if runs[0]["journal"] else 0
    result["steps"] = steps
    for number in range(1, steps + 1):
        runs.append(one_run(gpu, f"fault after step {number}", (f"--fail-after={number}",)))
    for number in (2, 3):  # between the steps: after the console, after the detach
        runs.append(one_run(gpu, f"killed after step {number}", (f"--kill-after={number}",)))
    runs.append(one_run(gpu, "main process killed", during=True, end=lambda r: sh(
        "systemctl", "kill", "--signal=SIGKILL", "--kill-who=main", UNIT).returncode))
    runs.append(one_run(gpu, "handoff ended", during=True, end=lambda r: sh(
        HELPER, "handoff-end", VM).stdout.strip()))
    print("== a VM that cannot start", flush=True)
    broken = handoff(BROKEN)
    wait("the broken VM's handoff to end", lambda: sh(
        "systemctl", "is-active", f"neuronos-handoff-{BROKEN}.service").stdout.strip()
        in ("inactive", "failed", "unknown"))
    last = read(f"/run/neuronos/handoff/{BROKEN}.last") or ""
    result["broken"] = {"handoff": [broken.returncode, broken.stderr.strip()],
                        "after": state(gpu),
                        "journal": [json.loads(line) for line in last.splitlines() if line]}


if __name__ == "__main__":
    main(sys.argv[1])

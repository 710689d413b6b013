"""CPU topology and pinning planned from the host (issue 31): the sysfs reader on trees shaped
like the kernel's (tests/support/cpu_trees.py) and on this machine's real /sys, read only;
the pure plan of each shape as a table."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from support.cpu_trees import SHAPES, build
from vm_manager.core.cpu_plan import plan_cpus, topology_only
from vm_manager.passthrough.cpu_topology import (device_numa_node, format_cpulist,
                                                  parse_cpulist, read_cpu_topology)


def host(tmp_path, shape):
    return read_cpu_topology(build(tmp_path / shape, SHAPES[shape]))


@pytest.mark.parametrize("shape, described", [
    ("i9-13900k", "24 cores: 8 P-cores, 16 E-cores, 32 CPUs (SMT), 1 L3 cache (36 MiB),"
                  " 1 NUMA node"),
    ("7950x3d", "16 cores, 32 CPUs (SMT), 2 L3 caches (96 MiB, 32 MiB), 1 NUMA node"),
    ("5800x", "8 cores, 16 CPUs (SMT), 1 L3 cache (32 MiB), 1 NUMA node"),
    ("threadripper", "16 cores, 32 CPUs (SMT), 4 L3 caches (4 x 8 MiB), 2 NUMA nodes"),
    ("laptop", "4 cores, 4 CPUs, 1 L3 cache (6 MiB), 1 NUMA node"),
    ("cloud", "1 core, 2 CPUs (SMT), 1 L3 cache (36608 KiB), 1 NUMA node"),
])
def test_each_shape_reads_as_the_part_it_is(tmp_path, shape, described):
    topology = host(tmp_path, shape)
    assert topology.describe() == described


def test_the_tree_gives_cores_caches_nodes_and_the_gpus_node(tmp_path):
    topology = host(tmp_path, "threadripper")
    assert topology.cores[0].cpus == (0, 16) and topology.cores[8].node == 1
    assert [format_cpulist(l3.cpus) for l3 in topology.l3] == [
        "0-3,16-19", "4-7,20-23", "8-11,24-27", "12-15,28-31"]
    assert device_numa_node("0000:41:00.0", tmp_path / "threadripper") == 1
    assert device_numa_node("0000:01:00.0", build(tmp_path / "x", SHAPES["5800x"])) is None
    assert device_numa_node("0000:99:00.0", tmp_path / "x") is None  # no such device
    assert read_cpu_topology(tmp_path / "empty") is None


def _pins(text: str) -> tuple[tuple[int, int], ...]:
    """``"0-1:2-3"`` -> the vCPUs in order onto those host CPUs."""
    cpus = [int(cpu) for cpu in text.split(",")]
    return tuple(enumerate(cpus))


# shape, vCPUs, GPU node -> (cores, threads, host CPUs in vCPU order, emulator CPUs, NUMA
# node) or the problem's words
PLANS = [
    ("i9-13900k", 8, None, (4, 2, "2,3,4,5,6,7,8,9", "0-1,10-31", None)),
    ("i9-13900k", 16, None, "need 8 whole cores of one L3 cache beside the host's first core;"
                            " this host has at most 7 (ask for at most 14 vCPUs)"),
    ("7950x3d", 8, None, (4, 2, "1,17,2,18,3,19,4,20", "0,5-16,21-31", None)),
    ("7950x3d", 16, None, (8, 2, "8,24,9,25,10,26,11,27,12,28,13,29,14,30,15,31",
                           "0-7,16-23", None)),
    ("5800x", 8, None, (4, 2, "1,9,2,10,3,11,4,12", "0,5-8,13-15", None)),
    ("5800x", 14, None, (7, 2, "1,9,2,10,3,11,4,12,5,13,6,14,7,15", "0,8", None)),
    ("5800x", 16, None, "ask for at most 14 vCPUs"),
    ("5800x", 5, None, "5 vCPUs are not whole cores of 2 threads: ask for 4 or 6"),
    ("threadripper", 8, 1, (4, 2, "8,24,9,25,10,26,11,27", "0-7,12-23,28-31", 1)),
    ("threadripper", 8, 0, (4, 2, "4,20,5,21,6,22,7,23", "0-3,8-19,24-31", 0)),
    ("threadripper", 8, None, (4, 2, "4,20,5,21,6,22,7,23", "0-3,8-19,24-31", 0)),
    ("laptop", 2, None, (2, 1, "1,2", "0,3", None)),
    ("laptop", 4, None, "this host has at most 3 (ask for at most 3 vCPUs)"),
    ("cloud", 2, None, "this host has 1 core: nothing is left to pin beside the first"),
]


@pytest.mark.parametrize("shape, vcpus, gpu_node, expected", PLANS)
def test_the_plan_of_each_host(tmp_path, shape, vcpus, gpu_node, expected):
    plan = plan_cpus(host(tmp_path, shape), vcpus, gpu_node)
    if isinstance(expected, str):
        assert not plan.pinned and expected in plan.problem, plan.problem
        assert (plan.cores, plan.threads) == (vcpus, 1)  # the topology all the same
        return
    cores, threads, pinned, emulator, node = expected
    assert (plan.cores, plan.threads) == (cores, threads)
    assert plan.pins == _pins(pinned)
    assert plan.emulator_cpus == emulator and plan.node == node
    assert plan.problem is None and plan.reasons
    used = {cpu for _, cpu in plan.pins}
    assert not used & set(plan.emulator) and 0 not in used  # the host keeps its first core


def test_the_reasons_name_the_choices(tmp_path):
    x3d = plan_cpus(host(tmp_path, "7950x3d"), 8)
    assert any("one L3 cache of 96 MiB (the larger one)" in why for why in x3d.reasons)
    intel = plan_cpus(host(tmp_path, "i9-13900k"), 8)
    assert any("P-cores only" in why for why in intel.reasons)
    numa = plan_cpus(host(tmp_path, "threadripper"), 8, gpu_node=1)
    assert "why: NUMA node 1: the GPU's" in numa.describe()
    assert "memory: NUMA node 1" in numa.describe()


def test_windows_11_pro_with_4_vcpus_gets_one_socket():
    """Windows 11 Pro uses at most 2 sockets (Home 1): 4 vCPUs are 4 cores of one socket."""
    plan = topology_only(4)
    assert plan.to_dict() == {"vcpus": 4, "sockets": 1, "dies": 1, "cores": 4,
                                   "threads": 1, "pins": [], "emulator": None, "node": None,
                                   "reasons": [], "problem": None}


@pytest.mark.parametrize("text, cpus", [("0-3,8,10-11", {0, 1, 2, 3, 8, 10, 11}), ("5", {5}),
                                        ("", set()), ("0-1\n", {0, 1})])
def test_cpulists_both_ways(text, cpus):
    assert parse_cpulist(text) == cpus
    if cpus:
        assert parse_cpulist(format_cpulist(cpus)) == cpus


def test_on_this_machines_real_sys_read_only():
    topology = read_cpu_topology("/")
    if topology is None:
        pytest.skip("this machine has no /sys CPU topology")
    import os

    assert topology.cpus == os.cpu_count()  # every online CPU in one core or another
    plan = plan_cpus(topology, 2)
    print(topology.describe(), plan.describe())
    assert plan.cores * plan.threads == 2


# --- the faces: create pins a GPU VM, tune shows and applies, configure fixes older VMs -----

@pytest.fixture
def gpu_host(tmp_path, make_host, monkeypatch):
    """The test driver, and a host root with an NVIDIA card at 01:00.0 on an i9-13900K."""
    from support.fakes import add_pci_devices, nvidia_turing_gpu
    from vm_manager.base.connection import LibvirtConnection

    root = add_pci_devices(tmp_path / "host", nvidia_turing_gpu())
    build(root, SHAPES["i9-13900k"])
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    conn = LibvirtConnection(make_host(cpus=32, memory_mb=65536)).open()
    yield conn
    conn.close()


def run(conn, *argv):
    import io

    from vm_manager.cli import main

    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), connection=conn, out=out, err=err), out.getvalue(), err.getvalue()


def cpu_of(conn, name):
    from vm_manager.base.domain_xml import read_domain

    return read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(0))).cpu


def disk_threads(conn, name: str) -> dict:
    """Each disk's target and the I/O thread its driver names (None: none)."""
    root = etree.fromstring(conn.execute(lambda c: c.lookupByName(name).XMLDesc(2)).encode())
    assert (root.find("iothreads") is not None) == bool(root.findall("cputune/iothreadpin"))
    return {disk.find("target").get("dev"): disk.find("driver").get("iothread")
            for disk in root.iterfind("devices/disk[@device='disk']")}


def test_create_pins_a_gpu_vm_and_tune_says_why(gpu_host):
    conn = gpu_host
    code, out, err = run(conn, "create", "g", "--template", "linux", "--gpu", "01:00.0",
                         "--cpus", "8", "--memory", "4G", "--disk-size", "8G",
                         "--domain-type", "qemu", "--network", "none")
    assert code == 0, err
    assert "CPU: vCPUs on host CPUs 2-9, QEMU's own threads on 0-1,10-31" in out
    cpu = cpu_of(conn, "g")
    assert cpu.topology == (1, 1, 4, 2)
    assert cpu.pins == tuple((vcpu, str(vcpu + 2)) for vcpu in range(8))
    assert cpu.emulator == "0-1,10-31" and cpu.memory_nodes is None
    # disk I/O on an I/O thread of its own, pinned beside QEMU's own threads
    assert cpu.io_threads == "0-1,10-31"
    assert disk_threads(conn, "g") == {"vda": "1"}
    code, out, _ = run(conn, "tune", "g")
    assert code == 0 and "24 cores: 8 P-cores, 16 E-cores" in out
    assert "P-cores only" in out and "g: its definition holds this plan" in out
    code, out, _ = run(conn, "tune", "g", "--json")
    assert code == 0 and '"current": true' in out
    code, out, _ = run(conn, "info", "g")
    assert "1 socket, 4 cores x 2 threads; on host CPUs 2-9 (QEMU's own threads on" \
        " 0-1,10-31, disk I/O too)" in out, out


def test_no_tune_leaves_the_topology_and_tune_apply_pins(gpu_host):
    conn = gpu_host
    code, _, err = run(conn, "create", "n", "--template", "linux", "--gpu", "01:00.0",
                       "--no-tune", "--cpus", "4", "--memory", "4G", "--disk-size", "8G",
                       "--domain-type", "qemu", "--network", "none")
    assert code == 0, err
    assert cpu_of(conn, "n").topology == (1, 1, 4, 1) and cpu_of(conn, "n").pins == ()
    code, out, _ = run(conn, "tune", "n")
    assert "(not pinned now: you turned the pinning off; it has the topology alone)" in out
    assert "n: its definition holds the topology; `neuron-vm tune n --apply` pins it" in out
    assert cpu_of(conn, "n").pins == ()  # nothing without --apply
    code, out, err = run(conn, "tune", "n", "--apply")
    assert code == 0, err
    assert "changed:" in out and "its definition holds this plan" in out
    assert cpu_of(conn, "n").topology == (1, 1, 2, 2)
    assert [cpu for _, cpu in cpu_of(conn, "n").pins] == ["2", "3", "4", "5"]
    assert disk_threads(conn, "n") == {"vda": "1"}  # the disk follows onto the I/O thread
    code, _, err = run(conn, "configure", "n", "--no-tune")
    assert code == 0, err
    assert cpu_of(conn, "n").topology == (1, 1, 4, 1) and cpu_of(conn, "n").pins == ()
    assert disk_threads(conn, "n") == {"vda": None}  # libvirt refuses a disk on no thread
    assert cpu_of(conn, "n").io_threads is None
    code, _, err = run(conn, "create", "plain", "--template", "linux", "--cpus", "2",
                       "--memory", "1G", "--disk-size", "8G", "--domain-type", "qemu",
                       "--network", "none")  # no GPU: not pinned unasked
    assert code == 0, err
    code, out, _ = run(conn, "tune", "plain")
    assert "only GPU VMs are unasked" in out and cpu_of(conn, "plain").pins == ()
    code, out, err = run(conn, "tune", "plain", "--apply")  # its topology already matched
    assert code == 0 and "plain: its definition holds this plan" in out, out + err
    assert [cpu for _, cpu in cpu_of(conn, "plain").pins] == ["2", "3"]
    code, _, err = run(conn, "create", "p", "--template", "linux", "--tune", "--cpus", "2",
                       "--memory", "1G", "--disk-size", "8G", "--domain-type", "qemu",
                       "--network", "none")  # any VM may be pinned when asked
    assert code == 0, err
    assert cpu_of(conn, "p").topology == (1, 1, 1, 2) and len(cpu_of(conn, "p").pins) == 2
    assert run(conn, "create", "q", "--template", "linux", "--tune", "--no-tune")[0] == 2


def test_configure_gives_an_older_vm_its_topology(gpu_host):
    """A VM defined before topologies (each vCPU a socket): any configure adds the one
    socket, and changes nothing else it was not asked."""
    conn = gpu_host
    code, _, err = run(conn, "create", "old", "--template", "windows11", "--cpus", "4",
                       "--memory", "4G", "--disk-size", "64G", "--domain-type", "qemu",
                       "--network", "none")
    assert code == 0, err
    xml = conn.execute(lambda c: c.lookupByName("old").XMLDesc(2))
    import re

    older = re.sub(r"<cpu mode='maximum'>\s*<topology[^>]*/>\s*</cpu>",
                   "<cpu mode='maximum'/>", xml)
    assert older != xml
    conn.execute(lambda c: c.defineXML(older))
    assert cpu_of(conn, "old").topology is None
    code, out, err = run(conn, "configure", "old", "--memory", "5G")
    assert code == 0, err
    assert cpu_of(conn, "old").topology == (1, 1, 4, 1)  # Windows 11 Pro sees 4 CPUs


@pytest.mark.daemon
def test_on_the_real_daemon_a_running_guest_runs_where_the_plan_says(system_daemon, tiny_guest,
                                                                     tmp_path, monkeypatch):
    """`create --tune` of the tiny guest (TCG) on qemu:///system, started: `virsh vcpupin`,
    `virsh emulatorpin` and the live XML show the plan this host's /sys gives (where this
    machine has no core beside the first to pin to, a 2-core tree of its own CPUs 0-1
    stands in for its /sys)."""
    import subprocess
    import sys
    import uuid

    from vm_manager.base.domain_xml import read_domain

    topology = read_cpu_topology("/")
    plan = plan_cpus(topology, 1)
    if not plan.pinned:
        from support.cpu_trees import Shape

        root = build(tmp_path / "host", Shape("2 cores", ((0,), (1,)), (("0-1", "6144K"),)))
        monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
        plan = plan_cpus(read_cpu_topology(root), 1)
    assert plan.pinned
    name = f"neuron-pin-{uuid.uuid4().hex[:6]}"
    env = {**__import__("os").environ, "NEURONOS_CONFIG_DIR": str(tmp_path / "config")}

    def neuron_vm(*argv):
        return subprocess.run([sys.executable, "-m", "vm_manager", *argv, "-c", system_daemon],
                              capture_output=True, text=True, timeout=300, env=env)

    def virsh(*argv):
        return subprocess.run(["virsh", "-q", "-c", system_daemon, *argv], capture_output=True,
                              text=True, timeout=60).stdout

    try:
        made = neuron_vm("create", name, "--template", "linux", "--kernel",
                         str(tiny_guest.kernel), "--initrd", str(tiny_guest.initrd),
                         "--cmdline", "console=ttyS0 quiet panic=-1", "--disk-size", "1G",
                         "--memory", "512M", "--cpus", "1", "--tune", "--domain-type", "qemu",
                         "--network", "none", "--start")
        assert made.returncode == 0, made.stdout + made.stderr
        live = read_domain(virsh("dumpxml", name)).cpu
        assert live.topology == (1, 1, plan.cores, plan.threads)
        assert live.pins == tuple((vcpu, str(cpu)) for vcpu, cpu in plan.pins)
        assert live.emulator == plan.emulator_cpus == live.io_threads
        pinned = virsh("vcpupin", name).split()
        assert pinned == ["0", str(plan.pins[0][1])], pinned
        assert virsh("emulatorpin", name).split()[-1] == plan.emulator_cpus
        # QEMU's I/O thread runs there too, and the disk is on it
        assert virsh("iothreadinfo", name).split() == ["1", plan.emulator_cpus]
        root = etree.fromstring(virsh("dumpxml", name).encode())
        assert root.find("devices/disk/driver").get("iothread") == "1"
        # unpinned on the real QEMU driver (which refuses a disk on a thread that is gone)
        assert neuron_vm("stop", name, "--force").returncode == 0
        unpinned = neuron_vm("configure", name, "--no-tune")
        assert unpinned.returncode == 0, unpinned.stdout + unpinned.stderr
        root = etree.fromstring(virsh("dumpxml", "--inactive", name).encode())
        assert root.find("iothreads") is None and root.find("cputune") is None
        assert root.find("devices/disk/driver").get("iothread") is None
        print(f"{topology.describe() if topology else 'no /sys'}: {plan.describe()}")
    finally:  # its 1G disk too: a kept disk was left in /var/lib/libvirt/images by every run
        neuron_vm("delete", name, "--force", "--yes", "--delete-disks")


# --- huge pages ------------------------------------------------------------------------------

LINUX_1G = ("create", "h", "--template", "linux", "--memory", "1G", "--cpus", "2",
            "--disk-size", "8G", "--domain-type", "qemu", "--network", "none")


@pytest.mark.parametrize("pools, flag, code, words", [
    ({2048: (512, 512), 1048576: (0, 0)}, "2M", 0, None),
    ({2048: (100, 100)}, "2M", 0, "the VM takes 512 huge pages of 2M at each start and this host"
     " has 100 free now; it will not start until it has them: reserve them: `echo 512 | sudo"
     " tee /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`"),
    ({2048: (0, 0), 1048576: (0, 0)}, "1G", 0, "1 GiB pages are reserved at boot: add"
     " `hugepagesz=1G hugepages=1` to the kernel command line"),
    ({2048: (512, 512)}, "1G", 2, "--hugepages (tune.hugepages): this host offers no 1G pages"
     " (it offers: 2M); 1G pages need a CPU with pdpe1gb"),
    ({2048: (512, 512)}, "4M", 2, "--hugepages (tune.hugepages): '4M': expected 2M or 1G"),
])
def test_huge_pages_are_planned_against_the_hosts_pools(gpu_host, tmp_path, monkeypatch, pools,
                                                        flag, code, words):
    import os

    from support.cpu_trees import hugepages

    hugepages(Path(os.environ["NEURONOS_HOST_ROOT"]), pools)
    conn = gpu_host
    done, out, err = run(conn, *LINUX_1G, "--hugepages", flag)
    assert done == code, out + err
    if words:
        assert words in out + err, out + err
    if code == 0:
        from vm_manager.base.domain_xml import read_domain

        xml = conn.execute(lambda c: c.lookupByName("h").XMLDesc(0))
        assert read_domain(xml).hugepages_kib == {"2M": 2048, "1G": 1048576}[flag]
        assert run(conn, "configure", "h", "--hugepages", "none")[0] == 0
        xml = conn.execute(lambda c: c.lookupByName("h").XMLDesc(0))
        assert read_domain(xml).hugepages_kib is None and "memoryBacking" not in xml


def test_memory_that_is_not_whole_pages_is_refused(gpu_host):
    import os

    from support.cpu_trees import hugepages

    hugepages(Path(os.environ["NEURONOS_HOST_ROOT"]), {1048576: (4, 4)})
    code, _, err = run(gpu_host, *[a if a != "1G" else "1536M" for a in LINUX_1G],
                       "--hugepages", "1G")
    assert code == 2 and "1536 MiB is not whole 1G pages: give the memory in steps of 1024" \
        " MiB" in err, err


@pytest.mark.daemon
def test_on_the_real_daemon_a_vm_without_its_huge_pages_is_not_started(system_daemon,
                                                                       tiny_guest, tmp_path):
    """libvirt takes the definition with huge pages; a start where the host has none free
    (or no hugetlbfs) is refused in words with the fix, before QEMU runs, and the VM stays
    off; `configure --hugepages none` and it starts."""
    import os
    import subprocess
    import sys
    import uuid

    from support.cpu_trees import hugepages

    name = f"neuron-huge-{uuid.uuid4().hex[:6]}"
    root = hugepages(build(tmp_path / "host", SHAPES["laptop"]), {2048: (0, 0)})

    def neuron_vm(*argv, host_root=None):
        env = {**os.environ, "NEURONOS_CONFIG_DIR": str(tmp_path / "config")}
        if host_root:
            env["NEURONOS_HOST_ROOT"] = str(host_root)
        return subprocess.run([sys.executable, "-m", "vm_manager", *argv, "-c", system_daemon],
                              capture_output=True, text=True, timeout=300, env=env)

    try:
        made = neuron_vm("create", name, "--template", "linux", "--kernel",
                         str(tiny_guest.kernel), "--initrd", str(tiny_guest.initrd),
                         "--cmdline", "console=ttyS0 quiet panic=-1", "--disk-size", "0",
                         "--memory", "512M", "--domain-type", "qemu", "--network", "none",
                         "--hugepages", "2M", host_root=root)
        assert made.returncode == 0, made.stdout + made.stderr
        assert "the VM takes 256 huge pages of 2M" in made.stdout + made.stderr
        started = neuron_vm("start", name, host_root=root)
        assert started.returncode != 0
        assert f"{name} was not started: its memory is in 2 MiB huge pages and it needs 256" \
            " free, this computer has 0; reserve them: `echo 256 | sudo tee" in started.stderr
        unmounted = hugepages(build(tmp_path / "unmounted", SHAPES["laptop"]),
                              {2048: (256, 256)}, mounted=False)  # pages, but no hugetlbfs
        started = neuron_vm("start", name, host_root=unmounted)
        assert "no hugetlbfs is mounted" in started.stderr, started.stderr
        state = subprocess.run(["virsh", "-c", system_daemon, "domstate", name],
                               capture_output=True, text=True).stdout.strip()
        assert state == "shut off"
        assert neuron_vm("configure", name, "--hugepages", "none").returncode == 0
        started = neuron_vm("start", name)
        assert started.returncode == 0, started.stderr
    finally:
        neuron_vm("delete", name, "--force", "--yes")


def _hugetlbfs_mounts() -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[2:3] == ["hugetlbfs"]]


def _free_2m() -> int:
    return int(Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").read_text())


@pytest.mark.daemon
def test_on_the_real_daemon_a_guest_runs_on_real_huge_pages(system_daemon, tiny_guest,
                                                           tmp_path):
    """256 pages of 2M reserved as the fix says (`echo N | tee .../nr_hugepages`, root), a
    hugetlbfs mounted before libvirtd started (as systemd's dev-hugepages.mount does; .ci/run
    and the newest platform mount one): the tiny guest made with `--hugepages 2M` starts,
    QEMU's memory is a file on that hugetlbfs, the pool gives it its 256 pages while it runs
    and has them back once it stopped; the pool is put back as it was."""
    import os
    import subprocess
    import sys
    import uuid

    from support.tiny_guest import READY_MARKER, wait_for_console

    from conftest import unavailable

    pool = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
    problem = ("this needs root" if os.geteuid() != 0 else
               "no hugetlbfs is mounted (mount one, then restart libvirtd)"
               if not _hugetlbfs_mounts() else None)
    if problem:
        unavailable(problem, f"{problem}: .ci/run mounts one before libvirtd starts")
    name = f"neuron-realhuge-{uuid.uuid4().hex[:6]}"
    serial = tmp_path / "serial.log"
    env = {**os.environ, "NEURONOS_CONFIG_DIR": str(tmp_path / "config")}

    def neuron_vm(*argv):
        return subprocess.run([sys.executable, "-m", "vm_manager", *argv, "-c", system_daemon],
                              capture_output=True, text=True, timeout=300, env=env)

    reserved = int(pool.read_text())
    pool.write_text(f"{reserved + 256}\n")
    try:
        free = _free_2m()
        assert free >= 256, f"the kernel reserved only {free} free pages of 2M"
        made = neuron_vm("create", name, "--template", "linux", "--kernel",
                         str(tiny_guest.kernel), "--initrd", str(tiny_guest.initrd),
                         "--cmdline", "console=ttyS0 quiet panic=-1", "--disk-size", "0",
                         "--memory", "512M", "--domain-type", "qemu", "--network", "none",
                         "--hugepages", "2M", "--serial-log", str(serial), "--start")
        assert made.returncode == 0, made.stdout + made.stderr
        wait_for_console(serial, READY_MARKER, timeout=120)
        assert _free_2m() == free - 256  # libvirt preallocates a huge-page backing
        pid = Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "memory-backend-file" in command and any(
            f'"mem-path":"{mount}' in command for mount in _hugetlbfs_mounts()), command
        stopped = neuron_vm("stop", name, "--force")
        assert stopped.returncode == 0, stopped.stderr
        assert _free_2m() == free
    finally:
        neuron_vm("delete", name, "--force", "--yes")
        pool.write_text(f"{reserved}\n")


def test_the_settings_dialog_shows_the_plan_and_changes_pinning_and_pages(qtbot, make_host,
                                                                         tmp_path):
    """Settings of a GPU VM on an i9-13900K: the plan in words (the reasons as tip);
    unticking the pinning and choosing 2 MiB pages rewrites the definition so."""
    from support.cpu_trees import hugepages
    from support.fakes import add_pci_devices, nvidia_turing_gpu
    from vm_manager.actions import Context, host
    from vm_manager.base import guard
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.base.domain_xml import read_domain
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.gui.dialogs import SettingsDialog

    root = add_pci_devices(tmp_path / "host", nvidia_turing_gpu())
    hugepages(build(root, SHAPES["i9-13900k"]), {2048: (2048, 2048)})
    with guard.allowed():
        conn = LibvirtConnection(make_host(cpus=32, memory_mb=65536)).open()
        ctx = Context(connection=conn, store=VMStore(tmp_path / "config"),
                      images_dir=tmp_path / "images", host_root=root)
        ctx.creator().create(VMConfig(name="g", vm_type="linux", vcpus=8, memory_mb=4096,
                                      disk_size_gb=1, network="none", domain_type="qemu",
                                      gpu_passthrough={"pci_address": "01:00.0"}))
        saved, devices = ctx.store.load("g"), host.devices(ctx)
    dialog = SettingsDialog(ctx, saved, devices)
    qtbot.addWidget(dialog)
    assert dialog.pin.isChecked() and dialog.hugepages.currentData() == "none"
    qtbot.waitUntil(lambda: "On this computer" in dialog.where.text(), timeout=5000)
    assert dialog.where.text() == ("On this computer: host CPUs 2-9, QEMU's own threads on"
                                   " 0-1,10-31")
    assert "P-cores only" in dialog.where.toolTip()
    dialog.vcpus.setValue(7)  # the line follows the field (a walk found it stale)
    assert dialog.where.text() == ("Not pinned: 7 vCPUs are not whole cores of 2 threads: ask"
                                   " for 6 or 8")
    dialog.vcpus.setValue(8)
    assert dialog.vcpus.minimum() == 1  # Linux's minimum; Windows 11's is 2
    dialog.pin.setChecked(False)
    dialog.hugepages.setCurrentIndex(dialog.hugepages.findData("2M"))
    dialog.apply()
    qtbot.waitUntil(lambda: dialog.result is not None or "Saving" not in dialog.error.text(),
                    timeout=5000)
    assert dialog.result is not None, dialog.error.text()
    with guard.allowed():
        info = read_domain(conn.execute(lambda c: c.lookupByName("g").XMLDesc(0)))
        assert ctx.store.load("g").tune.pin is False
        conn.close()
    assert info.cpu.pins == () and info.cpu.topology == (1, 1, 8, 1)
    assert info.hugepages_kib == 2048


# --- the host kept off the VM's cores while it runs (--isolate) --------------------------

@pytest.fixture
def systemd(tmp_path, monkeypatch):
    """The systemctl stand-in first on PATH; returns a reader of the units' AllowedCPUs."""
    import json

    from support.fake_systemctl import install

    state = tmp_path / "systemd.json"
    for key, value in install(tmp_path / "bin", state).items():
        monkeypatch.setenv(key, value)
    return lambda: json.loads(state.read_text()) if state.exists() else {}


def test_isolation_records_first_and_gives_everything_back(systemd, tmp_path, monkeypatch):
    from vm_manager.base.errors import OperationFailed
    from vm_manager.core.cpu_isolation import CPUIsolation

    isolation = CPUIsolation(tmp_path / "records", online="0-31")
    isolation.apply("g", "u-1", "0-1,10-31")
    assert systemd() == {"system.slice": "0-1,10-31", "user.slice": "0-1,10-31",
                         "init.scope": "0-1,10-31"}
    assert isolation.recorded() == ["u-1"]
    assert isolation.restore("u-1") == []
    assert systemd() == dict.fromkeys(("system.slice", "user.slice", "init.scope"), "0-31")
    assert isolation.recorded() == []
    # a refusal half-way (polkit dismissed at the third unit): the first two are put back
    monkeypatch.setenv("FAKE_SYSTEMD_FAIL", "init.scope")
    with pytest.raises(OperationFailed, match="init.scope AllowedCPUs=0-1,10-31 failed.*"
                                              "Access denied"):
        isolation.apply("g", "u-1", "0-1,10-31")
    assert set(systemd().values()) == {"0-31"} and isolation.recorded() == []
    # a NeuronOS that died while two VMs ran: the one still running keeps its isolation
    isolation.apply("a", "u-a", "0-3")
    isolation.apply("b", "u-b", "0-1")
    assert isolation.restore_stale({"u-b"}) == []
    assert isolation.recorded() == ["u-b"]


def test_without_systemd_isolation_is_refused_in_words(tmp_path, monkeypatch):
    from vm_manager.base.errors import OperationFailed
    from vm_manager.core.cpu_isolation import CPUIsolation

    monkeypatch.setenv("PATH", str(tmp_path))  # no systemctl anywhere
    with pytest.raises(OperationFailed, match="needs systemd"):
        CPUIsolation(tmp_path / "records").apply("g", "u-1", "0")
    assert CPUIsolation(tmp_path / "records").recorded() == []


def test_isolate_needs_pinned_vcpus(gpu_host):
    code, _, err = run(gpu_host, "create", "i", "--template", "linux", "--isolate",
                       "--disk-size", "8G", "--domain-type", "qemu", "--network", "none")
    assert code == 2 and "--isolate (tune.isolate): keeps the host's processes off the VM's" \
        " cores: its vCPUs must be pinned" in err, err


@pytest.mark.daemon
def test_on_the_real_daemon_the_host_keeps_off_a_running_vms_cores(system_daemon, tiny_guest,
                                                                   tmp_path, systemd):
    """`create --tune --isolate` of the tiny guest: `start` limits system.slice, user.slice
    and init.scope to the CPUs it does not get (systemd stand-in: no systemd here), `stop`
    gives them back; stopped behind NeuronOS's back (virsh destroy, as if NeuronOS had died),
    the next start gives them back before anything else."""
    import os
    import subprocess
    import sys
    import uuid

    from support.cpu_trees import Shape

    root = build(tmp_path / "host", Shape("2 cores", ((0,), (1,)), (("0-1", "6144K"),)))
    name = f"neuron-alone-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "NEURONOS_CONFIG_DIR": str(tmp_path / "config"),
           "NEURONOS_HOST_ROOT": str(root)}

    def neuron_vm(*argv):
        return subprocess.run([sys.executable, "-m", "vm_manager", *argv, "-c", system_daemon],
                              capture_output=True, text=True, timeout=300, env=env)

    records = tmp_path / "config" / "cpu-isolation"
    try:
        made = neuron_vm("create", name, "--template", "linux", "--kernel",
                         str(tiny_guest.kernel), "--initrd", str(tiny_guest.initrd),
                         "--cmdline", "console=ttyS0 quiet panic=-1", "--disk-size", "0",
                         "--memory", "512M", "--cpus", "1", "--tune", "--isolate",
                         "--domain-type", "qemu", "--network", "none")
        assert made.returncode == 0, made.stdout + made.stderr
        started = neuron_vm("start", name)
        assert started.returncode == 0, started.stderr
        assert f"while {name} runs, the host's own processes keep to CPUs 0" in started.stderr
        assert systemd() == dict.fromkeys(("system.slice", "user.slice", "init.scope"), "0")
        assert len(list(records.glob("*.json"))) == 1
        info = neuron_vm("info", name).stdout
        assert "the host's own processes kept off them while it runs" in info
        assert neuron_vm("stop", name, "--force").returncode == 0
        every = Path("/sys/devices/system/cpu/online").read_text().strip()
        assert systemd() == dict.fromkeys(("system.slice", "user.slice", "init.scope"), every)
        assert list(records.glob("*.json")) == []
        assert neuron_vm("start", name).returncode == 0
        subprocess.run(["virsh", "-c", system_daemon, "destroy", name], check=True,
                       capture_output=True)  # NeuronOS is not told
        assert set(systemd().values()) == {"0"}  # still limited: nobody gave them back
        again = neuron_vm("start", name)
        assert again.returncode == 0, again.stderr
        log = Path(f"{tmp_path}/systemd.json.log").read_text().splitlines()
        back = [i for i, line in enumerate(log) if line.endswith(f"AllowedCPUs={every}")]
        limited = [i for i, line in enumerate(log) if line.endswith("AllowedCPUs=0")]
        assert back and back[-1] < limited[-1]  # given back first, then limited again
    finally:
        neuron_vm("delete", name, "--force", "--yes")
        neuron_vm("start", "--help")


def test_tune_apply_pins_a_vm_whose_topology_already_matched(gpu_host, tmp_path, monkeypatch):
    """A 1-vCPU VM on a 4-core laptop: its topology (1 core x 1 thread) is the plan's, only
    the pins are missing: `tune --apply` writes them (a walk found it said "holds this
    plan" and changed nothing)."""
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(build(tmp_path / "laptop", SHAPES["laptop"])))
    conn = gpu_host
    code, _, err = run(conn, "create", "one", "--template", "linux", "--cpus", "1",
                       "--memory", "1G", "--disk-size", "8G", "--domain-type", "qemu",
                       "--network", "none")
    assert code == 0, err
    code, out, _ = run(conn, "tune", "one")
    assert "its definition holds the topology; `neuron-vm tune one --apply` pins it" in out
    code, out, err = run(conn, "tune", "one", "--apply")
    assert code == 0 and "one: its definition holds this plan" in out, out + err
    assert cpu_of(conn, "one").pins == ((0, "1"),) and cpu_of(conn, "one").emulator == "0,2-3"


def test_pinning_asked_where_it_cannot_be_is_saved_and_said_so(gpu_host):
    """`configure --tune` of a VM whose vCPUs cannot be pinned on this host (3 on SMT cores)
    saves the choice, says why the definition stays as it is, never "nothing to change"."""
    conn = gpu_host
    code, _, err = run(conn, "create", "odd", "--template", "linux", "--cpus", "3",
                       "--memory", "1G", "--disk-size", "8G", "--domain-type", "qemu",
                       "--network", "none")
    assert code == 0, err
    before = conn.execute(lambda c: c.lookupByName("odd").XMLDesc(0))
    code, out, err = run(conn, "configure", "odd", "--tune")
    assert code == 0, err
    assert "nothing to change" not in out, out
    assert "odd: 1024 MiB, 3 vCPUs, GPU none, qemu, 0 USB devices; saved (its definition" \
        " stays as it is: see the warning)" in out, out
    assert "ask for 2 or 4" in err, err
    assert conn.execute(lambda c: c.lookupByName("odd").XMLDesc(0)) == before
    code, out, _ = run(conn, "configure", "odd", "--tune")  # asked again: nothing new
    assert code == 0 and "odd: nothing to change" in out, out

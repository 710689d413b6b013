"""NeuronOS's virtiofsd launcher: a shared folder is served as its owner, never as root.

Why (issue 28): on qemu:///system libvirt 9.0 runs virtiofsd as root, so the guest's root
could make setuid-root files in the folder and reach every file root can. libvirt's own
answers (``<idmap>``, an unprivileged virtiofsd) need libvirt >= 10.0. Every virtiofs share
NeuronOS makes names this program as its ``<binary path>``; ``scripts/install-helper.sh``
installs it as ``/usr/sbin/neuronos-virtiofsd`` (root's, ``#!/usr/bin/python3 -I``; under
``/usr/sbin`` because Debian's AppArmor profile for libvirtd lets it run programs there).

libvirt runs it as root with virtiofsd's arguments (``--fd=N -o source=DIR,...``). It

1. walks to DIR one component at a time without following a symlink, and refuses a folder
   root owns;
2. makes a user namespace in which the guest's first user (uid/gid 1000, the first account of
   every common Linux distribution and cloud-init) is the folder's owner on this computer,
   and nothing else is mapped: whatever virtiofsd does, it does as that account, and files
   the guest makes are theirs (a setuid bit on them gives no more than their own rights);
3. makes virtiofsd's per-request identity switch (setresuid/setresgid to the guest's caller)
   a no-op through a seccomp filter, so the guest's root and other users make files as
   the owner too, instead of failing on an identity that is not mapped;
4. runs the real virtiofsd in it (uid 1000 there, with the capabilities virtiofsd needs
   inside the namespace only), and stays as its parent: libvirt stops it through this
   process's pid, which it hands on.

Only the standard library is imported: it runs from the root-owned copy of the package.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import stat
import struct
import sys

INSTALLED_PATH = "/usr/sbin/neuronos-virtiofsd"
# The real daemon: the Rust virtiofsd where a distribution packages it (Debian 13, Arch,
# Fedora), else QEMU's own (Debian 12: qemu-system-common's /usr/lib/qemu/virtiofsd).
REAL_VIRTIOFSD = ("/usr/libexec/virtiofsd", "/usr/lib/virtiofsd", "/usr/lib/qemu/virtiofsd")
GUEST_ID = 1000  # the guest's first user sees the folder's files as theirs

CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG, PR_SET_SECUREBITS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 1, 28, 47, 2
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SECBIT_NO_SETUID_FIXUP = 1 << 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# What virtiofsd keeps (chown, dac_override, fowner, fsetid, setgid, setuid, setpcap, mknod,
# setfcap) and what it needs to make its own sandbox (sys_chroot, sys_admin); all of them
# hold inside the new user namespace only.
CAPS = (0, 1, 3, 4, 6, 7, 8, 18, 21, 27, 31)
# setresuid / setresgid by architecture (AUDIT_ARCH_*): x86_64, aarch64.
SETRES_CALLS = {0xC000003E: (117, 119), 0xC00000B7: (147, 149)}
CAP_CALLS = {0xC000003E: (125, 126), 0xC00000B7: (90, 91)}  # capget, capset


class Refused(Exception):
    """The folder may not be served."""


def source_of(argv: list[str]) -> str:
    """DIR of ``-o source=DIR,...`` (libvirt doubles a comma in DIR) or ``--shared-dir``."""
    for index, arg in enumerate(argv):
        if arg.startswith("--shared-dir="):
            return arg.split("=", 1)[1]
        if arg in ("--shared-dir",) and index + 1 < len(argv):
            return argv[index + 1]
        if arg == "-o" and index + 1 < len(argv):
            for option in argv[index + 1].replace(",,", "\0").split(","):
                if option.startswith("source="):
                    return option[len("source="):].replace("\0", ",")
    raise Refused("no source folder on the command line")


def owner_of(path: str) -> os.stat_result:
    """The folder's stat, reached one component at a time with no symlink on the way."""
    if not path.startswith("/"):
        raise Refused(f"{path!r} is not an absolute path")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        for part in [part for part in path.split("/") if part]:
            if part == "..":
                raise Refused(f"{path} has '..' in it")
            try:
                step = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
            except OSError as error:
                raise Refused(f"{path}: {part} is not a folder reached without a symlink"
                              f" ({error.strerror})") from None
            os.close(fd)
            fd = step
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISDIR(info.st_mode):
        raise Refused(f"{path} is not a folder")
    if info.st_uid == 0:
        raise Refused(f"{path} belongs to root: NeuronOS serves a shared folder as its owner"
                      " and never as root")
    return info


def seccomp_program(arch: int) -> bytes:
    """A classic BPF filter: setresuid/setresgid return 0 and do nothing, all else runs."""
    uid_call, gid_call = SETRES_CALLS[arch]
    ld_abs, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET
    allow, errno_0 = 0x7FFF0000, 0x00050000  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | 0
    program = [
        (ld_abs, 0, 0, 4),  # 0: seccomp_data.arch
        (jeq, 0, 3, arch),  # 1: another architecture: 5
        (ld_abs, 0, 0, 0),  # 2: seccomp_data.nr
        (jeq, 2, 0, uid_call),  # 3: setresuid: 6
        (jeq, 1, 0, gid_call),  # 4: setresgid: 6
        (ret, 0, 0, allow),  # 5
        (ret, 0, 0, errno_0),  # 6: "done", and nothing done
    ]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in program)


def main(argv: list[str]) -> int:
    real = next((path for path in REAL_VIRTIOFSD if os.access(path, os.X_OK)), None)
    if real is None:
        print(f"neuronos-virtiofsd: no virtiofsd in {', '.join(REAL_VIRTIOFSD)}",
              file=sys.stderr)
        return 1
    if any(arg in ("--print-capabilities", "-V", "--version", "-h", "--help") for arg in argv):
        os.execv(real, [real, *argv])
    if os.geteuid() != 0:
        print("neuronos-virtiofsd: libvirt runs it as root", file=sys.stderr)
        return 1
    try:
        info = owner_of(source_of(argv))
    except Refused as refused:
        print(f"neuronos-virtiofsd: {refused}", file=sys.stderr)
        return 1
    try:
        gid = pwd.getpwuid(info.st_uid).pw_gid
    except KeyError:
        gid = info.st_gid
    return _serve(real, argv, info.st_uid, gid)


def _serve(real: str, argv: list[str], uid: int, gid: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    _nofile_for(real)
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(ready_r)
        os.close(mapped_w)
        try:
            if libc.unshare(CLONE_NEWUSER) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
            os.write(ready_w, b"1")
            if os.read(mapped_r, 1) != b"1":
                os._exit(1)
            _become_owner(libc)
            os.execv(real, [real, *argv])
        except BaseException as error:  # noqa: BLE001 - the child must never return
            print(f"neuronos-virtiofsd: {error}", file=sys.stderr)
        os._exit(1)
    os.close(ready_w)
    os.close(mapped_r)
    if os.read(ready_r, 1) != b"1":
        os.waitpid(child, 0)
        return 1
    for name, outside in (("uid_map", uid), ("gid_map", gid)):
        with open(f"/proc/{child}/{name}", "w") as handle:
            handle.write(f"{GUEST_ID} {outside} 1\n")
    os.write(mapped_w, b"1")
    def forward(number, frame):
        try:
            os.kill(child, number)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _nofile_for(real: str) -> None:
    """virtiofsd raises its open-file limit itself, which a user namespace may not do: raise
    it here, as root, to what it would ask for (min(1,000,000, fs.file-max - 16384))."""
    import resource

    try:
        with open("/proc/sys/fs/file-max") as handle:
            wanted = min(1_000_000, int(handle.read()) - 16384)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (OSError, ValueError):
        pass


def _become_owner(libc) -> None:
    """In the new user namespace: uid/gid GUEST_ID (the owner outside), the capabilities
    virtiofsd needs kept across exec (ambient), its identity switch made a no-op."""
    if libc.prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "securebits")
    os.setgroups([])
    os.setresgid(GUEST_ID, GUEST_ID, GUEST_ID)
    os.setresuid(GUEST_ID, GUEST_ID, GUEST_ID)
    capget, capset = CAP_CALLS[_arch()]
    header = struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0)
    data = ctypes.create_string_buffer(24)
    if libc.syscall(capget, header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    effective0, permitted0, _, effective1, permitted1, _ = struct.unpack("6I", data.raw)
    data = ctypes.create_string_buffer(struct.pack(
        "6I", effective0, permitted0, permitted0, effective1, permitted1, permitted1))
    if libc.syscall(capset, header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    for cap in CAPS:
        if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"ambient capability {cap}")
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    program = seccomp_program(_arch())
    filters = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(filters))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, fprog, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp")


def _arch() -> int:
    machine = os.uname().machine
    if machine == "x86_64":
        return 0xC000003E
    if machine == "aarch64":
        return 0xC00000B7
    raise OSError(0, f"no seccomp numbers for {machine}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

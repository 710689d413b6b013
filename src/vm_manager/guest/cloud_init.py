"""The cloud-init NoCloud seed of a Linux VM made from a cloud image (DESIGN.md 7): an ISO
labelled ``cidata`` holding ``meta-data`` (instance-id, local-hostname), ``user-data``
(``#cloud-config``: the account, its SSH key and/or password, the guest agent), and no
``network-config``: cloud-init's own fallback (docs "Network configuration": with no network
config from any source it asks DHCP on the "first" interface) is what brings the NIC up on
every cloud image. A ``match: name: "e*"`` config was rendered by Debian 12's cloud-init 22.4
as an interface named after the config's key, which does not exist (no address, no packages,
no SSH; checked on a real guest, DESIGN.md 7). It is attached as a read-only virtio
disk, which every cloud image reads; it may hold a password, so it is written 0600 and
removed when setup ends. Setup ends when cloud-init's ``result.json`` exists: the seed's last
command waits for it (``cloud-init status --wait``) in a transient unit, then restarts the
guest agent, whose reconnection is libvirt's event for it. The cloud image itself is never written: the VM's disk is a qcow2
overlay on it.

Values are written as JSON strings, which YAML reads verbatim: no user value can add a key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..base.guest_config import UnattendedConfig
from .iso import MediumFile, write_iso

LABEL = "cidata"
LINUX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
SSH_KEY = re.compile(r"(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp\d+|sk-(ssh-ed25519|ecdsa-sha2-"
                     r"nistp256)@openssh\.com) [A-Za-z0-9+/=]+( [^\r\n]*)?")


DONE_SIGNAL = "cloud-init status --wait >/dev/null 2>&1; systemctl restart qemu-guest-agent"


def password_hash(password: str) -> str:
    """The SHA-512 crypt hash cloud-init's ``passwd`` takes (cloud-init docs: "the hash --
    not the password itself"), made by ``openssl passwd -6`` with the password on stdin
    (Python 3.13 has no crypt module)."""
    import shutil
    import subprocess

    from ..base import guard
    from ..base.errors import OperationFailed

    openssl = shutil.which("openssl")
    if openssl is None:
        raise OperationFailed("openssl is needed to hash the account's password: sudo apt"
                              " install openssl")
    guard.check("openssl passwd")
    result = subprocess.run([openssl, "passwd", "-6", "-stdin"], input=password.encode() + b"\n",
                            capture_output=True, check=False, timeout=30)
    hashed = result.stdout.decode().strip()
    if result.returncode != 0 or not hashed.startswith("$6$"):
        raise OperationFailed(f"openssl could not hash the password: {result.stderr.decode()}")
    return hashed


def instance_id(vm_uuid: str) -> str:
    return f"iid-{vm_uuid}"


def seed_files(vm_name: str, vm_uuid: str, setup: UnattendedConfig, ssh_keys: list[str],
               password: str | None, attempt: int = 1) -> list[MediumFile]:
    q = json.dumps  # a JSON string is a YAML string, read verbatim
    instance = instance_id(vm_uuid) + (f"-{attempt}" if attempt > 1 else "")  # a new one:
    meta = f"instance-id: {q(instance)}\nlocal-hostname: {q(vm_name)}\n"  # cloud-init reruns
    user = [f"  - name: {q(setup.user)}", "    groups: [sudo, adm]", "    shell: /bin/bash",
            "    sudo: \"ALL=(ALL) ALL\"" if password else "    sudo: \"ALL=(ALL) NOPASSWD:ALL\"",
            f"    lock_passwd: {'false' if password else 'true'}"]
    if password:  # the hash, never the password (issue 28: the seed is a file QEMU reads)
        user.append(f"    passwd: {q(password_hash(password))}")
    if ssh_keys:
        user.append("    ssh_authorized_keys:")
        user += [f"      - {q(key)}" for key in ssh_keys]
    data = "\n".join([
        "#cloud-config",
        f"hostname: {q(vm_name)}",
        "users:",
        *user,
        f"ssh_pwauth: {'true' if password else 'false'}",
        "packages: [qemu-guest-agent]",
        "runcmd:",
        "  - [systemctl, enable, --now, qemu-guest-agent]",
        # the agent's reconnection is the event that says cloud-init finished (its
        # result.json is then there to read); a transient unit outlives this stage
        "  - [systemd-run, --no-block, --collect, --unit=neuronos-setup-done, sh, -c,"
        f" {q(DONE_SIGNAL)}]",
    ]) + "\n"
    return [MediumFile("/meta-data", meta.encode()), MediumFile("/user-data", data.encode())]


def build_seed(target: Path, *, vm_name: str, vm_uuid: str, setup: UnattendedConfig,
               password: str | None, attempt: int = 1) -> list[str]:
    """Write the seed ISO (``target`` must not exist; 0600). Returns its file list.
    ``attempt`` > 1 (a restarted setup) gives a new instance-id, so cloud-init runs again."""
    keys = read_ssh_keys(setup.ssh_key_path) if setup.ssh_key_path else []
    files = seed_files(vm_name, vm_uuid, setup, keys, password, attempt)
    write_iso(target, LABEL, files, mode=0o600)
    return [item.path for item in files]


MAX_KEY_FILE = 64 * 1024  # authorized_keys of many keys stays far below


def read_ssh_keys(path: str | Path) -> list[str]:
    """The public keys of an ``authorized_keys``-style file (comments and blanks left
    out); raises ``InvalidConfig`` when it holds none, or a private key."""
    from ..base.errors import InvalidConfig
    from ..base.user_files import read_user_file

    data = read_user_file(path, "unattended.ssh_key_path", MAX_KEY_FILE)
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidConfig("unattended.ssh_key_path", f"{path} is not a text file of SSH"
                            " public keys") from None
    if "PRIVATE KEY" in text:
        raise InvalidConfig("unattended.ssh_key_path", f"{path} is a private key: give the"
                            " public one (.pub)")
    keys = [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    bad = [key for key in keys if not SSH_KEY.fullmatch(key)]
    if not keys or bad:
        raise InvalidConfig("unattended.ssh_key_path", f"{path} holds no SSH public key"
                            " (ssh-ed25519 AAAA... user@host)")
    return keys

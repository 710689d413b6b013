"""Why libvirt could not be reached, and what to check, in one line: a local daemon that
is not running, rights, a remote host over SSH or TCP/TLS, or a URI libvirt has no
driver for."""

from __future__ import annotations

import libvirt

from .errors import ConnectionFailed


def describe_open_failure(uri: str, error: libvirt.libvirtError) -> ConnectionFailed:
    """Turn libvirt's open error into a message that says what to check."""
    message = (error.get_error_message() or str(error)).strip()
    code = error.get_error_code()
    lowered = message.lower()
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme in ("http", "https"):
        hint = ("libvirt has no http transport: a remote host is qemu+ssh://USER@HOST/system"
                " (or qemu+tls://HOST/system)")
    elif host and scheme.endswith("+ssh"):
        hint = (f"check that `ssh {parts.netloc}` works from here without a question (SSH key,"
                f" known host) and that libvirtd runs on {host}")
    elif host and scheme.partition("+")[2] in ("tcp", "tls", ""):
        hint = (f"check that {host} is reachable and its libvirtd listens for"
                f" {scheme.partition('+')[2] or 'tls'} connections (or use qemu+ssh://{host}"
                "/system)")
    elif code == libvirt.VIR_ERR_NO_CONNECT or "no connection driver" in lowered:
        hint = "check the URI, e.g. qemu:///system, qemu:///session or test:///default"
    elif "permission denied" in lowered:
        hint = "add your user to the 'libvirt' group and log in again, or run with sudo"
    elif "no such file" in lowered or "connection refused" in lowered or "socket" in lowered:
        hint = "is libvirtd running? start it with: sudo systemctl start libvirtd"
    else:
        hint = "is libvirtd running and the URI right?"
    return ConnectionFailed(uri, message, hint)

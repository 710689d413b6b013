#!/usr/bin/env python3
"""A stand-in for systemd's ``systemctl`` where no systemd runs (CI containers): only the two
calls NeuronOS's CPU isolation makes, with systemctl's own syntax (systemctl(1),
systemd.resource-control(5)), keeping the units' ``AllowedCPUs=`` in a JSON file
(``$FAKE_SYSTEMD_STATE``):

    systemctl show --property=AllowedCPUs --value UNIT       prints it ("" when unset)
    systemctl set-property --runtime -- UNIT AllowedCPUs=L   sets it for the running system

Like systemctl it refuses a unit that is not loaded ("Unit X not found.", exit 1), a property
it does not know ("Unknown assignment"), and a CPU list that does not parse ("Failed to parse
CPU set"); ``$FAKE_SYSTEMD_FAIL`` names a unit whose first set-property fails (a polkit
agent dismissed once: "Access denied"), to test the undo. Every call is appended to
``$FAKE_SYSTEMD_STATE.log``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

UNITS = ("system.slice", "user.slice", "init.scope", "machine.slice")


def main(argv: list[str]) -> int:
    state = Path(os.environ["FAKE_SYSTEMD_STATE"])
    with open(f"{state}.log", "a") as log:
        log.write(" ".join(argv) + "\n")
    units = json.loads(state.read_text()) if state.exists() else {}
    if argv[:3] == ["show", "--property=AllowedCPUs", "--value"] and len(argv) == 4:
        if argv[3] not in UNITS:
            print(f"Unit {argv[3]} not found.", file=sys.stderr)
            return 1
        print(units.get(argv[3], ""))
        return 0
    if argv[:3] == ["set-property", "--runtime", "--"] and len(argv) == 5:
        unit, assignment = argv[3], argv[4]
        if unit not in UNITS:
            print(f"Failed to set unit properties on {unit}: Unit {unit} not found.",
                  file=sys.stderr)
            return 1
        name, _, value = assignment.partition("=")
        if name != "AllowedCPUs":
            print(f"Unknown assignment: {assignment}", file=sys.stderr)
            return 1
        if value and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", value):
            print(f"Failed to parse CPU set: {value}", file=sys.stderr)
            return 1
        once = Path(f"{state}.failed-{unit}")
        if os.environ.get("FAKE_SYSTEMD_FAIL") == unit and not once.exists():
            once.write_text("")
            print(f"Failed to set unit properties on {unit}: Access denied", file=sys.stderr)
            return 1
        units[unit] = value
        state.write_text(json.dumps(units))
        return 0
    print(f"fake systemctl: not a call NeuronOS makes: {' '.join(argv)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def install(folder: Path, state: Path) -> dict[str, str]:
    """``folder/systemctl`` running this stand-in; the environment that puts it first on
    PATH with its state in ``state``."""
    folder.mkdir(parents=True, exist_ok=True)
    command = folder / "systemctl"
    command.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} \"$@\"\n")
    command.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ.get('PATH', '')}", "FAKE_SYSTEMD_STATE": str(state)}

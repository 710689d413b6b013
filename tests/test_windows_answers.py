"""Issue 26: the answer file a real Windows Setup would finish. No Windows can run here, so
``support.setup_rules`` stands in for Setup (Microsoft's answer-file reference and field
reports, each rule with its source): every answer file NeuronOS can write passes it, over a
table of editions x image languages x desktop locales x options, and each field report
is a file it stops on."""

from __future__ import annotations

import io
import itertools
import json
import re
import xml.etree.ElementTree as ET

import pytest

from vm_manager.base.errors import InvalidConfig
from vm_manager.base.guest_config import UnattendedConfig
from vm_manager.guest.media import answer_file
from vm_manager.guest.windows import InstallerInfo, computer_name, wim_images
from vm_manager.guest.windows_answers import (GENERIC_KEYS, KEY_ALPHABET, answer_values,
                                              check_product_key, disc_language, windows_zone)
from vm_manager.templates.loader import TemplateLoader
from support.media import EDITION_IDS, wim_bytes
from support.setup_rules import where_setup_stops
from test_guest_setup import (KEY, NS, Secrets, create_args, isos, run, world,  # noqa: F401
                              xorriso_files, xorriso_read)

EDITIONS = [("Windows 11 Home", "Core"), ("Windows 11 Pro", "Professional"),
            ("Windows 11 Pro N", "ProfessionalN"), ("Windows 11 Education", "Education"),
            ("Windows 11 Enterprise", "Enterprise"), ("Windows 11 Famille", "Core"),
            ("Windows 10 Pro for Workstations", "ProfessionalWorkstation"),
            ("Windows 11 Home Single Language", "CoreSingleLanguage")]
IMAGE_LANGUAGES = [("en-US",), ("de-DE",), ("fr-FR", "en-US")]
DESKTOP_LOCALES = ["en-US", "en-GB", "de-DE", "ja-JP", "pt-BR"]
HOST_ZONES = ["Europe/Berlin", "America/New_York", "Etc/UTC", None, "Mars/Olympus"]


def wim_xml(editions, languages) -> str:
    """The XML resource of the WIM the tests' discs carry (as Setup reads it)."""
    data = wim_bytes(list(editions), 0, languages)
    return data[208:].decode("utf-16-le")


def installer(editions, languages, label="CCCOMA_X64FRE_EN-US_DV9") -> InstallerInfo:
    return InstallerInfo(label, "/sources/install.wim",
                         wim_images(io.BytesIO(wim_bytes(list(editions), 0, languages))))


@pytest.mark.parametrize("edition, edition_id", EDITIONS)
def test_every_answer_file_neuronos_writes_passes_the_setup_rules(edition, edition_id):
    """editions x image languages x desktop locales x (bypass, key given, UI language given,
    time zone given or the host's): no file stops Setup."""
    loader = TemplateLoader()
    checked = 0
    for languages, locale, zone, (bypass, key, pick_ui, tz) in itertools.product(
            IMAGE_LANGUAGES, DESKTOP_LOCALES, HOST_ZONES,
            itertools.product((False, True), (None, GENERIC_KEYS[edition_id]),
                              (False, True), (None, "Tokyo Standard Time"))):
        disc = installer([(edition, edition_id)], languages)
        setup = UnattendedConfig(user="anna", locale=locale, edition=edition,
                                 bypass_hardware_checks=bypass, timezone=tz,
                                 ui_language=languages[-1] if pick_ui else None)
        text = answer_file(loader, "desk", setup, Secrets("pw", key), disc, zone)
        stops = where_setup_stops(text, wim_xml([(edition, edition_id)], languages))
        assert stops == [], (languages, locale, zone, bypass, key, pick_ui, tz, stops)
        root = ET.fromstring(text)
        assert root.find(".//u:SetupUILanguage/u:UILanguage", NS).text == (
            languages[-1] if pick_ui else locale if locale in languages else languages[0])
        assert root.find(".//u:UserLocale", NS).text == locale  # formats: the desktop's
        assert root.find(".//u:ProductKey/u:WillShowUI", NS).text == "Never"
        checked += 1
    assert checked == 3 * 5 * 5 * 16


# --- each field report is a file the rules stop on ---------------------------------------------

def good_file(**setup):
    disc = installer(["Windows 11 Pro"], ("en-US",))
    values = dict(user="anna", locale="de-DE", edition="Windows 11 Pro") | setup
    return answer_file(TemplateLoader(), "desk", UnattendedConfig(**values), Secrets("pw"),
                       disc, "Europe/Berlin"), wim_xml(["Windows 11 Pro"], ("en-US",))


def rules(text, wim, **kw):
    return sorted({stop.rule for stop in where_setup_stops(text, wim, **kw)})


def test_field_reports_are_files_setup_stops_on():
    text, wim = good_file()
    assert rules(text, wim) == []
    # unattend-generator #359, winode PR #10: no key, WillShowUI OnError (the old file)
    old = re.sub(r"<Key>[^<]*</Key>\s*<WillShowUI>Never", "<WillShowUI>OnError", text)
    assert rules(old, wim) == ["product-key"]
    # unattend-generator #36/#64/#270: the UI language from a de_DE desktop, en-US disc
    assert rules(text.replace("<UILanguage>en-US", "<UILanguage>de-DE"), wim) == \
        ["ui-language"]
    # the account named as the computer: outside Administrators, defaultuser0, no commands
    same = text.replace("<Name>anna</Name>", "<Name>DESK</Name>").replace(
        "<Username>anna</Username>", "<Username>DESK</Username>")
    assert rules(same, wim) == ["account-is-computer"]
    # an image name the disc lacks; a zone that is no Windows ID; a second key's edition
    assert rules(text.replace("<Value>Windows 11 Pro</Value>",
                              "<Value>Windows 11 Pro N</Value>"), wim) == ["image-name"]
    assert rules(text.replace("W. Europe Standard Time", "Europe/Berlin"), wim) == \
        ["time-zone"]
    assert rules(text.replace(GENERIC_KEYS["Professional"], GENERIC_KEYS["Core"]), wim) == \
        ["product-key"]


def test_the_rules_for_commands_accounts_partitions_and_drivers():
    text, wim = good_file()
    assert rules(text.replace("<Group>Administrators</Group>", "<Group>Users</Group>"),
                 wim) == ["first-logon"]
    long = re.sub(r"<CommandLine>[^<]*</CommandLine>",
                  "<CommandLine>" + "x" * 1025 + "</CommandLine>", text)
    assert rules(long, wim) == ["command-length"]
    assert rules(text.replace("<PartitionID>4</PartitionID>\n          </InstallTo>",
                              "<PartitionID>3</PartitionID>\n          </InstallTo>"),
                 wim) == ["install-to"]
    domain = ("<domain><devices><disk type='file' device='disk'><target dev='vda'"
              " bus='virtio'/></disk></devices></domain>")
    assert rules(text, wim, domain_xml=domain, medium_files=[]) == ["disk-driver"]
    assert rules(text, wim, domain_xml=domain,
                 medium_files=["/$WinPEDriver$/viostor/viostor.inf"]) == []
    sata = domain.replace("bus='virtio'", "bus='sata'")
    assert rules(text, wim, domain_xml=sata, medium_files=[]) == []


# --- the values ---------------------------------------------------------------------------------

def test_generic_keys_are_keys_and_cover_every_edition_the_discs_carry():
    for edition, key in GENERIC_KEYS.items():
        assert check_product_key(key, edition) == key
        assert set(key.replace("-", "")) <= set(KEY_ALPHABET)
    assert set(EDITION_IDS.values()) <= set(GENERIC_KEYS)


@pytest.mark.parametrize("key, edition, words", [
    ("ABCDE-FGHIJ-KLMNO-PQRST-UVWXY", None, "five groups of five"),
    ("VK7JG-NPHTM-C97JM-9MPGT", None, "five groups of five"),
    (GENERIC_KEYS["Core"], "Professional", r"is the generic key of Windows Home \(Core\),"
                                           r" and the chosen edition is Windows Pro"),
])
def test_product_keys_windows_would_refuse(key, edition, words):
    with pytest.raises(InvalidConfig, match=words) as error:
        check_product_key(key, edition)
    assert error.value.field == "product_key"


def test_a_given_key_is_written_and_none_means_the_editions_generic_key():
    assert check_product_key(" vk7jg-nphtm-c97jm-9mpgt-3v66t ", "Professional") == KEY
    setup = UnattendedConfig(user="anna", edition="Windows 11 Famille")
    disc = installer([("Windows 11 Famille", "Core")], ("fr-FR",), "CCCOMA_X64FRE_FR-FR_DV9")
    values = answer_values("desk", setup, disc.edition("Windows 11 Famille"))
    assert (values.product_key, values.generic_key, values.ui_language) == (
        GENERIC_KEYS["Core"], True, "fr-FR")
    with pytest.raises(InvalidConfig, match="no generic installation key is known"):
        answer_values("desk", UnattendedConfig(edition="Windows 11 IoT"), None)


def test_the_ui_language_is_the_images_and_never_the_desktops():
    disc = installer(["Windows 11 Pro"], ("fr-FR", "en-US"))
    image = disc.edition("Windows 11 Pro")
    setup = UnattendedConfig(locale="de-DE", edition="Windows 11 Pro")
    assert answer_values("desk", setup, image).ui_language == "fr-FR"  # the DEFAULT
    with pytest.raises(InvalidConfig, match="it has: fr-FR, en-US") as error:
        answer_values("desk", UnattendedConfig(ui_language="de-DE", edition="Windows 11 Pro"),
                      image)
    assert error.value.field == "unattended.ui_language"
    # the image unreadable: the disc's label says its language, else en-US
    assert disc_language("CCCOMA_X64FRE_DE-DE_DV9") == "de-DE"
    assert answer_values("d", setup, None, label="CCCOMA_X64FRE_DE-DE_DV9").ui_language == \
        "de-DE"
    assert answer_values("d", setup, None, label="MY DISC").ui_language == "en-US"


def test_time_zones_are_windows_ids_and_default_to_the_hosts():
    assert windows_zone("Europe/Berlin") == "W. Europe Standard Time"
    assert windows_zone("Asia/Tokyo") == "Tokyo Standard Time"
    setup = UnattendedConfig(edition="Windows 11 Pro")
    values = answer_values("desk", setup, None, zone="America/New_York")
    assert (values.timezone, values.timezone_source) == (
        "Eastern Standard Time", "this computer's zone, America/New_York")
    assert answer_values("desk", setup, None, zone="Mars/Olympus").timezone == "UTC"
    for bad, words in (("Berlln", "close: Europe/Berlin (W. Europe Standard Time)"),
                       ("UTC+1", "is not a time zone"), ("", "is not a time zone"),
                       ("CET", "abbreviation, and they name several zones"),
                       ("EST", "abbreviation")):
        with pytest.raises(InvalidConfig, match=re.escape(words)):
            UnattendedConfig(timezone=bad)
    # a walk found zones people type refused (and wrong zones suggested): taken as CLDR says
    for given, windows in (("Europe/Berlin", "W. Europe Standard Time"),
                           ("Berlin", "W. Europe Standard Time"),
                           ("europe/london", "GMT Standard Time"),
                           ("America/New_York", "Eastern Standard Time"),
                           ("New York", "Eastern Standard Time"),
                           ("Asia/Kolkata", "India Standard Time"),
                           ("w. europe standard time", "W. Europe Standard Time")):
        assert UnattendedConfig(timezone=given).timezone == windows, given
    assert UnattendedConfig(timezone="W. Europe Standard Time_dstoff").timezone.endswith(
        "_dstoff")


def test_the_account_is_never_the_computer_and_reserved_computer_names_are_moved():
    with pytest.raises(InvalidConfig, match="the computer's name too") as error:
        answer_values("Anna", UnattendedConfig(user="anna", edition="Windows 11 Pro"), None)
    assert error.value.field == "unattended.user"
    assert computer_name("system") == "VM-SYSTEM" and computer_name("con") == "VM-CON"


# --- through the CLI ----------------------------------------------------------------------------

@pytest.mark.parametrize("extra, field, words", [
    (["--product-key", "ABCDE-FGHIJ-KLMNO-PQRST-UVWXY"], "--product-key", "five groups"),
    (["--product-key", GENERIC_KEYS["Core"]], "--product-key", "generic key of Windows Home"),
    (["--ui-language", "de-DE"], "--ui-language", "it has: en-US"),
    (["--timezone", "Berlln"], "--timezone", "close: Europe/Berlin"),
    (["--user", "W11"], "--user", "the computer's name too"),
    (["--user", "anna\udcff"], "--user", "not UTF-8"),  # issue 27, item 7: was exit 1
    (["--edition", "Windows 11 Pro\ufffe"], "--edition", "expected an edition name"),
])
def test_answers_setup_would_stop_on_exit_2_and_leave_nothing(world, isos, extra, field,
                                                              words):
    conn, store, images, password = world
    code, _, err = run(world, *create_args(isos, password, *extra))
    assert code == 2, err
    assert err.startswith(f"neuron-vm: {field}") and words in err, err
    assert not images.exists() or not list(images.iterdir())
    assert store.load("w11") is None


def test_the_medium_neuronos_writes_passes_the_rules_with_its_definition(world, isos,
                                                                         tmp_path,
                                                                         monkeypatch):
    """create --unattended on a de_DE desktop in Berlin with an en-US disc: Windows in
    en-US, German formats, this computer's zone (its /etc/localtime, what QEMU's localtime
    clock follows; never a shell's TZ), the generic Pro key; the medium's answer file, the
    disc's WIM and the VM's definition pass the rules; the settings keep the zone and the
    language, so a setup made again says the same."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/Europe/Berlin")
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # a shell's TZ: not what QEMU's clock follows
    conn, store, images, password = world
    code, out, err = run(world, *create_args(isos, password, "--locale", "de-DE"))
    assert code == 0, err
    assert "Windows in en-US (a language of the image), formats de-DE, keyboard de-DE, time" \
        " zone W. Europe Standard Time (this computer's zone, Europe/Berlin)" in out
    saved = store.load("w11").unattended
    assert (saved.timezone, saved.ui_language) == ("W. Europe Standard Time", "en-US")
    assert "no product key given: Windows 11 Pro is installed with its generic key (it" \
        " installs, it does not activate" in out
    medium = images / "w11-setup.iso"
    answer = xorriso_read(medium, "/Autounattend.xml", tmp_path / "a.xml").decode()
    domain = conn.execute(lambda c: c.lookupByName("w11").XMLDesc(0))
    wim = wim_xml(["Windows 11 Home", "Windows 11 Pro"], ("en-US",))
    assert where_setup_stops(answer, wim, domain, xorriso_files(medium)) == []
    assert "<TimeZone>W. Europe Standard Time</TimeZone>" in answer
    setup = json.loads(xorriso_read(medium, "/neuronos/setup.json", tmp_path / "s.json"))
    assert setup["user"] == "anna"


def test_the_first_logon_script_removes_secrets_and_keeps_the_password(world, isos,
                                                                       tmp_path):
    """The script (no PowerShell runs here: read as text) removes Setup's cached answer
    files and the autologon password, says so in its log, sets the password never to
    expire, and registers VirtIO-FS with New-Service (a quoted path PowerShell 5.1 keeps)."""
    _, _, images, password = world
    assert run(world, *create_args(isos, password))[0] == 0
    script = xorriso_read(images / "w11-setup.iso", "/neuronos/firstlogon.ps1",
                          tmp_path / "f.ps1").decode()
    for folder in ("$env:WINDIR\\Panther", "$env:WINDIR\\Panther\\Unattend",
                   "$env:WINDIR\\System32\\Sysprep"):
        assert f'"{folder}"' in script
    assert "-Filter '*nattend*.xml'" in script and "Step 'secrets'" in script
    assert "Remove-ItemProperty -Path $winlogon -Name 'DefaultPassword'" in script
    assert "Set-LocalUser -Name $setup.user -PasswordNeverExpires $true" in script
    assert "net.exe accounts /maxpwage:unlimited" in script
    assert "& sc.exe" not in script
    assert "New-Service -Name 'VirtioFsSvc' -BinaryPathName \"`\"$folder\\virtiofs.exe`\"\"" \
        in script
    # the secrets go before anything that may take long or fail
    assert script.index("Step 'secrets'") < script.index("virtio-win-guest-tools.exe")


# --- the GPU's driver ---------------------------------------------------------------------------

def test_the_gpu_driver_goes_onto_the_medium_with_its_vendors_switches(world, isos, tmp_path,
                                                                       monkeypatch):
    """--gpu-driver-installer with an NVIDIA card (a sysfs tree shaped like the kernel's):
    the package goes onto the medium byte for byte, setup.json carries each vendor's silent
    switches, the script picks them by the PCI vendor the guest sees; without a GPU, or
    without the option, the plan says what happens instead."""
    from support.fakes import add_pci_devices, nvidia_turing_gpu

    conn, store, images, password = world
    driver = tmp_path / "572.16-desktop-win10-win11-64bit-international-dch-whql.exe"
    driver.write_bytes(b"MZ" + bytes(range(256)) * 64)
    code, _, err = run(world, *create_args(isos, password, "--gpu-driver-installer",
                                           str(driver)))
    assert code == 2 and err.startswith("neuron-vm: --gpu-driver-installer") \
        and "goes with a passed-through GPU (--gpu ADDR)" in err, err
    assert store.load("w11") is None
    monkeypatch.setenv("NEURONOS_HOST_ROOT",
                       str(add_pci_devices(tmp_path / "host", nvidia_turing_gpu())))
    code, out, err = run(world, *create_args(isos, password, "--gpu", "01:00.0",
                                             name="plain"))
    assert code == 0 and "Windows Update brings the GPU's driver" in out, err
    code, out, err = run(world, *create_args(isos, password, "--gpu", "01:00.0",
                                             "--gpu-driver-installer", str(driver)))
    assert code == 0, err
    assert f"first logon installs the NVIDIA driver silently ({driver.name} -s -noreboot" \
        " -noeula)" in out
    medium = images / "w11-setup.iso"
    assert xorriso_read(medium, "/neuronos/gpu-driver.exe", tmp_path / "d.exe") == \
        driver.read_bytes()
    setup = json.loads(xorriso_read(medium, "/neuronos/setup.json", tmp_path / "s.json"))
    assert setup["gpu_driver_switches"] == {"10DE": ["-s", "-noreboot", "-noeula"],
                                            "1002": ["-INSTALL"]}
    script = xorriso_read(medium, "/neuronos/firstlogon.ps1", tmp_path / "f.ps1").decode()
    assert "$setup.gpu_driver_switches.($Matches[1])" in script
    assert script.index("gpu-driver.exe") < script.index("looking-glass-host-setup.exe")


def test_a_given_key_is_said_and_checked_before_anything_is_shown_or_made(world, isos):
    """Found by a walk: with --product-key the plan still said "no product key given";
    --print-xml took keys the real create refuses; and a key of another edition was
    refused only after the whole plan was printed."""
    conn, store, images, password = world
    code, out, err = run(world, *create_args(isos, password, "--product-key",
                                             KEY.lower()))
    assert code == 0, err
    assert "Windows 11 Pro is installed with the product key you gave" in out
    assert "no product key given" not in out
    for key, words in (("12345", "five groups of five"),
                       (GENERIC_KEYS["Core"], "generic key of Windows Home (Core)")):
        for extra in (["--print-xml"], ["--edition", "Windows 11 Pro"]):
            code, out, err = run(world, *create_args(isos, password, "--product-key", key,
                                                     *extra, name="w2"))
            assert code == 2 and words in err and out == "", (extra, out, err)


def test_a_key_in_a_file_stays_out_of_the_process_list(world, isos, tmp_path):
    """Issue 28: --product-key is in /proc/PID/cmdline for every user while create runs.
    --product-key-file reads it from a file (checked like the password file); the key on
    the command line still works, with a warning that says where it shows."""
    conn, store, images, password = world
    key_file = tmp_path / "key"
    key_file.write_text(KEY.lower() + "\n")
    key_file.chmod(0o600)
    code, out, err = run(world, *create_args(isos, password, "--product-key-file",
                                             str(key_file)))
    assert code == 0, err
    assert "installed with the product key you gave" in out and "process list" not in err
    code, out, err = run(world, *create_args(isos, password, "--product-key", KEY,
                                             name="w2"))
    assert code == 0 and "seen by every user on this computer" in err, err
    key_file.chmod(0o644)
    code, out, err = run(world, *create_args(isos, password, "--product-key-file",
                                             str(key_file), name="w3"))
    assert code == 0 and "can be read by other users" in err, err
    key_file.write_text("12345\n")
    code, out, err = run(world, *create_args(isos, password, "--product-key-file",
                                             str(key_file), name="w4"))
    assert code == 2 and "--product-key-file" in err and "five groups" in err, err
    code, out, err = run(world, *create_args(isos, password, "--product-key-file",
                                             str(key_file), "--product-key", KEY, name="w5"))
    assert code == 2 and "not allowed with argument" in err, err


def test_a_disc_with_the_desktops_language_installs_in_it():
    """Found by a walk: a disc with en-US, de-DE and fr-FR on a German desktop installed
    English (its default); a language the disc has and the desktop uses wins."""
    disc = installer(["Windows 11 Pro"], ("en-US", "de-DE", "fr-FR"))
    image = disc.edition("Windows 11 Pro")
    german = UnattendedConfig(locale="de-DE", edition="Windows 11 Pro")
    assert answer_values("desk", german, image).ui_language == "de-DE"
    swiss = UnattendedConfig(locale="de-CH", edition="Windows 11 Pro")
    assert answer_values("desk", swiss, image).ui_language == "en-US"  # not on it: default


@pytest.mark.parametrize("field, value", [("locale", "xx-YY"), ("locale", "zz-ZZ"),
                                          ("keyboard", "xx-YY"), ("locale", "en-ZZ")])
def test_locales_no_locale_has_are_refused(field, value):
    """Found by a walk: `--locale xx-YY` (the help's placeholder) went into the answer
    file, where Setup stops on it."""
    with pytest.raises(InvalidConfig, match="is not a language and region any locale has"):
        UnattendedConfig(**{field: value})
    assert UnattendedConfig(locale="en-GB", keyboard="0809:00000809").keyboard == \
        "0809:00000809"


def test_setup_status_of_a_vm_shut_off_midway_says_to_start_it(world, isos):
    """Found by a walk: after `stop --force` mid-install, setup-status said "Windows is
    installing (20-40 minutes with KVM)" for a VM that was off."""
    conn, _, _, password = world
    assert run(world, *create_args(isos, password))[0] == 0
    assert run(world, "start", "w11")[0] == 0
    code, out, _ = run(world, "setup-status", "w11")
    assert code == 0 and "Windows is installing" in out
    assert run(world, "stop", "w11", "--force")[0] == 0
    code, out, _ = run(world, "setup-status", "w11")
    assert code == 0 and "the VM is shut off at this stage: start it to go on (`neuron-vm" \
        " start w11`)" in out and "Windows is installing" not in out, out

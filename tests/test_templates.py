"""Templates: loader precedence, validator rules, golden files, test-driver define."""

from __future__ import annotations

import os
import re
from pathlib import Path

import libvirt
import pytest

from creation_cases import cases, fixed_facts, media
from vm_manager.base.connection import LibvirtConnection
from vm_manager.core.vm_creator import VMCreator
from vm_manager.templates.loader import PACKAGE_DIR, TemplateError, TemplateLoader
from vm_manager.templates.validator import XMLValidationError, validate_xml
from support.fakes import add_pci_devices, nvidia_turing_gpu

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("NEURONOS_UPDATE_GOLDEN") == "1"
UUID = re.compile(r"<uuid>[0-9a-f-]{36}</uuid>")


# --- loader ---------------------------------------------------------------------------------

def test_all_eight_templates_exist():
    names = {info.name for info in TemplateLoader().list_templates()}
    for kind in ("windows11", "windows10", "linux", "macos"):
        assert {f"{kind}-basic", f"{kind}-passthrough"} <= names


def test_user_file_overrides_one_template_only(tmp_path):
    user, system = tmp_path / "user", tmp_path / "system"
    user.mkdir()
    system.mkdir()
    (user / "linux-basic.xml.j2").write_text("<domain type='test'><name>{{ name }}</name>"
                                             "</domain>")
    (system / "macos-basic.xml.j2").write_text("system macos")
    loader = TemplateLoader([("user", user), ("system", system), ("package", PACKAGE_DIR)])
    origins = {info.name: info.origin for info in loader.list_templates()}
    assert origins["linux-basic"] == "user"
    assert origins["macos-basic"] == "system"
    assert origins["windows11-basic"] == "package"  # not hidden by the user folder
    assert "<name>a&amp;b</name>" in loader.render("linux-basic", {"name": "a&b"})


def test_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "linux-basic.xml.j2").write_text("<domain>\n{% if %}\n</domain>\n")
    loader = TemplateLoader([("user", tmp_path), ("package", PACKAGE_DIR)])
    with pytest.raises(TemplateError) as caught:
        loader.render("linux-basic", {})
    assert "linux-basic.xml.j2" in str(caught.value) and "line 2" in str(caught.value)


def test_missing_variable_fails_loudly():
    with pytest.raises(TemplateError, match="needs a value"):
        TemplateLoader().render("linux-basic", {"name": "x"})


def test_unknown_template_lists_the_known_ones():
    with pytest.raises(TemplateError, match="windows11-basic"):
        TemplateLoader().find("dos-basic")


# --- validator ------------------------------------------------------------------------------

BASE = ("<domain type='qemu'><name>v</name><memory unit='MiB'>{mem}</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>{devices}</devices>"
        "</domain>")


def test_validator_accepts_a_plain_domain():
    assert validate_xml(BASE.format(mem=512, devices="")).schema_checked


@pytest.mark.parametrize("devices, problem", [
    ("<shmem name='lg'><model type='ivshmem-plain'/><size unit='M'>33</size></shmem>",
     "power of two"),
    ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' "
     "bus='0x01' slot='0x00' function='0x0'/></source></hostdev>" * 2, "passed twice"),
    ("<disk type='file' device='disk'><source file='relative.qcow2'/><target dev='vda'/>"
     "</disk>", "not absolute"),
    ("<bogus/>", "schema"),
])
def test_validator_rejects(devices, problem):
    with pytest.raises(XMLValidationError, match=problem):
        validate_xml(BASE.format(mem=512, devices=devices))


def test_validator_rejects_bad_xml_and_memory():
    with pytest.raises(XMLValidationError, match="well-formed"):
        validate_xml("<domain>")
    with pytest.raises(XMLValidationError, match="memory"):
        validate_xml(BASE.format(mem=0, devices=""), use_schema=False)


# --- golden files: every template x typical configs ----------------------------------------

@pytest.fixture
def gpu_host(tmp_path):
    return add_pci_devices(tmp_path / "host", nvidia_turing_gpu())


def render_case(tmp_path, gpu_host, config, conn):
    creator = VMCreator(conn, images_dir="/var/lib/libvirt/images", host_root=gpu_host)
    plan = creator.plan(config, facts=fixed_facts(creator, config))
    xml = creator.render(plan)
    validate_xml(xml)
    return plan, xml


def normalize(xml: str, media_dir: Path) -> str:
    return UUID.sub("<uuid>@UUID@</uuid>", xml).replace(str(media_dir), "@MEDIA@")


GOLDEN_CASES = [(False, case) for case in ("windows11", "windows10", "linux", "macos",
                                            "linux-kernel")] + \
    [(True, case) for case in ("windows11", "windows10", "linux", "macos")]


@pytest.mark.parametrize("gpu, case", GOLDEN_CASES,
                         ids=[f"{'passthrough' if g else 'basic'}-{c}" for g, c in GOLDEN_CASES])
def test_golden_files_and_test_driver_define(tmp_path, gpu_host, make_host, gpu, case):
    media_dir = tmp_path / "media"
    paths = media(media_dir)
    config = cases(paths, gpu)[case]
    assert set(cases(paths, gpu)) == {c for g, c in GOLDEN_CASES if g == gpu}  # all covered
    with LibvirtConnection(make_host()) as conn:
        plan, xml = render_case(tmp_path, gpu_host, config, conn)
        assert plan.template.endswith("-passthrough" if gpu else "-basic")
        golden = GOLDEN / f"{plan.template}--{case}.xml"
        text = normalize(xml, media_dir)
        if UPDATE or not golden.exists():
            if not UPDATE:
                pytest.fail(f"{golden.name} is missing: run with NEURONOS_UPDATE_GOLDEN=1")
            golden.write_text(text)
        assert text == golden.read_text(), f"{golden.name} differs from the rendered XML"
        # libvirt itself parses and schema-checks it
        test_xml = xml.replace("<domain type='qemu'>", "<domain type='test'>")
        dom = conn.execute(lambda c: c.defineXMLFlags(
            test_xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE))
        assert dom.name() == config.name


def test_passthrough_takes_every_function_of_the_slot(tmp_path, gpu_host, make_host):
    paths = media(tmp_path / "media")
    with LibvirtConnection(make_host()) as conn:
        _, xml = render_case(tmp_path, gpu_host, cases(paths, True)["windows11"], conn)
    for function in range(4):
        assert f"bus='0x01' slot='0x00' function='0x{function}'" in xml
    assert xml.count("<hostdev mode='subsystem' type='pci' managed='yes'>") == 4
    assert "<shmem name='looking-glass-win11'>" in xml and "<size unit='M'>64</size>" in xml
    assert "<memballoon model='none'/>" in xml and "<hidden state='on'/>" in xml
    assert "<vendor_id state='on' value='NeuronOS'/>" in xml
    assert "<model type='vga'/>" in xml and "type='tablet'" not in xml


def test_every_template_has_spice_with_no_network_port():
    """SPICE carries the Looking Glass window's keyboard, mouse and clipboard (DESIGN.md
    4.1): every template's domain has it, and with no address (issue 28: on 127.0.0.1 with
    no password every local account could watch and type into every VM); viewers get their
    connection from libvirt."""
    from vm_manager.base.domain_xml import read_domain

    goldens = sorted(GOLDEN.glob("*--*.xml"))
    assert len(goldens) >= 8
    for golden in goldens:
        spice = [g for g in read_domain(golden.read_text()).graphics if g.type == "spice"]
        assert len(spice) == 1 and spice[0].listen_type == "none", golden
        assert spice[0].listen is None and not spice[0].autoport and spice[0].port is None

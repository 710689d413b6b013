"""The domain templates: which exist (and where from), one's source, and checking a file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..templates.loader import TemplateInfo
    from ..templates.validator import ValidationReport


def list_templates(ctx: Context) -> list[TemplateInfo]:
    return ctx.loader.list_templates()


def show(ctx: Context, name: str) -> str:
    return ctx.loader.source(name)


def validate_file(ctx: Context, path: str) -> ValidationReport:
    """Check a domain XML file against libvirt's schema and NeuronOS's rules; raises
    ``InvalidConfig`` when it cannot be read, ``XMLValidationError`` listing problems."""
    from ..base.errors import InvalidConfig
    from ..templates.validator import validate_xml

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise InvalidConfig("FILE", f"cannot read {path}: {error.strerror}") from None
    return validate_xml(text)

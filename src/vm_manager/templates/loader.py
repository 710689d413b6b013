"""Find and render the domain templates.

Lookup is name by name, in this order: the user's folder
(``$XDG_CONFIG_HOME/neuronos/templates``, i.e. ``~/.config/neuronos/templates``), the
system folder (``/usr/share/neuron-os/templates``), then the package's own. A user file
overrides that one template and hides none of the others (the design notes' loader took
the first folder that existed). Autoescape is on, and an unknown variable is an error, not
an empty string.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..base.errors import VMCreationError
from .names import SUFFIX

PACKAGE_DIR = Path(__file__).resolve().parent
SYSTEM_DIR = Path("/usr/share/neuron-os/templates")
MACROS = "_macros"  # the shared pieces; also the producer of hot-plug fragments


def user_dir(environ: dict | None = None) -> Path:
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path(os.path.expanduser("~")) / ".config"
    return base / "neuronos" / "templates"


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates cached under the user's cache folder: compiling the four files of a
    Windows template costs ~40 ms per process, loading them ~2 ms (bench/create_time.py).
    Jinja checks each cached entry against its source file, so edits are picked up."""
    base = os.environ.get("NEURONOS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "neuronos")
    folder = Path(base) / "jinja"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".writable"
        probe.touch()
    except OSError:
        return None  # read-only home: compile every time
    return jinja2.FileSystemBytecodeCache(str(folder))


@dataclass(frozen=True)
class TemplateInfo:
    name: str  # without the suffix, e.g. "windows11-basic"
    path: Path
    origin: str  # "user", "system" or "package"


class TemplateError(VMCreationError):
    """A template is missing, has a syntax error (file and line named) or failed to render."""


class TemplateNotFound(TemplateError):
    """No template of that name (exit 3, as a VM that is not there)."""

    exit_code = 3


class TemplateLoader:
    def __init__(self, search_dirs: list[tuple[str, Path]] | None = None):
        if search_dirs is None:
            search_dirs = [("user", user_dir()), ("system", SYSTEM_DIR), ("package", PACKAGE_DIR)]
        self.search_dirs = search_dirs
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [jinja2.FileSystemLoader(str(path)) for _, path in search_dirs]
            ),
            autoescape=True,  # every value is XML-escaped: names and paths cannot inject
            undefined=jinja2.StrictUndefined,  # a missing variable fails loudly
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            bytecode_cache=_bytecode_cache(),
        )

    def find(self, name: str) -> TemplateInfo:
        """The file of a template (``_macros`` included: the shared pieces)."""
        for origin, folder in self.search_dirs:
            path = folder / f"{name}{SUFFIX}"
            if path.is_file():
                return TemplateInfo(name, path, origin)
        known = ", ".join(info.name for info in self.list_templates())
        raise TemplateNotFound(f"no template named {name!r}; available: {known}")

    def list_templates(self) -> list[TemplateInfo]:
        """Every public template (names not starting with "_"), with where it comes from."""
        seen: dict[str, TemplateInfo] = {}
        for origin, folder in self.search_dirs:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                name = path.name[: -len(SUFFIX)]
                if not name.startswith("_") and name not in seen:
                    seen[name] = TemplateInfo(name, path, origin)
        return sorted(seen.values(), key=lambda info: info.name)

    def source(self, name: str) -> str:
        return self.find(name).path.read_text(encoding="utf-8")

    def render(self, name: str, context: dict) -> str:
        info = self.find(name)
        with self._errors(info.path):
            return _tidy(self.env.get_template(info.path.name).render(**context))

    def render_fragment(self, macro: str, *args) -> str:
        """One device element from the macros the whole templates use (``usb_hostdev``,
        ``shmem``, ...), for hot-plug: the same producer as at creation, user overrides of
        ``_macros.xml.j2`` included."""
        path = self.find(MACROS).path
        with self._errors(path):
            module = self.env.get_template(path.name).module
            if not hasattr(module, macro):
                raise TemplateError(f"{path} has no macro {macro!r}")
            return textwrap.dedent(_tidy(str(getattr(module, macro)(*args)))).strip() + "\n"

    @contextlib.contextmanager
    def _errors(self, path: Path):
        try:
            yield
        except jinja2.TemplateSyntaxError as error:
            where = error.filename or str(path)
            raise TemplateError(
                f"template syntax error in {where}, line {error.lineno}: {error.message}"
            ) from None
        except jinja2.UndefinedError as error:
            raise TemplateError(
                f"template {path} needs a value it was not given: {error.message}"
            ) from None
        except jinja2.TemplateError as error:
            raise TemplateError(f"template {path} failed: {error}") from None


def _tidy(rendered: str) -> str:
    """Optional pieces leave empty lines behind; drop them for a tidy, stable XML."""
    return "\n".join(line for line in rendered.splitlines() if line.strip()) + "\n"

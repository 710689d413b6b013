"""Read and write ISO 9660 images without mounting them (pycdlib, pure Python).

Reading: the names a desktop sees (UDF for Windows installer discs, which carry only a
README in ISO 9660; else Rock Ridge, else Joliet, else plain ISO 9660), files streamed, never
read whole. Writing: every file gets a Joliet name (what Windows reads) and a Rock Ridge name
(what Linux reads, cloud-init's NoCloud included); the plain ISO 9660 names are generated
short names nobody needs to see. Nothing here modifies an ISO it reads.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from ..base.errors import InvalidConfig

CHUNK = 1 << 20


class IsoReader:
    """One ISO opened for reading; use as a context manager."""

    def __init__(self, path: Path | str, field: str = "iso_path", opener=None):
        """``opener(path)``: a seekable binary file of ``path`` where it is not a local file
        (a remote host's volume); the reader closes it."""
        import pycdlib
        from pycdlib.pycdlibexception import PyCdlibException

        self.path = Path(path)
        self._iso = pycdlib.PyCdlib()
        self._file = None
        try:
            if opener is None:
                self._iso.open(str(self.path))
            else:
                self._file = opener(str(self.path))
                self._iso.open_fp(self._file)
        except (PyCdlibException, OSError, ValueError) as error:
            if self._file is not None:
                self._file.close()
            raise InvalidConfig(field, f"{self.path} cannot be read as an ISO image"
                                f" ({error})") from None
        if self._iso.has_udf():
            self._kind = "udf_path"
        elif self._iso.has_rock_ridge():
            self._kind = "rr_path"
        elif self._iso.has_joliet():
            self._kind = "joliet_path"
        else:
            self._kind = "iso_path"

    def __enter__(self) -> IsoReader:
        return self

    def __exit__(self, *exc) -> None:
        self._iso.close()
        if self._file is not None:
            self._file.close()

    @property
    def label(self) -> str:
        """The volume label (ISO 9660 volume identifier), blanks stripped."""
        raw = self._iso.pvd.volume_identifier
        return raw.decode("ascii", "replace").strip() if isinstance(raw, bytes) else str(raw)

    def files(self, top: str = "/") -> Iterator[str]:
        """Every file below ``top`` as an absolute path, in the names the disc shows."""
        try:
            walker = self._iso.walk(**{self._kind: top})
            for folder, _, names in walker:
                for name in names:
                    yield str(PurePosixPath(folder) / _plain(name))
        except Exception:  # noqa: BLE001 - pycdlib raises its own exceptions for "no such path"
            return

    def find(self, path: str) -> str | None:
        """The disc's own spelling of ``path``, matched without regard to case (Windows
        discs say SOURCES or sources), or None."""
        wanted = path.strip("/").lower()
        folder = str(PurePosixPath("/" + wanted).parent)
        real_folder = "/" if folder == "/" else self.find_dir(folder)
        if real_folder is None:
            return None
        for name in self._names(real_folder, files=True):
            if name.lower() == PurePosixPath(wanted).name:
                return str(PurePosixPath(real_folder) / name)
        return None

    def find_dir(self, path: str) -> str | None:
        current = "/"
        for part in PurePosixPath(path.strip("/")).parts:
            match = next((n for n in self._names(current, files=False) if n.lower()
                          == part.lower()), None)
            if match is None:
                return None
            current = str(PurePosixPath(current) / match)
        return current

    def _names(self, folder: str, files: bool) -> list[str]:
        try:
            for _, dirs, names in self._iso.walk(**{self._kind: folder}):
                return [_plain(n) for n in (names if files else dirs)]
        except Exception:  # noqa: BLE001 - a missing folder
            return []
        return []

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator[BinaryIO]:
        """A seekable stream of one file (read as it is used, never whole)."""
        with self._iso.open_file_from_iso(**{self._kind: path}) as stream:
            yield stream

    def copy_to(self, path: str, target: Path) -> int:
        """Stream one file out to ``target``; returns its size."""
        size = 0
        with self.open(path) as source, open(target, "wb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
                size += len(chunk)
        return size


def _plain(name: str | bytes) -> str:
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name.split(";", 1)[0]


@dataclass(frozen=True)
class MediumFile:
    """One file of an ISO to write: its path on the disc and where its bytes come from."""

    path: str  # e.g. "/$WinPEDriver$/viostor/viostor.inf"
    source: Path | bytes


def write_iso(target: Path, label: str, files: list[MediumFile], mode: int = 0o600) -> None:
    """Write an ISO with Joliet and Rock Ridge names, created with ``mode`` (never wider:
    it may hold a password). ``target`` must not exist; a failure leaves no file."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    short = _ShortNames()
    opened: list[BinaryIO] = []
    try:
        made: set[str] = set()
        for item in sorted(files, key=lambda f: f.path):
            parts = PurePosixPath(item.path).parts[1:]
            for depth in range(1, len(parts)):
                folder = "/" + "/".join(parts[:depth])
                if folder not in made:
                    iso.add_directory(short.dir(folder), rr_name=parts[depth - 1],
                                      joliet_path=folder, file_mode=0o40555)
                    made.add(folder)
            if isinstance(item.source, bytes):
                import io

                stream, length = io.BytesIO(item.source), len(item.source)
            else:
                stream = open(item.source, "rb")
                length = os.fstat(stream.fileno()).st_size
            opened.append(stream)
            iso.add_fp(stream, length, short.file(item.path), rr_name=parts[-1],
                       joliet_path=item.path, file_mode=0o100444)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            with os.fdopen(fd, "wb") as out:
                iso.write_fp(out)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    finally:
        for stream in opened:
            stream.close()
        iso.close()


class _ShortNames:
    """Unique ISO 9660 level-3 names (``D0001``, ``F0001.;1``) mirroring the real tree."""

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {"/": "/"}
        self._count = 0

    def _next(self) -> str:
        self._count += 1
        return f"{self._count:04d}"

    def dir(self, path: str) -> str:
        parent = self._dirs[str(PurePosixPath(path).parent)]
        short = f"{parent.rstrip('/')}/D{self._next()}"
        self._dirs[path] = short
        return short

    def file(self, path: str) -> str:
        parent = self._dirs[str(PurePosixPath(path).parent)]
        return f"{parent.rstrip('/')}/F{self._next()}.;1"

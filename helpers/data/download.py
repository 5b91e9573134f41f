"""Fetching and unpacking dataset releases, for the prepare scripts.

* :func:`download`: a release file at a chosen path, downloaded once (to a temporary name, then
  renamed, so an interrupted download leaves nothing half-written); offline, the error names the
  URL and where to put the file by hand.
* :func:`extract`: a ``.zip`` / ``.tar`` / ``.tgz`` archive unpacked once into a folder (into
  ``<folder>.partial`` first, renamed when complete, so an interrupted extraction is redone).
  Zips split into parts (``name.z01``, ``name.z02``, ..., ``name.zip``, as Zenodo serves FSD50K)
  are read part by part (:func:`extract_split_zip`): no ``zip -s 0`` join, no external tool.
"""

from __future__ import annotations

import os
import shutil
import struct
import tarfile
import urllib.error
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

__all__ = ["download", "extract", "extract_split_zip", "split_parts"]


def download(url: str, path: str | os.PathLike, what: str, offline_hint: str = "") -> Path:
    """``path``, downloading ``url`` there first when it does not exist (``offline_hint`` ends the
    error's advice, e.g. another option).

    Raises:
        RuntimeError: the download failed (e.g. offline); names the URL and ``path``.
    """
    import torch.hub  # its downloader shows a progress bar and writes to a temporary file first

    path = Path(path)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {what} from {url} to {path}")
    try:
        torch.hub.download_url_to_file(url, os.fspath(path), progress=True)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise RuntimeError(
            f"could not download {what} from {url} ({err}).\n"
            f"Without network access, download that file elsewhere and put it at {path.resolve()}{offline_hint}."
        ) from err
    return path


def split_parts(zip_path: str | os.PathLike) -> list[Path]:
    """The parts of a split zip in order (``<name>.z01``, ``<name>.z02``, ..., ``<name>.zip``); ``[zip_path]`` if not split."""
    zip_path = Path(zip_path)
    return sorted(zip_path.parent.glob(f"{zip_path.stem}.z[0-9][0-9]")) + [zip_path]


def extract(archive: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """``folder`` holding the content of ``archive`` (a zip, split or not, or a tar file), extracting it once."""
    archive, folder = Path(archive), Path(folder)
    if folder.is_dir():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():  # an interrupted extraction: start it again
        shutil.rmtree(partial)
    print(f"extracting {archive} into {folder}")
    if len(split_parts(archive)) > 1:
        extract_split_zip(archive, partial)
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(partial)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(partial, filter="data")
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive (a truncated download?); delete it and "
                         "run again to download it again")
    os.replace(partial, folder)
    return folder


# ------------------------------------------------------------------------------ split zip archives
# A split zip is one zip written across several files ("disks"): every offset in its central
# directory is relative to the start of the disk it names. Reading the parts as one stream with
# those offsets translated is all it takes (zipfile refuses multi-disk archives).
_EOCD, _EOCD64_LOCATOR, _CENTRAL, _LOCAL = b"PK\x05\x06", b"PK\x06\x07", b"PK\x01\x02", b"PK\x03\x04"


class _Parts:
    """The parts of a split zip as one byte stream."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        sizes = [p.stat().st_size for p in paths]
        self.starts = [sum(sizes[:i]) for i in range(len(paths))]
        self.total = sum(sizes)

    def read(self, position: int, size: int) -> bytes:
        chunks = []
        for path, start in zip(self.paths, self.starts, strict=True):
            end = start + path.stat().st_size
            if size > 0 and start <= position < end:
                with path.open("rb") as fh:
                    fh.seek(position - start)
                    data = fh.read(min(size, end - position))
                chunks.append(data)
                position, size = position + len(data), size - len(data)
        return b"".join(chunks)


def _zip64_values(extra: bytes, wanted: list[bool]) -> list[int | None]:
    """The zip64 extra field's values for the fields marked in ``wanted`` (size, compressed size, offset, disk)."""
    values: list[int | None] = [None] * 4
    i = 0
    while i + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, i)
        if tag == 1:
            j = i + 4
            for k, (need, fmt) in enumerate(zip(wanted, ("<Q", "<Q", "<Q", "<I"), strict=True)):
                if need:
                    values[k] = struct.unpack_from(fmt, extra, j)[0]
                    j += struct.calcsize(fmt)
        i += 4 + length
    return values


def extract_split_zip(zip_path: str | os.PathLike, folder: str | os.PathLike, progress: bool = True) -> None:
    """Extract a split zip (stored or deflated members, zip64 too) into ``folder``, checking every CRC."""
    parts = _Parts(split_parts(zip_path))
    tail = parts.read(max(0, parts.total - 66000), 66000)
    end = tail.rfind(_EOCD)
    if end < 0:
        raise ValueError(f"{zip_path}: no end of central directory; is the last part complete?")
    _, _, cd_disk, _, _, cd_size, cd_offset, _ = struct.unpack_from("<4sHHHHIIH", tail, end)
    if tail[end - 20:end - 16] == _EOCD64_LOCATOR:  # zip64: the real values are in the zip64 record
        _, record_disk, record_offset, _ = struct.unpack_from("<4sIQI", tail, end - 20)
        record = parts.read(parts.starts[record_disk] + record_offset, 56)
        cd_disk, cd_size, cd_offset = struct.unpack_from("<I", record, 20)[0], *struct.unpack_from("<QQ", record, 40)
    directory = parts.read(parts.starts[cd_disk] + cd_offset, cd_size)
    members, i = [], 0
    while directory[i:i + 4] == _CENTRAL:
        (method, crc, csize, size, name_len, extra_len, comment_len, disk,
         offset) = struct.unpack_from("<10xH4xIIIHHHH6xI", directory, i)
        name = directory[i + 46:i + 46 + name_len].decode("utf-8", "replace")
        extra = directory[i + 46 + name_len:i + 46 + name_len + extra_len]
        wanted = [size == 0xFFFFFFFF, csize == 0xFFFFFFFF, offset == 0xFFFFFFFF, disk == 0xFFFF]
        big = _zip64_values(extra, wanted)
        size, csize, offset, disk = (b if w else v for w, b, v in zip(wanted, big, (size, csize, offset, disk),
                                                                      strict=True))
        members.append((name, method, crc, csize, size, parts.starts[disk] + offset))
        i += 46 + name_len + extra_len + comment_len
    folder = Path(folder)
    for name, method, crc, csize, size, position in tqdm(members, desc=f"extracting {Path(zip_path).name}",
                                                         unit="file", disable=not progress):
        target = folder.joinpath(*[p for p in PurePosixPath(name).parts if p not in ("..", "/")])
        if name.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            continue
        header = parts.read(position, 30)
        if header[:4] != _LOCAL or method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"{zip_path}: member {name} cannot be read (damaged part, or compression {method})")
        name_len, extra_len = struct.unpack_from("<HH", header, 26)
        start = position + 30 + name_len + extra_len
        inflate = zlib.decompressobj(-15) if method == zipfile.ZIP_DEFLATED else None
        target.parent.mkdir(parents=True, exist_ok=True)
        check, written = 0, 0
        with target.open("wb") as out:
            for chunk_start in range(0, csize, 1 << 24):
                data = parts.read(start + chunk_start, min(1 << 24, csize - chunk_start))
                data = inflate.decompress(data) if inflate else data
                out.write(data)
                check, written = zlib.crc32(data, check), written + len(data)
            if inflate:
                data = inflate.flush()
                out.write(data)
                check, written = zlib.crc32(data, check), written + len(data)
        if check != crc or written != size:
            raise ValueError(f"{zip_path}: member {name} is damaged (CRC or size mismatch); download the parts again")

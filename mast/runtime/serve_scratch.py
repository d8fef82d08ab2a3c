"""The temporary files of one ``mast-serve`` process, all removed when it exits, and those of a server
that was killed (SIGKILL: nothing of it ran) removed by the next ``mast-serve`` that starts.

A server writes into one folder ``$TMPDIR/mast-serve-<pid>-XXXX`` (its Triton log unless
``--triton-log``, and PyTriton's workspace with its copy of Triton). Three more things are made
elsewhere, named here so they can be removed: the folder into which Triton copies each model it
loads, ``/tmp/folderXXXXXX`` (fixed in Triton, listed in ``triton-folders`` of the server's folder
once Triton runs), the Python backend's shared-memory regions ``/dev/shm/pytrtion<pid>-*``
(PyTriton names them after the server's pid), and PyTriton's tensor-store segments
``/dev/shm/psm_*`` (random names: those the server's processes map are listed in
``shared-memory`` every few seconds while it runs). A folder whose pid is no longer running is stale.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "mast-serve-"
FOLDERS_FILE = "triton-folders"
SHM_FILE = "shared-memory"
SCRATCH_LOG = "triton.log"   # Triton's log, when no --triton-log is given
SHM = Path("/dev/shm")
STUB = "triton_python_backend_stub"   # Triton's Python backend helper: argv[1] is the model's copy
_TRITON_FOLDER = re.compile(r"^/tmp/folder\w{6}$")
_OURS = re.compile(rf"^{PREFIX}(\d+)-\w+$")
_SEGMENT = re.compile(r"^psm_\w+$")   # multiprocessing.shared_memory's names (PyTriton's tensor store)


def make_scratch() -> Path:
    """A new private folder for this process's temporary files."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def descendants(pid: int) -> Iterator[int]:
    """The pids of ``pid``'s descendants (children, their children, ...) running now."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        yield p
        todo += children.get(p, [])


def record_triton_folders(scratch: Path) -> list[Path]:
    """Find the model folders Triton made for this process's server (from its helper processes'
    command lines) and list them in ``scratch``; returns them."""
    folders = set()
    for pid in descendants(os.getpid()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].decode(errors="replace").endswith(STUB):
            folder = Path(argv[1].decode(errors="replace")).parent.parent
            if _TRITON_FOLDER.match(str(folder)):
                folders.add(folder)
    listed = sorted(folders | set(_listed(scratch)))
    (scratch / FOLDERS_FILE).write_text("".join(f"{f}\n" for f in listed))
    return listed


def record_shared_memory(scratch: Path) -> list[str]:
    """List in ``scratch`` the tensor-store segments (``/dev/shm/psm_*``) that this server's
    processes map now, with those listed before; returns them."""
    names = set(_listed_segments(scratch))
    for pid in [os.getpid(), *descendants(os.getpid())]:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        names.update(re.findall(r"/dev/shm/(psm_\w+)", maps))
    (scratch / SHM_FILE).write_text("".join(f"{name}\n" for name in sorted(names)))
    return sorted(names)


def remove_scratch(scratch: Path, pid: int | None = None, keep_log: bool = False) -> None:
    """Remove what server ``pid`` (default: this process) left: Triton's model folders listed in
    ``scratch``, its shared-memory regions, and ``scratch`` (all but Triton's log with ``keep_log``:
    a failed start's log stays to be read, until the next start)."""
    pid = os.getpid() if pid is None else pid
    for folder in _listed(scratch):
        shutil.rmtree(folder, ignore_errors=True)
    for region in [*SHM.glob(f"pytrtion{pid}-*"), *(SHM / name for name in _listed_segments(scratch))]:
        region.unlink(missing_ok=True)
    if not keep_log:
        shutil.rmtree(scratch, ignore_errors=True)
        return
    for child in scratch.glob("*"):
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name != SCRATCH_LOG:
            child.unlink(missing_ok=True)


def remove_stale(tmp: Path | None = None) -> int:
    """Remove the temporary files of every ``mast-serve`` whose process is gone (killed, or its
    start failed); returns how many servers' files were removed."""
    removed = 0
    for scratch in Path(tmp or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        match = _OURS.match(scratch.name)
        if match and scratch.is_dir() and not _running(int(match.group(1))):
            remove_scratch(scratch, int(match.group(1)))
            removed += 1
    return removed


def _listed(scratch: Path) -> list[Path]:
    """The Triton folders listed in ``scratch`` (only names of Triton's pattern)."""
    try:
        lines = (scratch / FOLDERS_FILE).read_text().split()
    except OSError:
        return []
    return [Path(line) for line in lines if _TRITON_FOLDER.match(line)]


def _listed_segments(scratch: Path) -> list[str]:
    """The tensor-store segments listed in ``scratch`` (only names of their pattern)."""
    try:
        names = (scratch / SHM_FILE).read_text().split()
    except OSError:
        return []
    return [name for name in names if _SEGMENT.match(name)]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True

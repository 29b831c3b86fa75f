"""Per-run workspaces: the directory sandboxed code sees as /workspace, and the file tools.

A run's workspace is `<data dir>/workspaces/<tenant_id>/<run_id>`. It is created on first
use and kept between tool calls of the run, so files written by one `run_python` call
are there for the next one and for `read_file`. The directory is on one machine's disk:
the tools workers sharing that data directory are one *host* (`host_id`), and a run's
workspace calls are routed to its host (activities/tools/workspace_host.py).

The file operations here run in the worker, outside any sandbox, on a directory that
sandboxed code can change at any time (it can create symlinks, FIFOs, deep trees). So
they never resolve a path string: they walk it one component at a time with `openat`
and `O_NOFOLLOW`, refuse every symlink, open nothing that is not a regular file or a
directory, and cap what they read and write.
"""

import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from activities.tools.framework import BadToolArgumentsError, ToolExecutionError
from core.settings import Settings

SANDBOX_UID: Final = 65534
"""Host uid sandboxed code runs as when the worker is root ("nobody")."""

READ_LIMIT: Final = 64 * 1024
"""Bytes `read_file` returns per call; the model pages on with `offset`."""

WRITE_LIMIT: Final = 1024 * 1024
"""Largest content `write_file` accepts."""

LIST_LIMIT: Final = 500
"""Entries `list_files` shows."""

USAGE_SCAN_LIMIT: Final = 200_000
"""Entries `workspace_usage` looks at before giving up (the result is then a lower bound)."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MAX_DEPTH: Final = 32
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def sandbox_owner() -> tuple[int, int] | None:
    """(uid, gid) that must own workspace files, or None to leave ownership as created.

    A root worker runs sandboxes as an unprivileged uid (root's processes are exempt from
    RLIMIT_NPROC, and root should not own what untrusted code writes), so files the worker
    creates in a workspace are handed to that uid. Otherwise everything runs as the
    worker's own uid.
    """
    if os.geteuid() == 0:
        return SANDBOX_UID, SANDBOX_UID
    return None


def _check_id(kind: str, value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(f"{kind} {value!r} cannot name a workspace directory")
    return value


def workspaces_root(settings: Settings) -> Path:
    """Directory holding every workspace."""
    return settings.data_path / "workspaces"


def workspace_path(settings: Settings, tenant_id: str, run_id: str) -> Path:
    """Where the workspace of a run lives (not created).

    Raises:
        ValueError: an id is empty, too long, or holds characters outside
            `[A-Za-z0-9_.-]` (so no id can traverse out of the workspaces directory).
    """
    tenant = _check_id("tenant id", tenant_id)
    run = _check_id("run id", run_id)
    return workspaces_root(settings) / tenant / run


def workspace_for(settings: Settings, tenant_id: str, run_id: str) -> Path:
    """The workspace of a run, created (empty) on first use.

    Parent directories are private to the worker (0700); the workspace itself belongs to
    the uid sandboxed code runs as. Bubblewrap receives the workspace as an open file
    descriptor, so that uid never needs to traverse the parents.

    Raises:
        ValueError: see `workspace_path`.
    """
    path = workspace_path(settings, tenant_id, run_id)
    if path.is_dir() and not path.is_symlink():
        return path
    for parent in (workspaces_root(settings), path.parent):
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if path.is_symlink() or not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory") from None
        return path
    owner = sandbox_owner()
    if owner is not None:
        os.chown(path, *owner)
    return path


_HOST_ID_FILE: Final = ".host-id"


def host_id(settings: Settings) -> str:
    """The id of this data directory's disk: every worker using it shares the id.

    Made on first use and kept in `<data dir>/workspaces/.host-id`, so a worker restarted
    on the same disk serves the workspaces it held before. Workers racing to make it
    agree on one (it is linked into place, never overwritten).
    """
    root = workspaces_root(settings)
    path = root / _HOST_ID_FILE
    try:
        return _read_host_id(path)
    except FileNotFoundError:
        pass
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = root / f"{_HOST_ID_FILE}.{secrets.token_hex(4)}"
    tmp.write_text(secrets.token_hex(8) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read_host_id(path)


def _read_host_id(path: Path) -> str:
    text = path.read_text().strip()
    _check_id("host id", text)
    return text


def holds_workspace(settings: Settings, tenant_id: str, run_id: str) -> bool:
    """Whether this host has the run's workspace (a directory, not a link)."""
    path = workspace_path(settings, tenant_id, run_id)
    return path.is_dir() and not path.is_symlink()


@dataclass(frozen=True)
class StoredWorkspace:
    """A workspace found on disk: its run and when its top level last changed."""

    tenant_id: str
    run_id: str
    modified: float

    def age_hours(self, now: float | None = None) -> float:
        """Hours since the workspace's top level last changed."""
        return ((time.time() if now is None else now) - self.modified) / 3600


def stored_workspaces(settings: Settings) -> Iterator[StoredWorkspace]:
    """Every run workspace on this host (entries that cannot name one are skipped)."""
    root = workspaces_root(settings)
    if not root.is_dir():
        return
    for tenant in sorted(root.iterdir()):
        if not _ID.fullmatch(tenant.name) or tenant.is_symlink() or not tenant.is_dir():
            continue
        for run in sorted(tenant.iterdir()):
            if not _ID.fullmatch(run.name):
                continue
            try:
                info = run.lstat()
            except OSError:
                continue
            yield StoredWorkspace(tenant.name, run.name, info.st_mtime)


def remove_workspace(settings: Settings, tenant_id: str, run_id: str) -> bool:
    """Delete a run's workspace; True when there was one.

    Safe against symlinks planted by sandboxed code (`shutil.rmtree` works on file
    descriptors and never follows links). Directories the code made unreadable are
    made accessible again first when the worker is not root.
    """
    path = workspace_path(settings, tenant_id, run_id)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_symlink():
        path.unlink()
        return True

    def fix_and_retry(func: Callable[..., object], failed: str, exc_info: object) -> None:
        # Only reached without root: a directory the code chmod-ed to 000.
        parent = os.path.dirname(failed)
        os.chmod(parent, 0o700, follow_symlinks=False)
        if os.path.isdir(failed) and not os.path.islink(failed):
            os.chmod(failed, 0o700, follow_symlinks=False)
            shutil.rmtree(failed)
        else:
            os.unlink(failed)

    shutil.rmtree(path, onerror=fix_and_retry)
    return True


# -- usage -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceUsage:
    """Disk use of a workspace: allocated bytes and entries, a lower bound if `partial`."""

    bytes: int
    entries: int
    partial: bool = False


def workspace_usage(workspace: Path) -> WorkspaceUsage:
    """Allocated size of everything under `workspace`, without following any link."""
    total = entries = 0
    stack = [str(workspace)]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    entries += 1
                    if entries > USAGE_SCAN_LIMIT:
                        return WorkspaceUsage(total, entries, partial=True)
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue  # unreadable (chmod 000) or vanished: count what we can
    return WorkspaceUsage(total, entries)


# -- paths -------------------------------------------------------------------------


def split_path(path: str, *, allow_root: bool = False) -> list[str]:
    """The components of a workspace-relative path given by the model.

    `/workspace/...` (what the code sees) is accepted and means the same file; any other
    absolute path, `..`, and NUL bytes are refused.

    Raises:
        BadToolArgumentsError: the path is not inside the workspace.
    """
    text = path.strip()
    if "\x00" in text:
        raise BadToolArgumentsError("The path contains a NUL character.")
    if len(text) > 4096:
        raise BadToolArgumentsError("The path is too long (at most 4096 characters).")
    if text == "/workspace" or text.startswith("/workspace/"):
        text = text[len("/workspace") :]
    elif text.startswith("/") or text.startswith("~"):
        raise BadToolArgumentsError(
            f"'{_short(path)}' is outside the workspace. Use a path relative to the workspace "
            "(for example 'data/result.csv'); run_python and run_shell see it as /workspace."
        )
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadToolArgumentsError(
            f"'{_short(path)}' uses '..': paths must stay inside the workspace."
        )
    if any(len(p.encode()) > 255 for p in parts):
        raise BadToolArgumentsError("A path component is longer than 255 bytes.")
    if not parts and not allow_root:
        raise BadToolArgumentsError("The path names the workspace itself, not a file.")
    return parts


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _display(parts: list[str]) -> str:
    return "/".join(parts) or "."


def _refuse_special(parts: list[str], mode: int) -> None:
    where = _display(parts)
    if stat.S_ISLNK(mode):
        raise ToolExecutionError(
            f"'{where}' is a symbolic link; the file tools do not follow links "
            "(use run_shell to inspect it)."
        )
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise ToolExecutionError(f"'{where}' is not a regular file or directory.")


def _open_dir(
    workspace: Path, parts: list[str], *, create: bool = False, owner: tuple[int, int] | None = None
) -> int:
    """An fd of directory `parts` under `workspace`, walked without following links."""
    fd = os.open(workspace, _DIR_FLAGS)
    try:
        for i, part in enumerate(parts):
            here = parts[: i + 1]
            try:
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise ToolExecutionError(f"'{_display(here)}' does not exist.") from None
                os.mkdir(part, 0o755, dir_fd=fd)
                if owner is not None:
                    os.chown(part, *owner, dir_fd=fd, follow_symlinks=False)
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            _refuse_special(here, info.st_mode)
            if not stat.S_ISDIR(info.st_mode):
                raise ToolExecutionError(f"'{_display(here)}' is a file, not a directory.")
            try:
                # O_NOFOLLOW makes the open itself refuse a link swapped in since the stat.
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise ToolExecutionError(
                    f"'{_display(here)}' cannot be opened ({os.strerror(exc.errno or 0)})."
                ) from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


# -- read / write / list -----------------------------------------------------------


def read_file(workspace: Path, path: str, offset: int = 0, limit: int = READ_LIMIT) -> str:
    """Text of a workspace file, at most `limit` bytes from `offset`, with a paging note.

    Raises:
        BadToolArgumentsError: the path leaves the workspace or the offset is negative.
        ToolExecutionError: missing, a link, a directory, binary, or unreadable.
    """
    parts = split_path(path)
    if offset < 0:
        raise BadToolArgumentsError("offset must be 0 or more.")
    dfd = _open_dir(workspace, parts[:-1])
    try:
        try:
            fd = os.open(
                parts[-1],
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                dir_fd=dfd,
            )
        except FileNotFoundError:
            raise ToolExecutionError(f"'{_display(parts)}' does not exist.") from None
        except OSError:
            info = _lstat_or_none(parts[-1], dfd)
            if info is not None:
                _refuse_special(parts, info.st_mode)
            raise ToolExecutionError(f"'{_display(parts)}' cannot be opened.") from None
    finally:
        os.close(dfd)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ToolExecutionError(
                f"'{_display(parts)}' is a directory; use list_files to see what it holds."
            )
        _refuse_special(parts, info.st_mode)
        size = info.st_size
        if size == 0:
            return "(empty file)"
        if offset >= size:
            raise BadToolArgumentsError(
                f"offset {offset} is at or past the end of '{_display(parts)}' ({size} bytes)."
            )
        data = os.pread(fd, limit + 4, offset)
    finally:
        os.close(fd)
    if b"\x00" in data:
        return f"'{_display(parts)}' is a binary file ({size} bytes); read_file shows text only."
    end = min(len(data), limit)
    if offset + end < size:
        # Stop on a character boundary: the next call starts where this one ends.
        while end > 0 and (data[end] & 0xC0) == 0x80:
            end -= 1
    text = data[:end].decode("utf-8", errors="replace")
    shown_to = offset + end
    if offset == 0 and shown_to >= size:
        return text
    note = f"[bytes {offset}-{shown_to} of {size}"
    if shown_to < size:
        note += f"; call read_file with offset={shown_to} for more"
    return f"{text}\n{note}]"


def _lstat_or_none(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None


def write_file(workspace: Path, path: str, content: str, *, max_workspace_bytes: int) -> str:
    """Create or replace a workspace file with `content` (UTF-8); parents are created.

    The file is written next to its destination and renamed over it, so a reader never
    sees half a file and a link at the destination is never followed.

    Raises:
        BadToolArgumentsError: the path leaves the workspace or the content is too big.
        ToolExecutionError: the destination is a link or a directory, the workspace is
            full, or the write failed.
    """
    parts = split_path(path)
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise BadToolArgumentsError("The content is not valid Unicode text.") from None
    if len(data) > WRITE_LIMIT:
        raise BadToolArgumentsError(
            f"The content is {len(data)} bytes; write_file takes at most {WRITE_LIMIT}. "
            "Generate large files with run_python instead."
        )
    usage = workspace_usage(workspace)
    owner = sandbox_owner()
    dfd = _open_dir(workspace, parts[:-1], create=True, owner=owner)
    try:
        name = parts[-1]
        existing = _lstat_or_none(name, dfd)
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise ToolExecutionError(f"'{_display(parts)}' is a directory.")
            _refuse_special(parts, existing.st_mode)
        replaced = existing.st_blocks * 512 if existing is not None else 0
        if usage.bytes - replaced + len(data) > max_workspace_bytes:
            raise ToolExecutionError(
                f"The workspace is full ({usage.bytes // 1024} KiB used of "
                f"{max_workspace_bytes // 1024} KiB); delete files first."
            )
        tmp = f".{name[:200]}.{secrets.token_hex(4)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
            dir_fd=dfd,
        )  # fmt: skip
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if owner is not None:
                    os.fchown(fd, *owner)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            _unlink_quietly(tmp, dfd)
            raise ToolExecutionError(
                f"Could not write '{_display(parts)}' ({os.strerror(exc.errno or 0)})."
            ) from None
    finally:
        os.close(dfd)
    return f"Wrote {len(data)} bytes to {_display(parts)}."


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def list_files(workspace: Path, path: str = ".", limit: int = LIST_LIMIT) -> str:
    """A recursive listing of a workspace directory: files with sizes, dirs, links.

    Raises:
        BadToolArgumentsError: the path leaves the workspace.
        ToolExecutionError: the path is missing, a file, or a link.
    """
    parts = split_path(path, allow_root=True)
    fd = _open_dir(workspace, parts)
    lines: list[str] = []
    more = 0
    prefix = "/".join(parts)

    def walk(dir_fd: int, rel: str, depth: int) -> None:
        nonlocal more
        try:
            with os.scandir(dir_fd) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            lines.append(f"{rel or '.'}/  (unreadable)")
            return
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            if len(lines) >= limit:
                more += 1
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                lines.append(f"{name}/")
                if depth >= _MAX_DEPTH:
                    lines.append(f"{name}/...  (deeper levels not shown)")
                    continue
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError:
                    lines.append(f"{name}/  (unreadable)")
                    continue
                try:
                    walk(child, name, depth + 1)
                finally:
                    os.close(child)
            elif stat.S_ISREG(info.st_mode):
                lines.append(f"{name}  ({_size(info.st_size)})")
            elif stat.S_ISLNK(info.st_mode):
                try:
                    target = os.readlink(entry.name, dir_fd=dir_fd)
                except OSError:
                    target = "?"
                lines.append(f"{name} -> {_short(target)}  (symbolic link)")
            else:
                lines.append(f"{name}  (special file)")

    try:
        walk(fd, prefix, 0)
    finally:
        os.close(fd)
    if not lines:
        return "(the workspace is empty)" if not parts else f"('{prefix}' is empty)"
    if more:
        lines.append(f"[{more} more entries not shown]")
    return "\n".join(lines)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"

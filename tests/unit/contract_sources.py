"""What the published contract says, read from the places it is written: the comments of the
protos (through protoc's own parser), the error reasons the source raises (through Python's),
and the tables of docs/errors.md and docs/bounds.md."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos"
SOURCE_DIR = ROOT / "src" / "coalition"
ERRORS_DOC = ROOT / "docs" / "errors.md"
BOUNDS_DOC = ROOT / "docs" / "bounds.md"

# FileDescriptorProto field numbers, for SourceCodeInfo paths.
_MESSAGE_TYPE, _SERVICE = 4, 6
_MESSAGE_FIELD, _NESTED_TYPE = 2, 3
_SERVICE_METHOD = 2


def proto_comments(tmp_dir: Path) -> dict[str, str]:
    """The leading comment of every service, RPC, message and field, by full name
    (`coalition.v1.PointsService.Earn`, `coalition.v1.EarnRequest.native_points`)."""
    descriptor_set = tmp_dir / "protos.binpb"
    protos = sorted(str(path.relative_to(PROTO_DIR)) for path in PROTO_DIR.rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            "--include_source_info",
            f"--descriptor_set_out={descriptor_set}",
            *protos,
        ],
        check=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    comments: dict[str, str] = {}
    for file in files:
        by_path = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        for index, service in enumerate(file.service):
            name = f"{file.package}.{service.name}"
            comments[name] = by_path.get((_SERVICE, index), "")
            for method_index, method in enumerate(service.method):
                path = (_SERVICE, index, _SERVICE_METHOD, method_index)
                comments[f"{name}.{method.name}"] = by_path.get(path, "")
        for index, message in enumerate(file.message_type):
            name = f"{file.package}.{message.name}"
            _message_comments(message, name, (_MESSAGE_TYPE, index), by_path, comments)
    return comments


def _message_comments(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    path: tuple[int, ...],
    by_path: dict[tuple[int, ...], str],
    comments: dict[str, str],
) -> None:
    comments[name] = by_path.get(path, "")
    for index, message_field in enumerate(message.field):
        comments[f"{name}.{message_field.name}"] = by_path.get((*path, _MESSAGE_FIELD, index), "")
    for index, nested in enumerate(message.nested_type):
        nested_path = (*path, _NESTED_TYPE, index)
        _message_comments(nested, f"{name}.{nested.name}", nested_path, by_path, comments)


def rpc_names(comments: dict[str, str]) -> list[str]:
    """`coalition.v1.PointsService.Earn` and the like: three dots, the service ends in Service."""
    rpc_pattern = re.compile(r"coalition\.v1\.\w+Service\.\w+")
    return sorted(name for name in comments if rpc_pattern.fullmatch(name))


# --- error reasons raised by the source ------------------------------------------------------

_CODE_OF_CLASS = {
    "CoalitionError": "FAILED_PRECONDITION",
    "InvalidArgument": "INVALID_ARGUMENT",
    "NotFound": "NOT_FOUND",
    "AlreadyExists": "ALREADY_EXISTS",
    "FailedPrecondition": "FAILED_PRECONDITION",
    "PermissionDenied": "PERMISSION_DENIED",
    "Unauthenticated": "UNAUTHENTICATED",
    "Unavailable": "UNAVAILABLE",
}
_DEFAULT_INVALID_ARGUMENT_REASON = "INVALID_FIELD"
_INVALID_ARGUMENT_METADATA = frozenset({"fields"})


@dataclass
class RaisedReason:
    code: str
    metadata_keys: set[str] = field(default_factory=set)
    sites: list[str] = field(default_factory=list)


def raised_reasons() -> dict[str, RaisedReason]:
    """Every reason the source raises, with its code and the union of its metadata keys.

    A reason is raised as the first argument of an error class (or `reason=` of an
    InvalidArgument), in a call or in a subclass's `super().__init__`; `internal_status`
    reports INTERNAL. A reason passed any other way fails here, so none escapes the catalogue.
    """
    trees = {
        path: ast.parse(path.read_text())
        for path in SOURCE_DIR.rglob("*.py")
        if "v1" not in path.relative_to(SOURCE_DIR).parts
    }
    codes = dict(_CODE_OF_CLASS)
    metadata_of_class: dict[str, set[str]] = {}
    own_initialisers = {"CoalitionError"}  # raised only through its subclasses
    for tree in trees.values():  # subclasses of the error classes, e.g. ResourceExhausted
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [base.id for base in node.bases if isinstance(base, ast.Name)]
                if node.name not in _CODE_OF_CLASS and any(base in codes for base in bases):
                    codes[node.name] = _class_code(node) or codes[bases[0]]
                    if any(
                        isinstance(child, ast.FunctionDef) and child.name == "__init__"
                        for child in node.body
                    ):
                        own_initialisers.add(node.name)
                    assigned = _assigned_metadata_keys(node)
                    if assigned is not None:
                        metadata_of_class[node.name] = assigned
    codes = _with_internal(codes)
    found: dict[str, RaisedReason] = {}
    for path, tree in trees.items():
        site = str(path.relative_to(ROOT))
        for class_name, call in _error_calls(tree, codes, own_initialisers):
            reason, keys = _reason_and_keys(call, codes[class_name], site)
            keys = metadata_of_class.get(class_name, keys)
            raised = found.setdefault(reason, RaisedReason(codes[class_name]))
            assert raised.code == codes[class_name], f"{reason} has two codes ({site})"
            raised.metadata_keys |= keys
            raised.sites.append(f"{site}:{call.lineno}")
    return found


def _class_code(node: ast.ClassDef) -> str | None:
    for statement in node.body:
        if (
            isinstance(statement, ast.Assign)
            and [getattr(target, "id", None) for target in statement.targets] == ["code"]
            and isinstance(statement.value, ast.Attribute)
        ):
            return statement.value.attr
    return None


def _assigned_metadata_keys(node: ast.ClassDef) -> set[str] | None:
    for child in ast.walk(node):
        if (
            isinstance(child, ast.Assign)
            and isinstance(child.targets[0], ast.Attribute)
            and child.targets[0].attr == "metadata"
            and isinstance(child.value, ast.Dict)
        ):
            return {key.value for key in child.value.keys if isinstance(key, ast.Constant)}
    return None


def _error_calls(
    tree: ast.Module, codes: dict[str, str], own_initialisers: set[str]
) -> list[tuple[str, ast.Call]]:
    """Calls that raise a reason; a subclass with an `__init__` of its own names its reason
    in the `super().__init__` it calls, not where it is raised."""
    calls: list[tuple[str, ast.Call]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in codes:
            if node.name in _CODE_OF_CLASS:
                continue  # the base classes pass their caller's reason on
            for child in ast.walk(node):
                if (
                    isinstance(child, ast.Call)
                    and isinstance(child.func, ast.Attribute)
                    and child.func.attr == "__init__"
                    and isinstance(child.func.value, ast.Call)
                    and getattr(child.func.value.func, "id", None) == "super"
                ):
                    calls.append((node.name, child))
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in codes and name not in own_initialisers:
                calls.append((name, node))
    return calls


def _reason_and_keys(call: ast.Call, code: str, site: str) -> tuple[str, set[str]]:
    if code == "INVALID_ARGUMENT":
        reasons = [k.value for k in call.keywords if k.arg == "reason"]
        keys = set(_INVALID_ARGUMENT_METADATA)
        for metadata in (k.value for k in call.keywords if k.arg == "metadata"):
            assert isinstance(metadata, ast.Dict), f"metadata not a dict literal: {site}"
            keys |= {key.value for key in metadata.keys if isinstance(key, ast.Constant)}
        if not reasons:
            return _DEFAULT_INVALID_ARGUMENT_REASON, keys
        assert isinstance(reasons[0], ast.Constant), f"a reason that is not a literal: {site}"
        return reasons[0].value, keys
    assert call.args and isinstance(call.args[0], ast.Constant), f"reason not a literal: {site}"
    keys: set[str] = set()
    if len(call.args) > 2:
        metadata = call.args[2]
        assert isinstance(metadata, ast.Dict), f"metadata not a dict literal: {site}"
        keys = {key.value for key in metadata.keys if isinstance(key, ast.Constant)}
    return call.args[0].value, keys


def _with_internal(codes: dict[str, str]) -> dict[str, str]:
    return {**codes, "internal_status": "INTERNAL"}


# --- the tables of the docs ------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueEntry:
    reason: str
    code: str
    rpcs: frozenset[str]  # full RPC names; empty for reasons of every RPC or of the CLI
    every_rpc: bool
    cli_only: bool
    metadata_keys: frozenset[str]
    when: str


EVERY_RPC = "every RPC"
CLI_ONLY = "CLI only"


def catalogue() -> dict[str, CatalogueEntry]:
    """The rows of docs/errors.md: | `REASON` | CODE | RPCs | `metadata`, ... | when |"""
    entries: dict[str, CatalogueEntry] = {}
    for cells in _table_rows(ERRORS_DOC.read_text()):
        if len(cells) != 5 or not re.fullmatch(r"`[A-Z][A-Z0-9_]*`", cells[0]):
            continue
        reason, code, rpcs_cell, metadata_cell, when = cells
        reason = reason.strip("`")
        assert reason not in entries, f"{reason} is catalogued twice"
        rpcs = frozenset(
            f"coalition.v1.{name}" for name in re.findall(r"`(\w+Service\.\w+)`", rpcs_cell)
        )
        entries[reason] = CatalogueEntry(
            reason,
            code,
            rpcs,
            rpcs_cell.strip() == EVERY_RPC,
            rpcs_cell.strip() == CLI_ONLY,
            frozenset(re.findall(r"`(\w+)`", metadata_cell)),
            when,
        )
    return entries


def bounds_table() -> dict[str, str]:
    """The rows of docs/bounds.md: | `coalition.v1.Message.field` | bound | ... |"""
    rows: dict[str, str] = {}
    for cells in _table_rows(BOUNDS_DOC.read_text()):
        match = re.fullmatch(r"`([\w.]+)`", cells[0])
        if match:
            rows[match.group(1)] = cells[1]
    return rows


def _table_rows(markdown: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("|") and not re.fullmatch(r"\|[\s|:-]+\|", line.strip())
    ]


def reasons_named_in(comment: str) -> set[str]:
    """The reasons after `Errors:` in an RPC comment (to the end of the comment)."""
    _, found, listed = comment.partition("Errors:")
    return set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", listed)) if found else set()


def reasons_by_rpc(entries: dict[str, CatalogueEntry]) -> dict[str, set[str]]:
    by_rpc: dict[str, set[str]] = defaultdict(set)
    for entry in entries.values():
        for rpc in entry.rpcs:
            by_rpc[rpc].add(entry.reason)
    return by_rpc

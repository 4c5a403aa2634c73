"""Mutual TLS for the hub: its certificate and key, and the CA its clients' certificates need.

`coalition serve --tls-cert --tls-key --client-ca` exports the three paths for its workers
(paths, never the key itself); every worker reads the files when it starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

TLS_CERT_VARIABLE = "COALITION_TLS_CERT"
TLS_KEY_VARIABLE = "COALITION_TLS_KEY"
CLIENT_CA_VARIABLE = "COALITION_CLIENT_CA"


@dataclass(frozen=True)
class TlsFiles:
    certificate_path: Path
    private_key_path: Path
    client_ca_path: Path

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key_path.read_bytes(), self.certificate_path.read_bytes())],
            root_certificates=self.client_ca_path.read_bytes(),
            require_client_auth=True,  # no client certificate, no connection
        )

    def export(self) -> None:
        os.environ[TLS_CERT_VARIABLE] = str(self.certificate_path)
        os.environ[TLS_KEY_VARIABLE] = str(self.private_key_path)
        os.environ[CLIENT_CA_VARIABLE] = str(self.client_ca_path)


def tls_files(
    certificate: str | None, private_key: str | None, client_ca: str | None
) -> TlsFiles | None:
    """All three paths, or none of them (plaintext); anything in between is refused."""
    given = [certificate, private_key, client_ca]
    if not any(given):
        return None
    if not all(given):
        raise RuntimeError("--tls-cert, --tls-key and --client-ca go together (mutual TLS)")
    files = TlsFiles(Path(certificate or ""), Path(private_key or ""), Path(client_ca or ""))
    for path in (files.certificate_path, files.private_key_path, files.client_ca_path):
        if not path.is_file():
            raise RuntimeError(f"TLS file not found: {path}")
    return files


def tls_files_from_environment() -> TlsFiles | None:
    return tls_files(
        os.environ.get(TLS_CERT_VARIABLE),
        os.environ.get(TLS_KEY_VARIABLE),
        os.environ.get(CLIENT_CA_VARIABLE),
    )

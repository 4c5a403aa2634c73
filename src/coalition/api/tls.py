"""Mutual TLS for the hub: its certificate and key, and the CA its clients' certificates need.

`coalition serve --tls-cert --tls-key --client-ca` checks the three paths (settings.py) and
hands them to every worker (paths, never the key itself); each worker reads the files when it
starts.
"""

from __future__ import annotations

import grpc

from coalition.settings import TlsFiles


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(files.private_key_path.read_bytes(), files.certificate_path.read_bytes())],
        root_certificates=files.client_ca_path.read_bytes(),
        require_client_auth=True,  # no client certificate, no connection
    )

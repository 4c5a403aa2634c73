"""The hub's Python client for partners: typed calls, request ids kept across bounded
retries, and refusals raised as `HubError` with their reason (docs/errors.md)."""

from coalition.client.client import HubClient, new_request_id
from coalition.client.errors import RETRYABLE_CODES, FieldViolation, HubError
from coalition.client.retry import NO_RETRY, RetryPolicy

__all__ = [
    "NO_RETRY",
    "RETRYABLE_CODES",
    "FieldViolation",
    "HubClient",
    "HubError",
    "RetryPolicy",
    "new_request_id",
]

"""The hub process's own bounds, and how every bound relates to the others, asserted in one
place when the server module loads (as TigerBeetle's constants.zig does at compile time).

Each bound of the public API is defined beside the code that enforces it and listed in
docs/bounds.md (checked by tests/unit/test_published_contract.py); what can only be seen
with several of them side by side is asserted here: a batch fits a message, a page is no
larger than its cap, every thread can have a connection, a column holds what the API
accepts. Changing one bound so that another no longer holds stops the hub from starting.
"""

from __future__ import annotations

from coalition.api.events import EVENTS_PER_READ, SUBSCRIPTIONS_MAX, SUBSCRIPTIONS_PER_PARTNER_MAX
from coalition.api.members import DISPLAY_NAME_LENGTH_MAX
from coalition.api.partners import PRINCIPAL_ID_LENGTH_MAX
from coalition.api.promotions import PAGE_BYTES_MAX as PROMOTIONS_PAGE_BYTES_MAX
from coalition.api.promotions import PROMOTION_BYTES_MAX
from coalition.api.requests import (
    IDENTIFIER_LENGTH_MAX,
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    PARTNER_REFERENCE_LENGTH_MAX,
    REQUEST_ID_LENGTH_MAX,
    TEXT_LENGTH_MAX,
)
from coalition.domain.points import POINTS_PER_OPERATION_MAX
from coalition.events.stream import EVENTS_PER_READ_MAX
from coalition.identity.consent import SOURCE_LENGTH_MAX
from coalition.operations import promotion_admin
from coalition.operations.batch_earn import BATCH_EARN_ITEMS_MAX
from coalition.operations.group_commit import GROUP_SIZE_MAX, QUEUE_LENGTH_MAX
from coalition.programme.config import BONUS_POINTS_MAX, REFERRAL_BONUS_POINTS_MAX
from coalition.reconciliation.report import LINE_BYTES_MAX
from coalition.reconciliation.servicer import CONTENT_CHUNK_BYTES_MAX
from coalition.settings import GROUP_SIZE_MAX_BOUND
from coalition.store import engine, schema

# Worker threads: unary and client-streaming calls may hold CALLS_MAX of them, event streams
# SUBSCRIPTIONS_MAX, and the rest stay free for health checks and reflection (api/admission.py).
CALLS_MAX = 16
THREADS_RESERVED = 2
THREADS_PER_PROCESS = CALLS_MAX + SUBSCRIPTIONS_MAX + THREADS_RESERVED
# Calls on one member (or hold, or transaction) at once: a locked member holds at most these,
# and retrying terminals of one shop still fit.
CALLS_PER_MEMBER_MAX = 8
MESSAGE_BYTES_MAX = 4 * 1024 * 1024

# The most one earn of a BatchEarnRequest can take on the wire: its request id (ASCII), its
# member reference (an id or a customer id) and partner reference (printable text, at most
# 4 bytes a character in UTF-8), and a generous allowance for the numbers, the currency, the
# timestamp and the field tags.
EARN_ITEM_NUMBERS_AND_TAGS_BYTES_MAX = 128
EARN_ITEM_BYTES_MAX = (
    REQUEST_ID_LENGTH_MAX
    + 4 * (2 * IDENTIFIER_LENGTH_MAX + PARTNER_REFERENCE_LENGTH_MAX)
    + EARN_ITEM_NUMBERS_AND_TAGS_BYTES_MAX
)

# The most a page's next_page_token and the response's own tags take (api/requests.py: a
# version, a digest and a cursor of at most one id, base64).
PAGE_TOKEN_AND_TAGS_BYTES_MAX = 1024

# Messages: the largest batch and a report chunk with its envelope fit one message.
assert BATCH_EARN_ITEMS_MAX * EARN_ITEM_BYTES_MAX <= MESSAGE_BYTES_MAX, "a full batch fits"
# A page of promotions fits a message, and the largest promotion fits a page (every page
# makes progress); a full page of the largest would not fit a message, hence the byte bound.
assert PROMOTIONS_PAGE_BYTES_MAX + PAGE_TOKEN_AND_TAGS_BYTES_MAX <= MESSAGE_BYTES_MAX
assert PROMOTION_BYTES_MAX <= PROMOTIONS_PAGE_BYTES_MAX, "one promotion fits a page"
assert CONTENT_CHUNK_BYTES_MAX < MESSAGE_BYTES_MAX, "a report chunk and its envelope fit"
assert LINE_BYTES_MAX <= CONTENT_CHUNK_BYTES_MAX, "a report line fits one chunk"

# Pages: the default is a size the cap allows, and every lister caps at the same size.
assert 0 < PAGE_SIZE_DEFAULT <= PAGE_SIZE_MAX
assert promotion_admin.PAGE_SIZE_MAX == PAGE_SIZE_MAX, "promotions page at the API's cap"
assert 0 < EVENTS_PER_READ <= EVENTS_PER_READ_MAX, "a stream reads within the reader's bound"

# Concurrency: a member's calls are some of the process's calls, a partner's streams some of
# its streams, and every worker thread can hold a database connection at once.
assert 0 < CALLS_PER_MEMBER_MAX <= CALLS_MAX
assert 0 < SUBSCRIPTIONS_PER_PARTNER_MAX <= SUBSCRIPTIONS_MAX
assert engine.POOL_SIZE + engine.POOL_OVERFLOW_MAX >= THREADS_PER_PROCESS, "a connection each"

# Group commit: a group is a batch, and the queue holds at least one full group.
assert 0 < GROUP_SIZE_MAX <= GROUP_SIZE_MAX_BOUND <= BATCH_EARN_ITEMS_MAX
assert QUEUE_LENGTH_MAX >= GROUP_SIZE_MAX_BOUND

# Points: a bonus is an operation's worth at most, and the referral default is a bonus.
assert 0 < REFERRAL_BONUS_POINTS_MAX <= BONUS_POINTS_MAX <= POINTS_PER_OPERATION_MAX


def _column_length(table: str, column: str) -> int:
    length = getattr(schema.metadata.tables[table].c[column].type, "length", None)
    assert isinstance(length, int), f"{table}.{column} has a length"
    return length


# Columns: what the API accepts, the database holds (no DataError for a valid request).
assert _column_length("journal_transactions", "request_id") >= REQUEST_ID_LENGTH_MAX
assert _column_length("journal_transactions", "partner_reference") >= PARTNER_REFERENCE_LENGTH_MAX
assert _column_length("journal_transactions", "reason") >= TEXT_LENGTH_MAX
assert _column_length("partner_links", "partner_customer_id") >= IDENTIFIER_LENGTH_MAX
assert _column_length("members", "display_name") >= DISPLAY_NAME_LENGTH_MAX
assert _column_length("api_keys", "principal_id") >= PRINCIPAL_ID_LENGTH_MAX
assert _column_length("consent_events", "source") >= SOURCE_LENGTH_MAX
assert _column_length("member_consents", "source") >= SOURCE_LENGTH_MAX

"""The use cases of the points ledger: earn, burn, reverse, holds, batch earn, quotes and reads.

They gather what a request needs (partner terms, member, tier, promotions, referral), apply
the domain rules and hand the ledger fully computed journal entries. They sit above identity,
programme, referrals and partners, which never import them; ledger/ imports none of them.
"""

from coalition.operations.batch_burn import burn
from coalition.operations.batch_earn import earn
from coalition.operations.holds import (
    AuthorizeCommand,
    CaptureCommand,
    HoldResult,
    VoidCommand,
    authorize_burn,
    capture_burn,
    void_burn,
)
from coalition.operations.points import (
    Balance,
    BurnCommand,
    EarnCommand,
    LedgerResult,
    QuoteCommand,
    QuoteResult,
    ReverseCommand,
    get_balance,
    list_transactions,
    quote,
    reverse,
)

__all__ = [
    "AuthorizeCommand",
    "Balance",
    "BurnCommand",
    "CaptureCommand",
    "EarnCommand",
    "HoldResult",
    "LedgerResult",
    "QuoteCommand",
    "QuoteResult",
    "ReverseCommand",
    "VoidCommand",
    "authorize_burn",
    "burn",
    "capture_burn",
    "earn",
    "get_balance",
    "list_transactions",
    "quote",
    "reverse",
    "void_burn",
]

"""The referral programme (docs/reports.md, "Referrals"): codes, referrals at enrolment, and the
dual reward paid by the coalition when the referred member's first qualifying earn posts."""

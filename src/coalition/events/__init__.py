"""The partner event stream: an outbox written with every ledger change, read by cursor."""

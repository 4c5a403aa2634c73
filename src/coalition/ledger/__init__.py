"""The ledger: journal transactions, postings, accounts, lots. The only code that writes money."""

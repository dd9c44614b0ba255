"""Prices, accounts, the ledger and the settlement consumer."""

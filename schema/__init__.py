"""Contracts shared by every role: wire models, settings, the catalog format,
database tables and migrations. No I/O lives here."""

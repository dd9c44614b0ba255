"""Contracts shared by every role: wire models, settings, the catalog format,
database tables and migrations (with the small module that opens a database
and applies them). No network I/O lives here."""

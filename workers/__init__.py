"""Worker pools: provider adapters, the pool runtime that turns queued jobs
into upstream calls, result events and usage events."""

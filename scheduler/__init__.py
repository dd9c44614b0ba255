"""Routing, priorities and the transports that carry jobs, results and usage."""

"""The HTTP face of the gateway (FastAPI), its auth and error mapping, the
SSE relay, and the ``gatewayz`` command that starts any role."""

"""``python -m ingress`` is ``gatewayz``."""

from ingress.cli import main

main()

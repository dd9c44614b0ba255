"""The operator page's static file (``page.html``), served by ``ingress.routes.operator_ui``."""

"""The balances mirror's two homes, side by side: this process's memory
(embedded) and Redis (distributed, shared by every ingress)."""

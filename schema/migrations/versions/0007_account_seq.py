"""``accounts.seq``: raised by every transaction that moves an account's
credit, so the balances mirror can tell which it has;
``ledger_transactions.seq``: the account's seq a charge committed at, to
resend it to the mirror

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("ledger_transactions", sa.Column("seq", sa.BigInteger))


def downgrade() -> None:
    op.drop_column("ledger_transactions", "seq")
    op.drop_column("accounts", "seq")

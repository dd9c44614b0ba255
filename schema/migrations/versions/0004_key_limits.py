"""per-key spending limits and expiry, key spend counters, the system
account of operator adjustments

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ADJUSTMENTS = "system:adjustments"


def upgrade() -> None:
    # Nullable columns: plain ALTER TABLE … ADD COLUMN on both databases.
    for name in ("daily_limit", "monthly_limit", "total_limit"):
        op.add_column("api_keys", sa.Column(name, sa.BigInteger))
    op.add_column("api_keys", sa.Column("expires_at", sa.Float))
    op.add_column("holds", sa.Column("key_id", sa.Integer))
    op.add_column("holds", sa.Column("key_periods", sa.String(64)))
    op.create_table(
        "key_spend",
        sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), primary_key=True),
        sa.Column("period", sa.String(16), primary_key=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
    )
    accounts = sa.table("accounts", sa.column("name"), sa.column("kind"), sa.column("available"))
    op.bulk_insert(accounts, [{"name": ADJUSTMENTS, "kind": "system", "available": 0}])


def downgrade() -> None:
    connection = op.get_bind()
    posted = connection.execute(sa.text(
        "SELECT count(*) FROM ledger_entries JOIN accounts ON accounts.id = ledger_entries.account_id "
        "WHERE accounts.name = :name AND accounts.kind = 'system'"
    ), {"name": ADJUSTMENTS}).scalar_one()
    if posted:
        raise NotImplementedError("operator adjustments are in the ledger; restore from a backup instead")
    op.execute(sa.text("DELETE FROM accounts WHERE name = :name AND kind = 'system'").bindparams(name=ADJUSTMENTS))
    op.drop_table("key_spend")
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35): a batch copy of api_keys
    # would trip the foreign keys that point at it.
    for table, column in (("holds", "key_periods"), ("holds", "key_id"), ("api_keys", "expires_at"),
                          ("api_keys", "total_limit"), ("api_keys", "monthly_limit"), ("api_keys", "daily_limit")):
        op.drop_column(table, column)

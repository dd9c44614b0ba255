"""double-entry ledger, available/held buckets, holds

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SYSTEM_ACCOUNTS = ("system:grants", "system:revenue", "system:topups")


def upgrade() -> None:
    # Plain ALTERs that both PostgreSQL and SQLite run in place (no table copy).
    op.execute("ALTER TABLE accounts RENAME COLUMN balance TO available")
    op.add_column("accounts", sa.Column("kind", sa.String(10), nullable=False, server_default="user"))
    op.add_column("accounts", sa.Column("held", sa.BigInteger, nullable=False, server_default="0"))
    op.drop_index("ix_ledger_entries_account_id", table_name="ledger_entries")
    op.rename_table("ledger_entries", "ledger_entries_v1")
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("memo", sa.String(500)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("kind", "reference", name="uq_ledger_transactions_kind_reference"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("transaction_id", sa.Integer, sa.ForeignKey("ledger_transactions.id"), nullable=False, index=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
        sa.Column("bucket", sa.String(10), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.CheckConstraint("bucket IN ('available', 'held')", name="ck_ledger_entries_bucket"),
    )
    op.create_table(
        "holds",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        sa.Column("closed", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    accounts = sa.table("accounts", sa.column("id"), sa.column("name"), sa.column("kind"), sa.column("available"))
    op.bulk_insert(accounts, [{"name": name, "kind": "system", "available": 0} for name in SYSTEM_ACCOUNTS])
    _carry_over_single_entries()
    op.drop_table("ledger_entries_v1")


def _carry_over_single_entries() -> None:
    """Each old single-sided entry becomes a balanced transaction: grants
    against system:grants, charges against system:revenue."""
    connection = op.get_bind()
    system_accounts = connection.execute(sa.text("SELECT name, id FROM accounts WHERE kind = 'system'"))
    system: dict[str, int] = {name: account for name, account in system_accounts}
    rows = connection.execute(
        sa.text("SELECT id, account_id, kind, amount, reference FROM ledger_entries_v1 ORDER BY id")
    ).all()
    for old_id, account_id, kind, amount, reference in rows:
        counterpart = system["system:revenue"] if kind == "charge" else system["system:grants"]
        transaction_id = connection.execute(
            sa.text("INSERT INTO ledger_transactions (kind, reference) VALUES (:kind, :reference) RETURNING id"),
            {"kind": kind, "reference": reference if kind == "charge" else f"v1:{old_id}"},
        ).scalar_one()
        for account, value in ((account_id, amount), (counterpart, -amount)):
            connection.execute(
                sa.text("INSERT INTO ledger_entries (transaction_id, account_id, bucket, amount) "
                        "VALUES (:t, :a, 'available', :v)"),
                {"t": transaction_id, "a": account, "v": value},
            )
            connection.execute(
                sa.text("UPDATE accounts SET available = available + :v WHERE id = :a AND kind = 'system'"),
                {"v": value, "a": account},
            )


def downgrade() -> None:
    raise NotImplementedError("the single-entry ledger cannot represent holds; restore from a backup instead")

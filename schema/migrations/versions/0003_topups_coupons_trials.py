"""coupons and expiring credit grants (top-ups need no table: the ledger's
unique (kind, reference) keeps each payment event to one credit)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coupons",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("credits", sa.BigInteger, nullable=False),
        sa.Column("max_redemptions", sa.Integer),
        sa.Column("redemptions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expires_at", sa.Float),
        sa.Column("trial_days", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("credits > 0", name="ck_coupons_credits"),
        sa.CheckConstraint("redemptions >= 0", name="ck_coupons_redemptions"),
    )
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("remaining >= 0 AND remaining <= amount", name="ck_credit_grants_remaining"),
    )


def downgrade() -> None:
    op.drop_table("credit_grants")
    op.drop_table("coupons")

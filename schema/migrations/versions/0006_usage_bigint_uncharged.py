"""usage counts as 64-bit integers (an upstream may report any count);
``uncharged``: what a job's usage cost beyond its hold, which the gateway
absorbed (the hold is the most a job is charged)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COUNTS = ("input_tokens", "output_tokens", "images")


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        for name in COUNTS:
            table.alter_column(name, type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=False)
        table.add_column(sa.Column("uncharged", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        table.drop_column("uncharged")
        for name in COUNTS:
            table.alter_column(name, type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=False)

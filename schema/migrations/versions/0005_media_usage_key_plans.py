"""images counted in usage records (image generation is billed per image);
a key's plan (rate limits and priority class)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("images", sa.Integer, nullable=False, server_default="0"))
    op.add_column("api_keys", sa.Column("plan", sa.String(64)))


def downgrade() -> None:
    op.drop_column("api_keys", "plan")
    op.drop_column("usage_records", "images")

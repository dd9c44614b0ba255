"""Batches: ``batches``, their lines and results, and the batch a usage row
belongs to

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("batch_id", sa.String(64)))
    op.create_index("ix_usage_records_batch_id", "usage_records", ["batch_id"])
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("api", sa.String(16), nullable=False),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
        sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("metadata", sa.Text),
        sa.Column("errors", sa.Text),
        *(sa.Column(name, sa.Integer, nullable=False, server_default="0")
          for name in ("total", "released", "succeeded", "errored", "expired", "canceled")),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        *(sa.Column(name, sa.Float) for name in ("in_progress_at", "finalizing_at", "completed_at", "failed_at",
                                                  "expired_at", "cancelling_at", "cancelled_at")),
        sa.Column("lease_until", sa.Float, nullable=False, server_default="0"),
        sa.Column("chain", sa.String(32)),
        sa.Column("stepped_at", sa.Float),
    )
    op.create_table(
        "batch_lines",
        sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id"), primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("custom_id", sa.String(512), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "batch_results",
        sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id"), primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("custom_id", sa.String(512), nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("body", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("batch_results")
    op.drop_table("batch_lines")
    op.drop_table("batches")
    op.drop_index("ix_usage_records_batch_id", "usage_records")
    op.drop_column("usage_records", "batch_id")

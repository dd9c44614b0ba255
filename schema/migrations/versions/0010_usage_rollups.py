"""``usage_rollups``: per minute, provider, model and account, what the
settled jobs cost and how they went, kept by settlement for the monitoring
API; ``usage_records`` gains each job's outcome (status, error type,
latency, time to first token, queue wait) and when it finished

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# As in schema.tables: a migration keeps its own copy, never the live module's.
LATENCY_BUCKETS = ("latency_le_25", "latency_le_50", "latency_le_100", "latency_le_250", "latency_le_500",
                   "latency_le_1000", "latency_le_2500", "latency_le_5000", "latency_le_10000", "latency_le_30000",
                   "latency_over")
OUTCOME_COLUMNS = ("status", "error_type", "latency_ms", "ttft_ms", "queue_ms")


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as table:
        table.add_column(sa.Column("finished_at", sa.Float))
        table.add_column(sa.Column("status", sa.Integer))
        table.add_column(sa.Column("error_type", sa.String(64)))
        table.add_column(sa.Column("latency_ms", sa.Integer))
        table.add_column(sa.Column("ttft_ms", sa.Integer))
        table.add_column(sa.Column("queue_ms", sa.Integer))
    op.create_index("ix_usage_records_finished_at", "usage_records", ["finished_at"])
    counts = ("requests", "errors", "upstream_errors", "input_tokens", "output_tokens", "cost", "timed", "latency_ms",
              "first_tokens", "ttft_ms", "queue_ms", *LATENCY_BUCKETS)
    op.create_table(
        "usage_rollups",
        sa.Column("minute", sa.BigInteger, primary_key=True),
        sa.Column("provider", sa.String(100), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("account_id", sa.Integer, primary_key=True),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in counts),
    )


def downgrade() -> None:
    op.drop_table("usage_rollups")
    op.drop_index("ix_usage_records_finished_at", "usage_records")
    with op.batch_alter_table("usage_records") as table:
        for name in ("finished_at", *OUTCOME_COLUMNS):
            table.drop_column(name)

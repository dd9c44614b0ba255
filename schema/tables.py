"""Database tables (SQLAlchemy Core). Amounts are integer micro-credits.

The ledger is double-entry: every ledger transaction has entries summing to
zero, across user and system accounts and across each account's two buckets
(``available`` and ``held``). ``accounts.available`` and ``accounts.held``
are caches of those sums, updated in the same database transaction, and
``gatewayz billing reconcile`` recomputes them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

# The largest value an ``Integer`` column holds (PostgreSQL's 4 bytes): its
# ids and counts are range-checked against it before they reach a query.
MAX_INTEGER = 2**31 - 1

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(10), nullable=False, server_default="user"),  # user | system
    Column("available", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    # Raised by every transaction that moves the account's credit: the balances
    # mirror (billing.balances) applies only what its snapshot lacks.
    Column("seq", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    # Spending limits in micro-credits (none: unlimited) and expiry, unix
    # seconds (none: never). A key with any limit counts its spend in key_spend.
    Column("daily_limit", BigInteger),
    Column("monthly_limit", BigInteger),
    Column("total_limit", BigInteger),
    Column("expires_at", Float),
    # The plan (rate limits, priority class) named in the config; none: the default plan.
    Column("plan", String(64)),
)

# One row per money movement; (kind, reference) is unique, so a job is held,
# charged or released at most once, and an external event credits once.
ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", Integer, primary_key=True),
    # grant | topup | charge | refund | hold | release | expire | adjustment
    Column("kind", String(20), nullable=False),
    Column("reference", String(200), nullable=False),
    Column("memo", String(500)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("seq", BigInteger),  # a charge: the seq its account committed at (the balances mirror is told it)
    UniqueConstraint("kind", "reference", name="uq_ledger_transactions_kind_reference"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("transaction_id", Integer, ForeignKey("ledger_transactions.id"), nullable=False, index=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("bucket", String(10), nullable=False),  # available | held
    Column("amount", BigInteger, nullable=False),
    CheckConstraint("bucket IN ('available', 'held')", name="ck_ledger_entries_bucket"),
)

# Open reservations: one per admitted job, closed by its settlement or by the
# sweeper once the job's deadline (plus grace) has passed.
holds = Table(
    "holds",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),  # unix seconds
    Column("closed", Boolean, nullable=False, server_default="0"),
    Column("key_id", Integer),  # the key that made the request (none before revision 0004)
    # The key_spend periods this hold was counted in (space-separated; none:
    # the key had no limits), so settlement and release adjust exactly those.
    Column("key_periods", String(64)),
)

# What each key with limits has spent per period (``total``, ``day:YYYY-MM-DD``,
# ``month:YYYY-MM``, UTC): settled costs plus open holds. Admission adds a hold
# with a conditional upsert (``amount + hold <= limit``).
key_spend = Table(
    "key_spend",
    metadata,
    Column("key_id", Integer, ForeignKey("api_keys.id"), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("amount", BigInteger, nullable=False),
)

# One row per settled job: what was used and what it cost.
usage_records = Table(
    "usage_records",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", String(64), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("provider", String(100), nullable=False),
    Column("model", String(200), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("images", BigInteger, nullable=False, server_default="0"),
    Column("reported", Boolean, nullable=False),
    Column("cost", BigInteger, nullable=False),
    # What the usage cost beyond the job's hold: never charged, absorbed by the gateway.
    Column("uncharged", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("batch_id", String(64), index=True),  # the batch whose line this job ran (none: a request)
    # How the job ended (``schema.jobs.JobOutcome``; none: not reported, before revision 0010),
    # for the request log; ``finished_at`` in unix seconds, which the log filters and pages by.
    Column("finished_at", Float, index=True),
    Column("status", Integer),
    Column("error_type", String(64)),
    Column("latency_ms", Integer),
    Column("ttft_ms", Integer),
    Column("queue_ms", Integer),
)

# Upper bounds (milliseconds) of the latency histogram's buckets in
# ``usage_rollups``; one more bucket counts everything slower. Fixed, so the
# rows of any two minutes add up.
LATENCY_BOUNDS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
LATENCY_BUCKETS = tuple(f"latency_le_{bound}" for bound in LATENCY_BOUNDS_MS) + ("latency_over",)

# Monitoring's aggregates: what the jobs settled in one minute cost and how
# they went, per provider, model and account, added to by each settlement
# batch in its own transaction (``billing.rollups``), so the monitoring API
# reads minutes, never usage rows. ``errors``: any job that ended in an error
# (status >= 400); ``upstream_errors``: those that were the provider's or the
# gateway's fault (>= 500), which availability counts. Latency sums and the
# histogram cover the jobs that reported one; ``ttft`` only those with a
# first token.
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("minute", BigInteger, primary_key=True),  # unix seconds, a multiple of 60
    Column("provider", String(100), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("account_id", Integer, primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("upstream_errors", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
    Column("timed", BigInteger, nullable=False),  # jobs with a latency
    Column("latency_ms", BigInteger, nullable=False),  # their sum
    Column("first_tokens", BigInteger, nullable=False),  # jobs with a time to first token
    Column("ttft_ms", BigInteger, nullable=False),
    Column("queue_ms", BigInteger, nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in LATENCY_BUCKETS),
)

# Codes an operator hands out; redeeming one grants credits once per account.
# ``redemptions`` counts toward ``max_redemptions`` under a conditional UPDATE.
coupons = Table(
    "coupons",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("credits", BigInteger, nullable=False),
    Column("max_redemptions", Integer),  # none: unlimited
    Column("redemptions", Integer, nullable=False, server_default="0"),
    Column("expires_at", Float),  # unix seconds; none: never
    Column("trial_days", Integer),  # set: the credits granted expire this many days after redemption
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("credits > 0", name="ck_coupons_credits"),
    CheckConstraint("redemptions >= 0", name="ck_coupons_redemptions"),
)

# Credits that expire (free trials). ``remaining`` is what is still unspent:
# settlement draws it down first, soonest expiry first, and on expiry what is
# left goes back to system:grants.
credit_grants = Table(
    "credit_grants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),  # unix seconds
    Column("source", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("remaining >= 0 AND remaining <= amount", name="ck_credit_grants_remaining"),
)

# A batch of requests (OpenAI's ``batch_…`` or Anthropic's ``msgbatch_…``).
# Its lines are released in order: ``released`` counts those queued so far,
# and the outcome counters move in the transaction that writes each line's
# result (``batch_results``), so they are exact.
batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("api", String(16), nullable=False),  # openai | anthropic
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(64)),
    Column("status", String(16), nullable=False, index=True),
    Column("metadata", Text),  # JSON object
    Column("errors", Text),  # JSON list: why validation failed
    Column("total", Integer, nullable=False, server_default="0"),
    Column("released", Integer, nullable=False, server_default="0"),
    Column("succeeded", Integer, nullable=False, server_default="0"),
    Column("errored", Integer, nullable=False, server_default="0"),
    Column("expired", Integer, nullable=False, server_default="0"),
    Column("canceled", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),  # unix seconds, as are the others
    Column("expires_at", Float, nullable=False),
    Column("in_progress_at", Float),
    Column("finalizing_at", Float),
    Column("completed_at", Float),
    Column("failed_at", Float),
    Column("expired_at", Float),
    Column("cancelling_at", Float),
    Column("cancelled_at", Float),
    # The orchestrator advancing it holds it until then (two never release at
    # once); ``chain`` names the one chain of steps that may advance it.
    Column("lease_until", Float, nullable=False, server_default="0"),
    Column("chain", String(32)),
    Column("stepped_at", Float),
)

# A batch's requests, one row per line of its input, in order.
batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(64), ForeignKey("batches.id"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", String(512), nullable=False),
    Column("body", Text, nullable=False),  # the request, JSON
)

# What each line ended with: written once (by settlement, or by the
# orchestrator for a line it never released), never changed.
batch_results = Table(
    "batch_results",
    metadata,
    Column("batch_id", String(64), ForeignKey("batches.id"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", String(512), nullable=False),
    Column("job_id", String(64)),  # none: the line never ran
    Column("outcome", String(16), nullable=False),  # succeeded | errored | canceled | expired
    Column("body", Text),  # JSON: the answer, or the error
)

# Uploaded files (the OpenAI Files API; batch input), owned by an account.
# The id sorts by creation (``scheduler.files.new_file_id``), so a page can
# start after a file that is gone. ``complete`` is set once every chunk is
# written: until then the file is invisible, and the sweeper removes an
# upload abandoned half-way.
files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("bytes", BigInteger, nullable=False, server_default="0"),
    Column("chunks", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),  # unix seconds
    Column("expires_at", BigInteger, index=True),  # unix seconds; none: never
    Column("complete", Boolean, nullable=False, server_default="0"),
)

# A file's content, in order: chunk ``seq`` holds bytes ``seq * size`` on.
file_chunks = Table(
    "file_chunks",
    metadata,
    Column("file_id", String(64), ForeignKey("files.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

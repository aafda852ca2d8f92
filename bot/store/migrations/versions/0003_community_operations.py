"""community operations: the persistent grading queue, contests, leaderboard messages,
expiry warnings

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("community_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("thread", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            "fk_submissions_community_id", "communities", ["community_id"], ["id"]
        )
    # Before the one-per-learner index: an old database may hold several unfinished ones.
    op.execute(
        "UPDATE submissions SET status = 'error', error = 'interrupted by an upgrade' "
        "WHERE status IN ('queued', 'running') AND id NOT IN "
        "(SELECT MIN(id) FROM submissions WHERE status IN ('queued', 'running') GROUP BY user_id)"
    )
    op.create_index(
        "one_active_submission_per_user",
        "submissions",
        ["user_id"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )
    op.create_index("submissions_by_status", "submissions", ["status", "id"])
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "contests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("challenge", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("standings_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["community_id"], ["communities.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "leaderboard_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("message_ref", sa.String(length=128), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["community_id"], ["communities.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("community_id", "channel_id"),
    )


def downgrade() -> None:
    op.drop_table("leaderboard_messages")
    op.drop_table("contests")
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("warned_at")
    op.drop_index("submissions_by_status", table_name="submissions")
    op.drop_index("one_active_submission_per_user", table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_constraint("fk_submissions_community_id", type_="foreignkey")
        batch.drop_column("started_at")
        batch.drop_column("attempts")
        batch.drop_column("thread")
        batch.drop_column("community_id")

"""hosted submissions: what a submission was (a URL or code), where its code is, whether it ran
on our equal resources, its logs; contests that rank hosted code only

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
    # Plain ADD COLUMN on both SQLite and PostgreSQL: a batch copy of ``submissions`` would
    # drop the table that ``publications`` references, which SQLite's foreign keys refuse.
    op.add_column(
        "submissions",
        sa.Column("kind", sa.String(length=8), nullable=False, server_default="url"),
    )
    op.add_column("submissions", sa.Column("source", sa.String(length=2048), nullable=True))
    op.add_column(
        "submissions",
        sa.Column("hosted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("submissions", sa.Column("logs_ref", sa.String(length=64), nullable=True))
    op.add_column(
        "contests",
        sa.Column("hosted_only", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("contests") as batch:
        batch.drop_column("hosted_only")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("logs_ref")
        batch.drop_column("hosted")
        batch.drop_column("source")
        batch.drop_column("kind")

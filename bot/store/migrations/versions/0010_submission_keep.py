"""submissions.keep: the learner asked that their hosted code keep running after the grade,
until their environment's TTL

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (see 0005: a batch copy of ``submissions`` breaks its references).
    op.add_column(
        "submissions",
        sa.Column("keep", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("keep")

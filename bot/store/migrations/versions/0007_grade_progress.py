"""grade progress in the store: the phase and fraction a worker reached, which the chat front
end the learner waits on shows (grades run in other processes with a PostgreSQL store)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (as 0005): a batch copy of ``submissions`` is refused by SQLite's
    # foreign keys, since ``publications`` references it.
    op.add_column("submissions", sa.Column("phase", sa.String(length=32), nullable=True))
    op.add_column("submissions", sa.Column("phase_done", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("phase_done")
        batch.drop_column("phase")

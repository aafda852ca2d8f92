"""fair claims and progress messages over replicas: a submission's turn in the fair order
across communities, the engine job grading a submission (a
worker's claim step picks the submission, so the job is not fixed at defer time), and the
front end holding the learner's progress message with the reason another one finished it

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (as 0005, 0007): a batch copy of ``submissions`` is refused by SQLite's
    # foreign keys, since ``publications`` references it.
    op.add_column("submissions", sa.Column("turn", sa.Integer(), nullable=True))
    op.add_column("submissions", sa.Column("job_id", sa.BigInteger(), nullable=True))
    op.add_column("submissions", sa.Column("progress_holder", sa.String(length=64), nullable=True))
    op.add_column("submissions", sa.Column("progress_note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("progress_note")
        batch.drop_column("progress_holder")
        batch.drop_column("job_id")
        batch.drop_column("turn")

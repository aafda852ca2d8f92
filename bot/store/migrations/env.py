"""Alembic environment: migrations run on the connection the Store hands over."""

from alembic import context

from bot.store.models import Base

SCHEDULER_TABLES = {"apscheduler_jobs"}  # APScheduler's job store owns these
# slack-sdk's SQLAlchemy installation and OAuth state stores own these (bot.adapters.slack.app)
SLACK_TABLES = {"slack_installations", "slack_bots", "slack_oauth_states"}


def include_name(name: str | None, type_: str, _parents: dict[str, str | None]) -> bool:
    return not (type_ == "table" and name in SCHEDULER_TABLES | SLACK_TABLES)


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    include_name=include_name,
)
with context.begin_transaction():
    context.run_migrations()

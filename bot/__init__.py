"""The application: the coach's use-cases, chat adapters, scheduler, store, configuration, CLI."""

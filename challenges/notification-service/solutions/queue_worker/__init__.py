"""Notification-service reference design: a JetStream work queue and a retrying worker.

See ``__main__`` for the design and its price; run it with
``python -m challenges.notification-service.solutions.queue_worker --port N``.
"""

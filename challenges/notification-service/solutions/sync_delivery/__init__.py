"""Notification-service reference design: deliver inside the request, 202 once delivered.

See ``__main__`` for the design and its price; run it with
``python -m challenges.notification-service.solutions.sync_delivery --port N``.
"""

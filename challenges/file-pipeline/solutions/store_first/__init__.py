"""File-pipeline reference design: store the original first, process it later from a queue.

See ``__main__`` for the design and its price; run it with
``python -m challenges.file-pipeline.solutions.store_first --port N``.
"""

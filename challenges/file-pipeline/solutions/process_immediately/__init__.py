"""File-pipeline reference design: process the upload inside the request.

See ``__main__`` for the design and its price; run it with
``python -m challenges.file-pipeline.solutions.process_immediately --port N``.
"""

"""Reference designs of the file-pipeline challenge.

* ``store_first``: store the original in S3, record a pending row, publish the id
  on NATS JetStream; a worker processes it from S3 later.
* ``process_immediately``: parse in the request, store the original and the
  finished result, answer with the upload already done.

Run one with ``python -m challenges.file-pipeline.solutions.<name> --port N`` and
the connection bundle in the environment. ``contract`` holds the HTTP contract
and the CSV rules both follow; ``stores`` the table and the bucket.
"""

"""Reference designs of the url-shortener challenge.

* ``cache_aside``: PostgreSQL holds the links, Redis caches redirects; an
  update or delete deletes the cached entry after the database commit.
* ``no_cache``: PostgreSQL only, one primary-key lookup per redirect.

Run one with ``python -m challenges.url-shortener.solutions.<name> --port N``
and the connection bundle in the environment. ``contract`` holds the HTTP
contract both answer identically.
"""

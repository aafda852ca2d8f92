"""Hosted submissions: the learner's code, built and run next to their environment.

- :mod:`.manifest`: ``cruscible.toml`` (a public contract; README "The manifest").
- :mod:`.sources`: folders, ``.zip``/``.tar.gz`` archives and shallow https git clones, capped.
- :mod:`.build`: a venv at ``/app/.venv`` built in a sandbox, cached by the requirements' sha256.
- :mod:`.service`: the run box next to an environment, the balancer, readiness.
- :mod:`.balancer` / :mod:`.upstream`: per-request round robin over the web replicas.
- :mod:`.submission`: one submission's directories, record and kept (masked) logs.
- :mod:`.logs`, :mod:`.wheels`: masking and reading logs; offline wheels of what runs here.

Grading a submission is above this package (``bot.core.hosted``): provisioning imports neither
the grader nor the coach. The sandbox itself is :mod:`provisioning.sandbox`.
"""

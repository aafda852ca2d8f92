"""Hosted submissions: the learner's code, built and run next to their environment.

Modules: :mod:`.manifest` (``cruscible.toml``), :mod:`.sources` (folders, archives, git),
:mod:`.balancer` (per-request round robin over web replicas). The build and run steps sit on
the sandbox (:mod:`provisioning.sandbox`).
"""

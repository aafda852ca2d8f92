"""Hostile code tries to escape the box: who it is, what it can read, where it can connect."""

from __future__ import annotations

import os
import socket
import stat
import sys
from pathlib import Path

from provisioning.sandbox import Box, Limits
from provisioning.sandbox.host import SANDBOX_USER
from tests.sandbox.support import cgroup_dirs_left, listener, probe, run

IDENTITY = r"""
import errno, os, pwd
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\t" in line)
print("user", pwd.getpwuid(os.getuid()).pw_name, os.getuid(), os.geteuid())
print("CapEff", status["CapEff"].strip(), "CapPrm", status["CapPrm"].strip(),
      "CapBnd", status["CapBnd"].strip())
print("NoNewPrivs", status["NoNewPrivs"].strip())
for path in ["/etc/shadow", "/proc/1/root/etc/shadow"]:
    try:
        open(path).read()
        print("READ", path)
    except OSError as exc:
        print("denied", path, type(exc).__name__)
try:
    os.setuid(0)
    print("BECAME ROOT")
except OSError as exc:
    print("setuid refused", errno.errorcode[exc.errno])
for path in ["/usr/bin/x", "/app/x"]:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("readonly", path, exc.strerror)
open("/tmp/scratch", "w").write("ok")
print("tmp writable")
import subprocess
nested = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
print("nested userns", "allowed" if nested.returncode == 0 else "refused")
parent = os.getppid()
while "boxinit" not in open(f"/proc/{parent}/cmdline").read() and parent > 1:
    parent = int(open(f"/proc/{parent}/stat").read().rsplit(")", 1)[1].split()[1])
print("supervisor is", open(f"/proc/{parent}/cmdline").read().replace("\0", " ").strip())
try:
    print("supervisor fds", os.listdir(f"/proc/{parent}/fd"))
except OSError as exc:
    print("supervisor fds", errno.errorcode[exc.errno])
"""


async def test_identity_no_capabilities_no_new_privs(workspace: Path, boxes: list[Box]) -> None:
    box, state, log = await run(workspace, boxes, probe(workspace, "who.py", IDENTITY))
    assert state.reason == "exited 0", log
    root = os.geteuid() == 0
    if root:
        assert f"user {SANDBOX_USER} " in log
        assert box.isolation["user"] == SANDBOX_USER
        assert "CapEff 0000000000000000 CapPrm 0000000000000000" in log
    assert "NoNewPrivs 1" in log
    assert "READ" not in log and "BECAME ROOT" not in log and "WROTE" not in log
    assert "denied /etc/shadow" in log
    assert "setuid refused EPERM" in log or "setuid refused EINVAL" in log  # 0 is unmapped
    assert "readonly /usr/bin/x Read-only file system" in log
    assert "readonly /app/x Read-only file system" in log
    assert "tmp writable" in log
    if "no user namespaces" in box.isolation["privileges"]:
        assert "nested userns refused" in log
    assert "supervisor is" in log and "/box/boxinit.py" in log
    assert "supervisor fds EACCES" in log
    assert box.isolation["net"].startswith("private")


async def test_host_files_are_not_visible(workspace: Path, boxes: list[Box]) -> None:
    # The bot's data directory and another environment's credentials, world-readable on
    # purpose: the box still cannot see them, because they are not in its view at all.
    data = workspace / "data"
    (data / "envs" / "env-other").mkdir(parents=True)
    creds = data / "envs" / "env-other" / "bundle.env"
    creds.write_text("DATABASE_URL=postgresql://u:topsecret@127.0.0.1:5432/db\n")
    creds.chmod(0o644)
    store = data / "cruscible.sqlite3"
    store.write_text("store")
    source = f"""
import os
for path in [{str(creds)!r}, {str(store)!r}, "/work", "/home", "/var/lib",
             "/proc/1/root{creds}"]:
    print(path, "visible" if os.path.exists(path) else "absent")
print("root holds", sorted(os.listdir("/root")) if os.path.exists("/root") else [])
print(open("/proc/mounts").read())
"""
    _box, state, log = await run(workspace, boxes, probe(workspace, "look.py", source))
    assert state.reason == "exited 0", log
    for path in (creds, store, "/work", "/home", "/var/lib"):
        assert f"{path} absent" in log
    # Only the interpreter is mounted from the host's private /root, when it lives there.
    prefix = Path(sys.base_prefix)
    under_root = prefix.parts[2:3] if prefix.parts[1:2] == ("root",) else ()
    assert f"root holds {sorted(under_root)}" in log
    assert "topsecret" not in log


NET = r"""
import errno, socket, sys
def attempt(host, port, payload=None):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        if payload:
            s.sendall(payload)
            return "echo " + s.recv(100).decode()
        return "connected"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))
    finally:
        s.close()
fwd, other = int(sys.argv[1]), int(sys.argv[2])
abstract = socket.socket(socket.AF_UNIX)
try:
    abstract.connect(sys.argv[3].encode().replace(b"@", b"\0", 1))
    print("abstract connected")
except OSError as exc:
    print("abstract", errno.errorcode.get(exc.errno, str(exc)))
print("forwarded", attempt("127.0.0.1", fwd, b"ping-through"))
print("other-port", attempt("127.0.0.1", other))
print("other-loopback", attempt("127.0.0.2", other))
print("outside", attempt("192.0.2.1", 80))
print("interfaces", sorted(name for _, name in socket.if_nameindex()))
"""


async def test_only_forwarded_ports_are_reachable(workspace: Path, boxes: list[Box]) -> None:
    # Two real listeners on host loopback: the environment's resource (forwarded) and
    # "another environment" (or the bot) on a port the box was not given.
    # And an abstract unix socket on the host (no file: only a network namespace scopes it).
    abstract = socket.socket(socket.AF_UNIX)
    name = f"@cruscible-test-{os.getpid()}"
    abstract.bind(b"\0" + name[1:].encode())
    abstract.listen()
    with socket.socket(socket.AF_UNIX) as check:  # reachable from the host's own namespace
        check.connect(b"\0" + name[1:].encode())
    async with listener() as (forwarded, seen), listener() as (other, seen_other):
        command = probe(workspace, "net.py", NET) + f" {forwarded} {other} {name}"
        try:
            _box, state, log = await run(workspace, boxes, command, forwards=(forwarded,))
        finally:
            abstract.close()
    assert state.reason == "exited 0", log
    assert "forwarded echo ping-through" in log
    assert seen == [b"ping-through"]
    assert "other-port ECONNREFUSED" in log
    assert "other-loopback ENETUNREACH" in log or "other-loopback ECONNREFUSED" in log
    assert "outside ENETUNREACH" in log
    assert "interfaces ['lo']" in log
    assert seen_other == []
    assert "abstract ECONNREFUSED" in log


async def test_stop_leaves_nothing(workspace: Path, boxes: list[Box]) -> None:
    spec_limits = Limits(wall_s=30)
    box, _state, _log = await run(workspace, boxes, "sleep 0.2", limits=spec_limits)
    await box.stop()
    await box.stop()  # idempotent
    assert cgroup_dirs_left(box) == []
    inbound = list((box.root / "net").iterdir())
    assert all(stat.S_ISSOCK(p.lstat().st_mode) or p.is_dir() for p in inbound)

"""The supervisor inside a box (standard library only; runs with the staged interpreter).

It reads its plan as JSON on stdin (so the environment, which holds secrets, never touches the
disk), or, with ``--handoff PATH`` (in a container), from the host over that socket file along
with the inbound listening sockets; then:

- for each forwarded port, listens on TCP ``127.0.0.1:<port>`` in the box's private network
  namespace and relays each connection to the socket file ``<net>/out-<port>.sock``, which the
  host relays to its own ``127.0.0.1:<port>``;
- for each replica with a port, accepts on the inherited listening socket ``inbound_fd`` (a
  socket file the host created) and relays to ``127.0.0.1:$PORT`` inside;
- starts every process with ``/bin/sh -c COMMAND`` in ``/app``, its stdout and stderr appended
  to its log file, its OOM score raised (before it starts) so the kernel picks it before this
  supervisor;
- writes ``[{"name", "replica", "pid", "running", "exit_code", "signal", "started", "held",
  "restarts"}]`` to the status file whenever something changes, and exits when every process
  has exited and none is held for a restart;
- with ``control_fd`` (``control_slot`` in a handoff), accepts the host's requests on that
  inherited listening socket (a root-owned socket file the box cannot connect to): one JSON
  line each, answered with one JSON line.

  ``{"kill": NAME}``: SIGKILL the process group of the running replica of ``NAME`` started
  last, mark it ``held`` (killed on request, not a crash) once it has exited →
  ``{"ok": true, "replica": i, "at": <epoch s>}``; ``{"start": NAME}``: start every held
  replica of ``NAME`` again → ``{"ok": true, "replicas": [i], "at": <epoch s>}``; otherwise
  ``{"ok": false, "error": "..."}``. Only this supervisor's own children can be signalled.

Plan: ``{"processes": [{"name", "replica", "command", "env", "port", "inbound_fd", "log"}],
"forwards": [port], "net": dir, "status": path, "control_fd": fd}``.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time

CHUNK = 65536
# The learner's command runs as `sh -c COMMAND` after its OOM score is raised, so that at the
# memory limit the kernel kills the learner's processes before this supervisor (proc(5)).
RAISE_OOM_SCORE = 'echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec /bin/sh -c "$0"'


async def _pump(reader, writer):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass


async def _splice(a, b):
    try:
        await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()


def _forward(path):
    async def handle(reader, writer):
        try:
            other = await asyncio.open_unix_connection(path)
        except OSError:
            writer.close()
            return
        await _splice((reader, writer), other)

    return handle


def _inbound(port):
    async def handle(reader, writer):
        try:
            other = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await _splice((reader, writer), other)

    return handle


class Status:
    def __init__(self, path, processes):
        self.path = path
        self.rows = [
            {
                "name": p["name"],
                "replica": p["replica"],
                "pid": None,
                "running": False,
                "exit_code": None,
                "signal": None,
                "started": False,
                "held": False,
                "restarts": 0,
            }
            for p in processes
        ]

    def write(self):
        data = json.dumps(self.rows).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)


class Supervisor:
    """The box's processes: started, watched, killed and started again on the host's request."""

    def __init__(self, plan, status):
        self.plan = plan
        self.status = status
        self.children = [None] * len(plan["processes"])
        self.started_at = [0.0] * len(plan["processes"])
        self.exited = [asyncio.Event() for _ in plan["processes"]]
        self.settled = asyncio.Event()

    async def spawn(self, i):
        proc, row = self.plan["processes"][i], self.status.rows[i]
        log = os.open(proc["log"], os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            child = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                RAISE_OOM_SCORE,
                proc["command"],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=proc["env"],
                cwd="/app",
                start_new_session=True,  # its own process group: a kill takes its children too
            )
        except OSError as exc:
            os.write(log, f"cannot start: {exc}\n".encode())
            row.update(running=False, exit_code=127)
            return
        finally:
            os.close(log)
        self.children[i], self.started_at[i] = child, time.monotonic()
        self.exited[i].clear()
        row.update(pid=child.pid, running=True, started=True, exit_code=None, signal=None)
        asyncio.get_running_loop().create_task(self.watch(i, child))

    async def watch(self, i, child):
        code = await child.wait()
        row = self.status.rows[i]
        if code < 0:
            row.update(running=False, signal=-code)
        else:
            row.update(running=False, exit_code=code)
        self.status.write()
        self.exited[i].set()
        if not any(r["running"] or r["held"] for r in self.status.rows):
            self.settled.set()

    async def kill(self, name):
        running = [
            i
            for i, r in enumerate(self.status.rows)
            if r["name"] == name and r["running"] and self.children[i] is not None
        ]
        if not running:
            return {"ok": False, "error": f"no running replica of {name}"}
        i = max(running, key=lambda k: self.started_at[k])
        self.status.rows[i]["held"] = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.children[i].pid, signal.SIGKILL)
        await self.exited[i].wait()
        return {"ok": True, "replica": self.status.rows[i]["replica"], "at": time.time()}

    async def start(self, name):
        held = [i for i, r in enumerate(self.status.rows) if r["name"] == name and r["held"]]
        for i in held:  # a kill whose answer the host gave up on: its replica exits first
            await self.exited[i].wait()
        for i in held:
            row = self.status.rows[i]
            row.update(held=False, restarts=row["restarts"] + 1)
            await self.spawn(i)
        self.status.write()
        at = time.time()
        return {"ok": True, "replicas": [self.status.rows[i]["replica"] for i in held], "at": at}

    async def serve(self, reader, writer):
        """One request from the host, one answer (see the module docstring)."""
        try:
            request = json.loads(await reader.readline())
            if "kill" in request:
                answer = await self.kill(str(request["kill"]))
            elif "start" in request:
                answer = await self.start(str(request["start"]))
            else:
                answer = {"ok": False, "error": "unknown request"}
        except (ValueError, TypeError, KeyError) as exc:
            answer = {"ok": False, "error": f"bad request: {exc}"}
        try:
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except OSError:
            pass
        writer.close()


async def _run(plan):
    servers = []
    for port in plan["forwards"]:
        path = os.path.join(plan["net"], f"out-{port}.sock")
        servers.append(await asyncio.start_server(_forward(path), "127.0.0.1", port))
    status = Status(plan["status"], plan["processes"])
    supervisor = Supervisor(plan, status)
    for i, proc in enumerate(plan["processes"]):
        if proc.get("inbound_fd") is not None:
            sock = socket.socket(fileno=proc["inbound_fd"])
            sock.set_inheritable(False)
            servers.append(await asyncio.start_unix_server(_inbound(proc["port"]), sock=sock))
        await supervisor.spawn(i)
    if plan.get("control_fd") is not None:
        sock = socket.socket(fileno=plan["control_fd"])
        sock.set_inheritable(False)
        servers.append(await asyncio.start_unix_server(supervisor.serve, sock=sock))
    status.write()
    if not any(r["running"] for r in status.rows):
        supervisor.settled.set()
    await supervisor.settled.wait()
    for server in servers:
        server.close()


def _undumpable():
    """PR_SET_DUMPABLE 0: the learner's processes (same user) cannot ptrace this supervisor or
    open its /proc entries, so they cannot reach its sockets (prctl(2):
    https://man7.org/linux/man-pages/man2/prctl.2.html). Children are dumpable again after
    execve."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    except (OSError, AttributeError):
        pass


def _handoff(path):
    """The plan and the inbound listening sockets from the host, over the socket file ``path``
    (a container cannot inherit descriptors): an 8-byte big-endian length with the descriptors
    attached (SCM_RIGHTS, unix(7)), then the plan's JSON. Process ``k`` with ``inbound_slot``
    gets descriptor ``inbound_slot``."""
    for _ in range(100):  # the host listens before the box starts; bounded anyway (5 s)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            break
        except OSError:
            sock.close()
            import time

            time.sleep(0.05)
    else:
        raise SystemExit(f"boxinit: cannot reach {path}")
    head, fds, _flags, _addr = socket.recv_fds(sock, 8, 256)
    while len(head) < 8:
        head += sock.recv(8 - len(head))
    size = int.from_bytes(head, "big")
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SystemExit("boxinit: the plan was cut short")
        data += chunk
    sock.close()
    plan = json.loads(data)
    for proc in plan["processes"]:
        if proc.get("inbound_slot") is not None:
            proc["inbound_fd"] = fds[proc["inbound_slot"]]
    if plan.get("control_slot") is not None:
        plan["control_fd"] = fds[plan["control_slot"]]
    return plan


def main():
    _undumpable()
    if len(sys.argv) == 3 and sys.argv[1] == "--handoff":
        plan = _handoff(sys.argv[2])
    else:
        plan = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    os.close(0)
    os.open("/dev/null", os.O_RDONLY)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    asyncio.run(_run(plan))


if __name__ == "__main__":
    main()

"""The contract-check HTTP client against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import socket
import time
from collections.abc import AsyncIterator

import pytest

from grading.http import Client, Exchange, NotHealthy, wait_healthy
from grading.urlguard import Policy, Target, resolve_target
from tests.grading.servers import State, close_at_once, garbage, raw_server, serve_app


@pytest.fixture
async def app() -> AsyncIterator[tuple[str, State]]:
    state = State()
    async with serve_app(state) as url:
        yield url, state


async def target_of(url: str) -> Target:
    return await resolve_target(url, Policy())


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_json_request_and_response(app: tuple[str, State]) -> None:
    url, _ = app
    async with Client(await target_of(url)) as http:
        ex = await http.request("POST", "/echo", json={"key": "abc", "cost": 1})
    assert ex.error is None and ex.status == 200
    data = ex.json()
    assert data["method"] == "POST" and json.loads(data["body"]) == {"key": "abc", "cost": 1}
    assert data["headers"]["Content-Type"] == "application/json"
    assert ex.request_headers == {"Content-Type": "application/json"}
    assert ex.response_headers["Content-Type"].startswith("application/json")
    assert ex.elapsed_ms > 0 and ex.url == f"{url}/echo"


async def test_pinned_address_and_host_header_for_a_name(app: tuple[str, State]) -> None:
    url, _ = app
    port = int(url.rsplit(":", 1)[1])

    async def resolver(host: str, p: int) -> list[str]:
        return ["127.0.0.1"]

    target = await resolve_target(f"http://grader.test:{port}/", Policy(), resolver)
    async with Client(target) as http:
        ex = await http.request("GET", "/echo")
    assert ex.status == 200 and ex.json()["host"] == f"grader.test:{port}"
    assert ex.url == f"http://grader.test:{port}/echo"
    curl = ex.curl()
    assert f"--resolve grader.test:{port}:127.0.0.1" in curl


async def test_base_path_is_prefixed() -> None:
    async with serve_app() as url, Client(await target_of(url + "/status")) as http:
        ex = await http.request("GET", "/418")
    assert ex.status == 418 and ex.url == f"{url}/status/418"


async def test_redirects_are_not_followed(app: tuple[str, State]) -> None:
    url, _ = app
    async with Client(await target_of(url)) as http:
        ex = await http.request("GET", "/redirect")
    assert ex.status == 302 and ex.response_headers["Location"] == "http://10.0.0.1/"
    assert ex.error is None


async def test_timeout_is_reported(app: tuple[str, State]) -> None:
    url, _ = app
    async with Client(await target_of(url), timeout_s=0.2) as http:
        started = time.monotonic()
        ex = await http.request("GET", "/slow?ms=2000")
    assert ex.status is None and ex.error == "timeout after 0.2s"
    assert time.monotonic() - started < 1.0
    with pytest.raises(ValueError, match="no response"):
        ex.json()


async def test_connection_refused_reset_and_garbage() -> None:
    target = await target_of(f"http://127.0.0.1:{free_port()}/")
    async with Client(target, timeout_s=2) as http:
        assert (await http.request("GET", "/")).error == "connection refused"
    async with raw_server(close_at_once) as url, Client(await target_of(url)) as http:
        ex = await http.request("GET", "/")
        assert ex.error is not None and ex.error.startswith("reset")
    async with raw_server(garbage) as url, Client(await target_of(url)) as http:
        ex = await http.request("GET", "/")
        assert ex.status is None and ex.error is not None and ex.error.startswith("bad response")


async def test_body_cap_and_json_errors(app: tuple[str, State]) -> None:
    url, _ = app
    async with Client(await target_of(url), body_limit=50) as http:
        big = await http.request("POST", "/echo", body=b"x" * 500)
        html = await http.request("GET", "/not-json")
        empty = await http.request("GET", "/status/204")
    assert big.truncated and len(big.body) == 50
    with pytest.raises(ValueError, match="cut off"):
        big.json()
    with pytest.raises(ValueError, match="not JSON.*<html>oops"):
        html.json()
    with pytest.raises(ValueError, match="204 with an empty body"):
        empty.json()
    assert html.text(4) == "<htm…"


def test_curl_line_reproduces_the_request() -> None:
    ex = Exchange(
        method="POST",
        url="http://127.0.0.1:8081/v1/check",
        request_headers={"Content-Type": "application/json", "X-Note": "it's"},
        request_body=b'{"key": "a b"}',
    )
    line = ex.curl()
    assert shlex.split(line) == [
        "curl", "-sS", "-i", "-X", "POST", "http://127.0.0.1:8081/v1/check",
        "-H", "Content-Type: application/json", "-H", "X-Note: it's",
        "--data-binary", '{"key": "a b"}',
    ]  # fmt: skip
    assert Exchange("GET", "http://h/x", {}, b"").curl() == "curl -sS -i http://h/x"
    binary = Exchange("PUT", "http://h/x", {}, b"\x00\xff").curl()
    assert binary.startswith("printf '\\x00\\xff' | curl") and "@-" in binary


async def test_curl_line_runs_against_the_server(app: tuple[str, State]) -> None:
    url, _ = app
    async with Client(await target_of(url)) as http:
        ex = await http.request("PUT", "/echo", json={"q": 'it\'s "quoted"'})
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("curl or bash is not installed")
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", ex.curl(), stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 10)
    body = stdout.decode().split("\r\n\r\n", 1)[1]
    assert json.loads(json.loads(body)["body"]) == {"q": 'it\'s "quoted"'}


async def test_wait_healthy_polls_until_200(app: tuple[str, State]) -> None:
    url, state = app
    state.unhealthy_calls = 3
    async with Client(await target_of(url)) as http:
        ex = await wait_healthy(http, deadline_s=5)
    assert ex.status == 200 and state.unhealthy_calls == 0


async def test_wait_healthy_explains_the_last_failure(app: tuple[str, State]) -> None:
    url, state = app
    state.unhealthy_calls = 10_000
    async with Client(await target_of(url)) as http:
        with pytest.raises(NotHealthy, match=r"within 0.5 s \(\d+ attempts\); last: answered 503"):
            await wait_healthy(http, deadline_s=0.5)
    target = await target_of(f"http://127.0.0.1:{free_port()}")
    async with Client(target) as http:
        started = time.monotonic()
        with pytest.raises(NotHealthy, match="last: connection refused"):
            await wait_healthy(http, deadline_s=0.5)
        assert time.monotonic() - started < 1.5


async def test_wait_healthy_gives_up_early_where_nothing_listens() -> None:
    target = await target_of(f"http://127.0.0.1:{free_port()}")
    async with Client(target) as http:
        started = time.monotonic()
        with pytest.raises(NotHealthy, match=r"connection refused for 0.3 s .*nothing listens"):
            await wait_healthy(http, deadline_s=30, refused_s=0.3)
        assert time.monotonic() - started < 10  # not the 30 s deadline

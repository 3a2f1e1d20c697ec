#!/usr/bin/env python3
"""A real MCP client (Python SDK `mcp` 2.3.0) that drives a stdio server through a scenario.

Usage:
    .peers/venv/bin/python tests/peers/py_client.py \
        --scenario everything|time|params|demo|restart-everything|restart-time \
        [--mode auto|legacy] [--timeout 60] -- CMD ARGS...

CMD ARGS is the server command line (the real server, or the bridge wrapping it).
Progress and diagnostics go to stderr; the LAST line on stdout is one JSON summary:
    {"ok": true, "scenario": ..., "checks": [names of passed checks], ...}
or on the first failed check
    {"ok": false, "failed": "<check>", "error": "<message>", "checks": [...passed so far]}
Exit codes: 0 success, 1 a check failed, 2 bad usage / SDK missing, 3 overall timeout.

The restart-* scenarios print one extra stdout line, exactly {"event": "ready"}, at the point where
the harness should kill and restart the relay; they then wait for the line `go` on stdin.

If `mcp` is not importable by the running interpreter, the script re-executes itself with
<repo>/.peers/venv/bin/python (see scripts/install-peers.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

try:
    import anyio
    import mcp_types as types
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
except ImportError as _e:  # pragma: no cover - environment problem
    venv_py = REPO / ".peers" / "venv" / "bin" / "python"
    if venv_py.exists() and Path(sys.prefix).resolve() != venv_py.parents[1].resolve() \
            and not os.environ.get("PY_CLIENT_REEXEC"):
        os.environ["PY_CLIENT_REEXEC"] = "1"
        os.execv(str(venv_py), [str(venv_py), *sys.argv])
    print(f"py_client: cannot import the MCP Python SDK ({_e}); run scripts/install-peers.sh "
          f"and use .peers/venv/bin/python", file=sys.stderr)
    print(json.dumps({"ok": False, "failed": "sdk_import", "error": str(_e), "checks": []}))
    sys.exit(2)

warnings.simplefilter("ignore")  # ping/roots/logging are "deprecated" in 2026-07-28: still what we test

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"py_client [{time.monotonic() - T0:6.2f}s] {msg}", file=sys.stderr, flush=True)


class CheckFailed(Exception):
    def __init__(self, check: str, message: str):
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message


class Report:
    def __init__(self, scenario: str, mode: str):
        self.scenario = scenario
        self.mode = mode
        self.checks: list[str] = []
        self.info: dict[str, Any] = {}
        self.current = "connect"
        self.printed = False
        self.lock = threading.Lock()

    def begin(self, name: str) -> None:
        self.current = name
        log(f"-> {name}")

    def ok(self, name: str | None = None, detail: str = "") -> None:
        name = name or self.current
        self.checks.append(name)
        log(f"ok {name}{(': ' + detail) if detail else ''}")

    def emit(self, ok: bool, **extra: Any) -> None:
        with self.lock:
            if self.printed:
                return
            self.printed = True
            out = {"ok": ok, "scenario": self.scenario, "mode": self.mode, "checks": self.checks,
                   **extra, **self.info, "elapsed_s": round(time.monotonic() - T0, 2)}
            sys.stdout.write(json.dumps(out, default=str) + "\n")
            sys.stdout.flush()


def expect(cond: Any, check: str, message: str) -> None:
    if not cond:
        raise CheckFailed(check, message)


def texts(result: types.CallToolResult) -> list[str]:
    return [c.text for c in result.content if isinstance(c, types.TextContent)]


def first_text(result: types.CallToolResult, check: str) -> str:
    t = texts(result)
    expect(t, check, f"no text content in result: {result.model_dump(mode='json', by_alias=True)}")
    return t[0]


def short(x: Any, n: int = 300) -> str:
    s = x if isinstance(x, str) else json.dumps(x, default=str)
    return s if len(s) <= n else s[:n] + "..."


# --------------------------------------------------------------------------- wire tap
class _TapRead:
    """Delegating read stream that records incoming JSON-RPC messages."""

    def __init__(self, inner: Any, wire: "Wire"):
        self._inner, self._wire = inner, wire

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def receive(self) -> Any:
        item = await self._inner.receive()
        self._wire.record("in", item)
        return item

    def __aiter__(self) -> "_TapRead":
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> "_TapRead":
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)


class _TapWrite:
    def __init__(self, inner: Any, wire: "Wire"):
        self._inner, self._wire = inner, wire

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def send(self, item: Any) -> None:
        self._wire.record("out", item)
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> "_TapWrite":
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)


class Wire:
    """Transport wrapper around stdio_client (or, for a URL, streamable_http_client) that records
    every JSON-RPC message both ways."""

    def __init__(self, params: StdioServerParameters | str):
        self._cm = streamable_http_client(params) if isinstance(params, str) else stdio_client(params)
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def record(self, direction: str, item: Any) -> None:
        msg = getattr(item, "message", None)
        if msg is None:
            return
        try:
            d = msg.model_dump(mode="json", by_alias=True, exclude_none=True)
        except Exception:  # noqa: BLE001 - diagnostics only
            return
        self.messages.append((direction, d))

    async def __aenter__(self) -> tuple[Any, Any]:
        read, write = await self._cm.__aenter__()
        return _TapRead(read, self), _TapWrite(write, self)

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._cm.__aexit__(*exc)

    # queries
    def requests(self, direction: str, method: str | None = None) -> list[dict[str, Any]]:
        return [m for d, m in self.messages if d == direction and "method" in m and "id" in m
                and (method is None or m["method"] == method)]

    def notifications(self, direction: str, method: str) -> list[dict[str, Any]]:
        return [m for d, m in self.messages if d == direction and m.get("method") == method and "id" not in m]


# --------------------------------------------------------------------------- client plumbing
class Peer:
    """Callbacks and notification bookkeeping shared by the scenarios."""

    def __init__(self, nonce: str):
        self.nonce = nonce
        self.tools_changed = anyio.Event()
        self.tools_changed_count = 0
        self.roots_requested = anyio.Event()
        self.sampling_calls: list[types.CreateMessageRequestParams] = []
        self.sampling_ids: list[Any] = []
        self.elicit_calls: list[types.ElicitRequestParams] = []
        self.elicit_ids: list[Any] = []
        self.roots_ids: list[Any] = []
        self.log_messages: list[Any] = []
        self.sampling_reply = f"sampled-by-py-client-{nonce}"
        self.sampling_model = "py-peer-model"
        self.root_uri = f"file:///tmp/mcp-bridge-root-{nonce}"
        self.elicit_name = f"Py Tester {nonce}"

    async def message_handler(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.tools_changed_count += 1
            self.tools_changed.set()
        elif isinstance(message, Exception):
            log(f"transport/session error surfaced: {message!r}")
        await anyio.lowlevel.checkpoint()

    async def logging_callback(self, params: types.LoggingMessageNotificationParams) -> None:
        self.log_messages.append(params.data)

    async def sampling_callback(self, ctx: Any, params: types.CreateMessageRequestParams) -> Any:
        self.sampling_calls.append(params)
        self.sampling_ids.append(ctx.request_id)
        log(f"sampling/createMessage request id={ctx.request_id!r} maxTokens={params.max_tokens}")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=self.sampling_reply),
            model=self.sampling_model,
            stop_reason="endTurn",
        )

    async def elicitation_callback(self, ctx: Any, params: types.ElicitRequestParams) -> Any:
        self.elicit_calls.append(params)
        self.elicit_ids.append(ctx.request_id)
        log(f"elicitation/create request id={ctx.request_id!r}")
        return types.ElicitResult(action="accept",
                                  content={"name": self.elicit_name, "check": True, "integer": 7})

    async def list_roots_callback(self, ctx: Any) -> Any:
        self.roots_ids.append(ctx.request_id)
        self.roots_requested.set()
        log(f"roots/list request id={ctx.request_id!r}")
        return types.ListRootsResult(roots=[types.Root(uri=self.root_uri, name="bridge-test-root")])


def make_client(args: argparse.Namespace, peer: Peer, wire: Wire, *, callbacks: bool) -> Client:
    kw: dict[str, Any] = dict(
        mode=args.mode,
        read_timeout_seconds=args.call_timeout,
        message_handler=peer.message_handler,
        logging_callback=peer.logging_callback,
        client_info=types.Implementation(name="mcp-bridge-py-peer", version="1.0"),
        cache=None,  # every list/read must go over the wire
    )
    if callbacks:
        kw.update(sampling_callback=peer.sampling_callback,
                  elicitation_callback=peer.elicitation_callback,
                  list_roots_callback=peer.list_roots_callback)
    return Client(wire, **kw)  # type: ignore[arg-type]


def check_connected(rep: Report, client: Client, expect_era: str) -> None:
    rep.begin("connect")
    pv = client.protocol_version
    era = "modern" if pv in MODERN_PROTOCOL_VERSIONS else "legacy" if pv in HANDSHAKE_PROTOCOL_VERSIONS else "?"
    info = client.server_info
    rep.info["protocol_version"] = pv
    rep.info["era"] = era
    rep.info["server_info"] = info.model_dump(mode="json") if info else None
    if expect_era != "any":
        expect(era == expect_era, "connect", f"negotiated {pv!r} ({era}); expected the {expect_era} era")
    rep.ok("connect", f"protocol {pv} ({era}), server {info.name if info else None}")


async def call_with_progress(client: Client, name: str, arguments: dict[str, Any],
                             progress: list[tuple[float, float | None, str | None]]) -> types.CallToolResult:
    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))
        log(f"   progress {p}/{total} {message or ''}")

    return await client.call_tool(name, arguments, progress_callback=on_progress)


async def check_cancel(rep: Report, client: Client, wire: Wire, name: str, arguments: dict[str, Any],
                       after_cancel: Any) -> None:
    """Start a progress-reporting call, cancel it after its first progress, check the session goes on."""
    rep.begin("cancel")
    first_progress = anyio.Event()
    outcome: dict[str, Any] = {}

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        first_progress.set()

    async def run(scope: anyio.CancelScope) -> None:
        with scope:
            try:
                outcome["result"] = await client.call_tool(name, arguments, progress_callback=on_progress)
            except MCPError as e:
                outcome["error"] = e
        outcome["cancelled"] = scope.cancelled_caught

    before = len(wire.requests("out", "tools/call"))
    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, scope)
        with anyio.move_on_after(10) as waited:
            await first_progress.wait()
        expect(not waited.cancelled_caught, "cancel", f"no progress from {name} within 10 s; cannot test cancel")
        scope.cancel()
    expect(outcome.get("cancelled") and "result" not in outcome, "cancel",
           f"the call was not cancelled: {outcome}")
    calls = wire.requests("out", "tools/call")[before:]
    expect(calls, "cancel", "the cancelled tools/call was never sent")
    rid = calls[0]["id"]
    # The SDK sends the courtesy notifications/cancelled from a shielded helper: give it a moment.
    with anyio.move_on_after(2):
        while not any(n.get("params", {}).get("requestId") == rid
                      for n in wire.notifications("out", "notifications/cancelled")):
            await anyio.sleep(0.02)
    sent = [n for n in wire.notifications("out", "notifications/cancelled")
            if n.get("params", {}).get("requestId") == rid]
    expect(sent, "cancel", f"client did not send notifications/cancelled for request id {rid!r}")
    rep.info["cancelled_request_id"] = rid
    rep.ok("cancel", f"cancelled tools/call id={rid!r} after first progress; notifications/cancelled sent")

    rep.begin("after_cancel")
    # Late progress for the cancelled token may still arrive (server-everything keeps sending): must be harmless.
    await anyio.sleep(0.3)
    await after_cancel()
    rep.ok("after_cancel", "session still works after the cancel")


# --------------------------------------------------------------------------- scenarios
async def scenario_everything(args: argparse.Namespace, rep: Report, params: StdioServerParameters) -> None:
    peer = Peer(uuid.uuid4().hex[:8])
    wire = Wire(params)
    async with make_client(args, peer, wire, callbacks=True) as client:
        check_connected(rep, client, "legacy")

        rep.begin("tools_list_changed")
        if args.no_list_changed:
            # server-everything over HTTP registers every tool before initialize: nothing changes.
            peer.tools_changed.set()
        with anyio.move_on_after(5):
            await peer.tools_changed.wait()
        expect(peer.tools_changed.is_set(), "tools_list_changed",
               "no notifications/tools/list_changed within 5 s of initialized")
        rep.ok(detail=f"{peer.tools_changed_count} so far")

        rep.begin("roots_request_at_startup")
        with anyio.move_on_after(5):
            await peer.roots_requested.wait()
        expect(peer.roots_requested.is_set(), "roots_request_at_startup",
               "server never sent roots/list (it does ~350 ms after initialized when roots are declared)")
        rep.ok(detail=f"roots/list id={peer.roots_ids[0]!r}")

        rep.begin("list_tools")
        wanted = {"echo", "get-sum", "trigger-long-running-operation", "trigger-sampling-request",
                  "trigger-elicitation-request", "get-roots-list"}
        names: set[str] = set()
        deadline = time.monotonic() + 5
        while True:
            listed = await client.list_tools()
            names = {t.name for t in listed.tools}
            if wanted <= names or time.monotonic() > deadline:
                break
            await anyio.sleep(0.2)
        expect(wanted <= names, "list_tools", f"missing tools {sorted(wanted - names)}; got {sorted(names)}")
        for t in listed.tools:
            expect(isinstance(t.input_schema, dict) and t.input_schema.get("type") == "object", "list_tools",
                   f"tool {t.name} has no object inputSchema")
        rep.info["tool_count"] = len(names)
        rep.ok(detail=f"{len(names)} tools")

        rep.begin("echo")
        msg = f"hello from py {peer.nonce} ✓ \"quoted\""
        r = await client.call_tool("echo", {"message": msg})
        expect(not r.is_error and first_text(r, "echo") == f"Echo: {msg}", "echo", f"got {short(texts(r))}")
        rep.ok()

        rep.begin("get_sum")
        r = await client.call_tool("get-sum", {"a": 2, "b": 3.5})
        t = first_text(r, "get_sum")
        expect(not r.is_error and "is 5.5" in t, "get_sum", f"got {t!r}")
        rep.ok(detail=t)

        rep.begin("progress")
        progress: list[tuple[float, float | None, str | None]] = []
        r = await call_with_progress(client, "trigger-long-running-operation", {"duration": 1, "steps": 4}, progress)
        t = first_text(r, "progress")
        expect(not r.is_error and "completed" in t.lower(), "progress", f"got {t!r}")
        expect([p for p, _, _ in progress] == [1, 2, 3, 4] and all(tt == 4 for _, tt, _ in progress), "progress",
               f"expected progress 1..4 of 4, got {progress}")
        rep.ok(detail=f"{len(progress)} progress notifications")

        rep.begin("resources")
        res = await client.list_resources()
        expect(res.resources, "resources", "resources/list returned no resources")
        target = next((x for x in res.resources if (x.mime_type or "").startswith("text/")), res.resources[0])
        rr = await client.read_resource(str(target.uri))
        expect(rr.contents, "resources", f"resources/read {target.uri} returned no contents")
        c0 = rr.contents[0]
        size = len(getattr(c0, "text", None) or getattr(c0, "blob", "") or "")
        expect(size > 0, "resources", f"resources/read {target.uri}: empty content")
        rep.ok(detail=f"{len(res.resources)} resources; read {target.uri} ({size} chars)")

        rep.begin("prompts")
        pr = await client.list_prompts()
        pnames = {p.name for p in pr.prompts}
        expect("simple-prompt" in pnames, "prompts", f"simple-prompt not in {sorted(pnames)}")
        gp = await client.get_prompt("simple-prompt")
        expect(gp.messages and isinstance(gp.messages[0].content, types.TextContent)
               and "simple prompt" in gp.messages[0].content.text.lower(), "prompts",
               f"unexpected prompt: {short(gp.model_dump(mode='json'))}")
        rep.ok(detail=f"{len(pnames)} prompts")

        async def echo_after() -> None:
            r2 = await client.call_tool("echo", {"message": "after cancel"})
            expect(first_text(r2, "after_cancel") == "Echo: after cancel", "after_cancel", f"got {short(texts(r2))}")

        await check_cancel(rep, client, wire, "trigger-long-running-operation", {"duration": 5, "steps": 10},
                           echo_after)

        rep.begin("sampling")
        r = await client.call_tool("trigger-sampling-request", {"prompt": f"say hi {peer.nonce}", "maxTokens": 42})
        t = "\n".join(texts(r))
        expect(peer.sampling_calls, "sampling", "sampling callback was never invoked")
        sp = peer.sampling_calls[-1]
        sent_text = sp.messages[0].content.text if isinstance(sp.messages[0].content, types.TextContent) else ""
        expect(f"say hi {peer.nonce}" in sent_text and sp.max_tokens == 42, "sampling",
               f"callback got unexpected request: {short(sp.model_dump(mode='json'))}")
        expect(not r.is_error and peer.sampling_reply in t and peer.sampling_model in t, "sampling",
               f"tool result does not carry the callback's answer: {short(t)}")
        rep.ok(detail=f"server request id={peer.sampling_ids[-1]!r}")

        rep.begin("elicitation")
        r = await client.call_tool("trigger-elicitation-request", {})
        t = "\n".join(texts(r))
        expect(peer.elicit_calls, "elicitation", "elicitation callback was never invoked")
        expect(not r.is_error and f"Name: {peer.elicit_name}" in t, "elicitation",
               f"tool result does not carry the callback's answer: {short(t)}")
        rep.ok(detail=f"server request id={peer.elicit_ids[-1]!r}")

        rep.begin("roots")
        r = await client.call_tool("get-roots-list", {})
        t = "\n".join(texts(r))
        expect(not r.is_error and peer.root_uri in t, "roots",
               f"tool result does not list the callback's root {peer.root_uri}: {short(t)}")
        rep.ok()

        rep.begin("ping")
        await client.send_ping()
        rep.ok()

        # Diagnostics: the ids the server used for its own requests vs. the ids the client used.
        server_ids = [m["id"] for m in wire.requests("in")]
        client_ids = [m["id"] for m in wire.requests("out")]
        rep.info["server_request_ids"] = server_ids
        rep.info["client_request_ids_overlapping"] = sorted({i for i in server_ids if i in client_ids}, key=str)
        rep.info["tools_list_changed_count"] = peer.tools_changed_count


async def scenario_time(args: argparse.Namespace, rep: Report, params: StdioServerParameters) -> None:
    peer = Peer(uuid.uuid4().hex[:8])
    wire = Wire(params)
    async with make_client(args, peer, wire, callbacks=False) as client:
        want_era = args.expect_era or ("modern" if args.mode == "auto" else "legacy")
        check_connected(rep, client, want_era)
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            expect(wire.requests("out", "server/discover") and not wire.requests("out", "initialize"), "connect",
                   "modern era but the wire shows no server/discover (or an initialize)")
        else:
            expect(wire.requests("out", "initialize"), "connect", "legacy era but no initialize on the wire")

        rep.begin("list_tools")
        listed = await client.list_tools()
        names = {t.name for t in listed.tools}
        expect({"get_current_time", "convert_time"} <= names, "list_tools", f"got {sorted(names)}")
        rep.ok(detail=", ".join(sorted(names)))

        rep.begin("get_current_time")
        r = await client.call_tool("get_current_time", {"timezone": "UTC"})
        expect(not r.is_error, "get_current_time", f"isError: {short(texts(r))}")
        data = r.structured_content or json.loads(first_text(r, "get_current_time"))
        expect(data.get("timezone") == "UTC", "get_current_time", f"got {short(data)}")
        when = datetime.fromisoformat(data["datetime"])
        skew = abs((when - datetime.now(timezone.utc)).total_seconds())
        expect(when.utcoffset() == timedelta(0) and skew < 300, "get_current_time",
               f"datetime {data['datetime']} is not now in UTC (skew {skew:.0f} s)")
        rep.ok(detail=data["datetime"])

        rep.begin("convert_time")
        r = await client.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                    "target_timezone": "Asia/Tokyo"})
        expect(not r.is_error, "convert_time", f"isError: {short(texts(r))}")
        data = r.structured_content or json.loads(first_text(r, "convert_time"))
        src = datetime.fromisoformat(data["source"]["datetime"])
        tgt = datetime.fromisoformat(data["target"]["datetime"])
        expect((src.hour, src.minute) == (12, 0) and (tgt.hour, tgt.minute) == (21, 0)
               and data.get("time_difference") == "+9.0h" and src == tgt, "convert_time",
               f"12:00 UTC should be 21:00 in Tokyo (+9.0h): {short(data)}")
        rep.ok(detail=f"{data['source']['datetime']} -> {data['target']['datetime']}")

        rep.begin("tool_error")
        r = await client.call_tool("get_current_time", {"timezone": "Not/AZone"})
        expect(r.is_error and "Invalid timezone" in " ".join(texts(r)), "tool_error",
               f"expected an isError result for a bad timezone, got {short(r.model_dump(mode='json'))}")
        rep.ok()

        rep.begin("unknown_tool")
        try:
            r = await client.call_tool("no_such_tool", {})
            expect(r.is_error, "unknown_tool", "calling an unknown tool succeeded")
            how = "isError result"
        except MCPError as e:
            how = f"JSON-RPC error {e.code}"
        rep.ok(detail=how)

        rep.begin("after_error")
        r = await client.call_tool("get_current_time", {"timezone": "Europe/London"})
        expect(not r.is_error, "after_error", f"session broken after an error: {short(texts(r))}")
        rep.ok()

        if client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            rep.begin("ping")
            await client.send_ping()
            rep.ok()


async def scenario_time_policy(args: argparse.Namespace, rep: Report, params: StdioServerParameters) -> None:
    """mcp-server-time behind a relay policy that hides convert_time (either era)."""
    peer = Peer(uuid.uuid4().hex[:8])
    wire = Wire(params)
    async with make_client(args, peer, wire, callbacks=False) as client:
        want_era = args.expect_era or ("modern" if args.mode == "auto" else "legacy")
        check_connected(rep, client, want_era)

        rep.begin("hidden_in_list")
        listed = await client.list_tools()
        names = {t.name for t in listed.tools}
        expect("get_current_time" in names and "convert_time" not in names, "hidden_in_list",
               f"got {sorted(names)}")
        rep.ok(detail=", ".join(sorted(names)))

        rep.begin("hidden_call_refused")
        try:
            r = await client.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                        "target_timezone": "Asia/Tokyo"})
            expect(r.is_error and "Unknown tool" in " ".join(texts(r)), "hidden_call_refused",
                   f"the hidden tool answered: {short(r.model_dump(mode='json'))}")
            how = "isError result"
        except MCPError as e:
            expect(e.code == -32602 and "Unknown tool" in str(e), "hidden_call_refused",
                   f"unexpected error {e.code}: {e}")
            how = f"JSON-RPC error {e.code}"
        rep.ok(detail=how)

        rep.begin("allowed_call")
        r = await client.call_tool("get_current_time", {"timezone": "UTC"})
        expect(not r.is_error, "allowed_call", f"isError: {short(texts(r))}")
        rep.ok()


async def scenario_demo(args: argparse.Namespace, rep: Report, params: StdioServerParameters) -> None:
    peer = Peer(uuid.uuid4().hex[:8])
    peer.sampling_reply = "pong-from-client"
    wire = Wire(params)
    async with make_client(args, peer, wire, callbacks=True) as client:
        check_connected(rep, client, args.expect_era or ("legacy" if args.mode == "legacy" else "any"))

        rep.begin("list_tools")
        listed = await client.list_tools()
        by_name = {t.name: t for t in listed.tools}
        expect({"echo", "add", "slow", "sample"} <= set(by_name), "list_tools", f"got {sorted(by_name)}")
        for n in ("echo", "add", "slow", "sample"):
            t = by_name[n]
            expect(t.description and isinstance(t.input_schema, dict) and t.input_schema.get("type") == "object",
                   "list_tools", f"tool {n} lacks a description or an object inputSchema")
        rep.ok(detail=", ".join(sorted(by_name)))

        rep.begin("echo")
        msg = f"hello demo {peer.nonce} ✓ \"q\" \\ \n line2"
        r = await client.call_tool("echo", {"text": msg})
        expect(not r.is_error and texts(r) == [msg], "echo", f"got {short(texts(r))}")
        rep.ok()

        rep.begin("add")
        r = await client.call_tool("add", {"a": 2, "b": 3})
        expect(not r.is_error and texts(r) == ["5"], "add", f"2+3 gave {short(texts(r))}")
        r = await client.call_tool("add", {"a": 1, "b": 1.5})
        expect(not r.is_error and texts(r) == ["2.5"], "add", f"1+1.5 gave {short(texts(r))}")
        rep.ok()

        rep.begin("slow_progress")
        progress: list[tuple[float, float | None, str | None]] = []
        r = await call_with_progress(client, "slow", {"steps": 4, "delay_ms": 50}, progress)
        expect(not r.is_error and texts(r) == ["done after 4 steps"], "slow_progress", f"got {short(texts(r))}")
        expect([p for p, _, _ in progress] == [1, 2, 3, 4] and all(tt == 4 for _, tt, _ in progress),
               "slow_progress", f"expected progress 1..4 of 4, got {progress}")
        rep.ok(detail=f"{len(progress)} progress notifications")

        rep.begin("sample")
        r = await client.call_tool("sample", {"prompt": f"ping {peer.nonce}"})
        expect(peer.sampling_calls, "sample", "sampling callback was never invoked")
        sp = peer.sampling_calls[-1]
        sent = sp.messages[0].content.text if isinstance(sp.messages[0].content, types.TextContent) else None
        expect(sent == f"ping {peer.nonce}" and sp.messages[0].role == "user" and sp.max_tokens == 100, "sample",
               f"unexpected sampling request: {short(sp.model_dump(mode='json'))}")
        expect(not r.is_error and texts(r) == ["client said: pong-from-client"], "sample",
               f"got {short(r.model_dump(mode='json'))}")
        rep.ok(detail=f"server request id={peer.sampling_ids[-1]!r}")

        rep.begin("unknown_tool")
        try:
            r = await client.call_tool("no-such-tool", {})
            expect(r.is_error, "unknown_tool", f"unknown tool succeeded: {short(texts(r))}")
            how = "isError result"
        except MCPError as e:
            expect(e.code == -32602 and "no-such-tool" in e.message, "unknown_tool",
                   f"expected -32602 'unknown tool: no-such-tool', got {e.code} {e.message!r}")
            how = f"JSON-RPC error {e.code} {e.message!r}"
        rep.ok(detail=how)

        rep.begin("echo_after_error")
        r = await client.call_tool("echo", {"text": "still alive"})
        expect(texts(r) == ["still alive"], "echo_after_error", f"got {short(texts(r))}")
        rep.ok()

        async def echo_after() -> None:
            r2 = await client.call_tool("echo", {"text": "after cancel"})
            expect(texts(r2) == ["after cancel"], "after_cancel", f"got {short(texts(r2))}")

        await check_cancel(rep, client, wire, "slow", {"steps": 50, "delay_ms": 100}, echo_after)

        if client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            rep.begin("ping")
            await client.send_ping()
            rep.ok()

        server_ids = [m["id"] for m in wire.requests("in")]
        rep.info["server_request_ids"] = server_ids


# --------------------------------------------------------------------------- relay restart scenarios
READY_LINE = json.dumps({"event": "ready"})  # exactly {"event": "ready"}
RELAY_UNAVAILABLE = -32011  # bridge-client: the relay connection was lost / could not be made


class _StdinLines:
    """Reads stdin lines on a daemon thread (never blocks the event loop, never blocks exit)."""

    def __init__(self) -> None:
        self.lines: list[str | None] = []  # None = EOF
        self._lock = threading.Lock()
        self._started = False

    def _run(self) -> None:
        while True:
            try:
                line = sys.stdin.readline()
            except Exception:  # noqa: BLE001 - a closed/broken stdin counts as EOF
                line = ""
            with self._lock:
                self.lines.append(line if line else None)
            if not line:
                return

    async def next_line(self) -> str | None:
        if not self._started:
            self._started = True
            threading.Thread(target=self._run, name="py_client-stdin", daemon=True).start()
        while True:
            with self._lock:
                if self.lines:
                    return self.lines.pop(0) if self.lines[0] is not None else None
            await anyio.sleep(0.02)


async def ready_and_wait_for_go(rep: Report, args: argparse.Namespace) -> float:
    """Print the ready event on stdout, wait for the harness to write `go` on stdin; returns the time of go."""
    rep.begin("wait_for_go")
    sys.stdout.write(READY_LINE + "\n")
    sys.stdout.flush()
    log(f"printed {READY_LINE} on stdout; waiting up to {args.go_timeout:.0f} s for 'go' on stdin")
    stdin = _StdinLines()
    with anyio.move_on_after(args.go_timeout) as waited:
        while True:
            line = await stdin.next_line()
            expect(line is not None, "wait_for_go", "stdin closed before the line 'go' arrived")
            if line.strip() == "go":
                break
            log(f"ignoring stdin line {line.rstrip()!r} (waiting for 'go')")
    expect(not waited.cancelled_caught, "wait_for_go", f"no 'go' on stdin within {args.go_timeout:.0f} s of ready")
    rep.ok("wait_for_go")
    return time.monotonic()


def _unavailable(e: MCPError) -> bool:
    return e.code == RELAY_UNAVAILABLE or bool(re.search(r"unavailable|relay", e.message or "", re.I))


async def after_restart(rep: Report, args: argparse.Namespace, check: str, fn: Any) -> Any:
    """Run one request after the restart: per-attempt timeout, retried (up to --retries, 0.5 s apart)
    only while the bridge says the relay is unavailable. Adds the retries to `retries_after_restart`."""
    rep.begin(check)
    attempt = 0
    while True:
        try:
            with anyio.fail_after(args.call_timeout):
                result = await fn()
            break
        except TimeoutError:
            raise CheckFailed(check, f"no answer within {args.call_timeout:.0f} s (attempt {attempt + 1})") from None
        except MCPError as e:
            if not _unavailable(e) or attempt >= args.retries:
                raise CheckFailed(check, f"JSON-RPC error {e.code}: {e.message} (attempt {attempt + 1}, "
                                         f"{attempt} retries)") from None
            attempt += 1
            rep.info["retries_after_restart"] = rep.info.get("retries_after_restart", 0) + 1
            rep.info.setdefault("retry_errors", []).append(f"{check}: {e.code} {e.message}")
            log(f"   {check}: relay unavailable ({e.code} {e.message}); retry {attempt}/{args.retries} in 0.5 s")
            await anyio.sleep(0.5)
    return result


async def scenario_restart_everything(args: argparse.Namespace, rep: Report, params: StdioServerParameters) -> None:
    """server-everything through the bridge while the harness kills and restarts the relay."""
    peer = Peer(uuid.uuid4().hex[:8])
    wire = Wire(params)
    rep.info["retries_after_restart"] = 0
    async with make_client(args, peer, wire, callbacks=True) as client:
        check_connected(rep, client, args.expect_era or "legacy")

        rep.begin("echo")
        r = await client.call_tool("echo", {"message": f"before restart {peer.nonce}"})
        expect(not r.is_error and first_text(r, "echo") == f"Echo: before restart {peer.nonce}", "echo",
               f"got {short(texts(r))}")
        rep.ok()

        rep.begin("inflight_started")
        first_progress = anyio.Event()
        done = anyio.Event()
        outcome: dict[str, Any] = {}

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            outcome["progress"] = outcome.get("progress", 0) + 1
            if not first_progress.is_set():
                log(f"   in-flight call: first progress {p}/{total}")
            first_progress.set()

        async def inflight(scope: anyio.CancelScope) -> None:
            with scope:
                try:
                    # The SDK's own read timeout raises MCPError -32001 (bridge codes are -32010..-32012, distinct)
                    # "tool exited": keep it out of the way and time the call ourselves.
                    outcome["result"] = await client.call_tool(
                        "trigger-long-running-operation", {"duration": 30, "steps": 30},
                        read_timeout_seconds=3600, progress_callback=on_progress)
                except MCPError as e:
                    outcome["error"] = e
                except Exception as e:  # noqa: BLE001 - reported as the check's outcome
                    outcome["exception"] = e
                outcome["at"] = time.monotonic()
                done.set()

        scope = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(inflight, scope)
            with anyio.move_on_after(10):
                while not (first_progress.is_set() or done.is_set()):
                    await anyio.sleep(0.02)
            expect(first_progress.is_set(), "inflight_started",
                   f"no progress from trigger-long-running-operation within 10 s (outcome so far: {outcome})")
            rep.ok("inflight_started", "first progress received; the call is running at the tool")

            go_at = await ready_and_wait_for_go(rep, args)

            rep.begin("inflight_failed")
            with anyio.move_on_after(args.inflight_timeout):
                await done.wait()
            if not done.is_set():
                scope.cancel()  # sends notifications/cancelled; the session goes on
        after = round(outcome["at"] - go_at, 2) if "at" in outcome else None
        rep.info["inflight_progress_count"] = outcome.get("progress", 0)
        rep.info["inflight_outcome_s_after_go"] = after  # negative: it failed before go (at the kill)
        expect(done.is_set(), "inflight_failed",
               f"the in-flight call was still pending {args.inflight_timeout:.0f} s after go "
               f"(no error for a request lost with the relay)")
        if "error" in outcome:
            e = outcome["error"]
            rep.info["inflight_error"] = e.message
            rep.info["inflight_error_code"] = e.code
            how = f"JSON-RPC error {e.code}: {e.message}"
        elif "exception" in outcome:
            e = outcome["exception"]
            rep.info["inflight_error"] = f"{type(e).__name__}: {e}"
            raise CheckFailed("inflight_failed", f"the in-flight call raised {type(e).__name__}: {e}")
        else:
            r = outcome["result"]
            expect(r.is_error, "inflight_failed",
                   f"the in-flight call SUCCEEDED across a relay restart: {short(texts(r))}")
            rep.info["inflight_error"] = "isError: " + " ".join(texts(r))
            how = f"isError result: {short(' '.join(texts(r)))}"
        rep.ok("inflight_failed", f"{how} ({after} s after go)")

        async def echo() -> None:
            r = await client.call_tool("echo", {"message": f"after restart {peer.nonce}"})
            expect(not r.is_error and first_text(r, "echo_after_restart") == f"Echo: after restart {peer.nonce}",
                   "echo_after_restart", f"got {short(texts(r))}")

        await after_restart(rep, args, "echo_after_restart", echo)
        rep.ok()

        async def get_sum() -> str:
            r = await client.call_tool("get-sum", {"a": 40, "b": 2.5})
            t = first_text(r, "get_sum_after_restart")
            expect(not r.is_error and "is 42.5" in t, "get_sum_after_restart", f"got {t!r}")
            return t

        t = await after_restart(rep, args, "get_sum_after_restart", get_sum)
        rep.ok(detail=t)

        async def list_tools() -> set[str]:
            listed = await client.list_tools()
            names = {t.name for t in listed.tools}
            expect({"echo", "get-sum", "trigger-long-running-operation"} <= names, "list_after_restart",
                   f"got {sorted(names)}")
            return names

        names = await after_restart(rep, args, "list_after_restart", list_tools)
        rep.ok(detail=f"{len(names)} tools")
        rep.info["tools_list_changed_count"] = peer.tools_changed_count


async def scenario_restart_time(args: argparse.Namespace, rep: Report, params: StdioServerParameters) -> None:
    """mcp-server-time through the bridge while the harness kills and restarts the relay."""
    peer = Peer(uuid.uuid4().hex[:8])
    wire = Wire(params)
    rep.info["retries_after_restart"] = 0
    async with make_client(args, peer, wire, callbacks=False) as client:
        check_connected(rep, client, args.expect_era or ("modern" if args.mode == "auto" else "legacy"))
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            expect(wire.requests("out", "server/discover") and not wire.requests("out", "initialize"), "connect",
                   "modern era but the wire shows no server/discover (or an initialize)")
        else:
            expect(wire.requests("out", "initialize"), "connect", "legacy era but no initialize on the wire")

        def check_now_utc(r: types.CallToolResult, check: str) -> str:
            expect(not r.is_error, check, f"isError: {short(texts(r))}")
            data = r.structured_content or json.loads(first_text(r, check))
            when = datetime.fromisoformat(data["datetime"])
            skew = abs((when - datetime.now(timezone.utc)).total_seconds())
            expect(data.get("timezone") == "UTC" and when.utcoffset() == timedelta(0) and skew < 300, check,
                   f"not now in UTC (skew {skew:.0f} s): {short(data)}")
            return data["datetime"]

        rep.begin("get_current_time")
        r = await client.call_tool("get_current_time", {"timezone": "UTC"})
        rep.ok(detail=check_now_utc(r, "get_current_time"))

        await ready_and_wait_for_go(rep, args)

        async def now() -> str:
            return check_now_utc(await client.call_tool("get_current_time", {"timezone": "UTC"}),
                                 "time_after_restart")

        rep.ok(detail=await after_restart(rep, args, "time_after_restart", now))

        async def convert() -> str:
            r = await client.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                        "target_timezone": "Asia/Tokyo"})
            expect(not r.is_error, "convert_after_restart", f"isError: {short(texts(r))}")
            data = r.structured_content or json.loads(first_text(r, "convert_after_restart"))
            tgt = datetime.fromisoformat(data["target"]["datetime"])
            expect((tgt.hour, tgt.minute) == (21, 0) and data.get("time_difference") == "+9.0h",
                   "convert_after_restart", f"12:00 UTC should be 21:00 in Tokyo (+9.0h): {short(data)}")
            return f"{data['source']['datetime']} -> {data['target']['datetime']}"

        rep.ok(detail=await after_restart(rep, args, "convert_after_restart", convert))


async def scenario_params(args: argparse.Namespace, rep: Report, params: StdioServerParameters) -> None:
    """The test fixture's `region` tool (an x-mcp-header argument) over 2026-07-28 HTTP: the SDK
    mirrors the argument into `Mcp-Param-Region` itself, and a relay that checks it answers."""
    peer = Peer(uuid.uuid4().hex[:8])
    wire = Wire(params)
    async with make_client(args, peer, wire, callbacks=False) as client:
        check_connected(rep, client, args.expect_era or "modern")

        rep.begin("list_tools")
        listed = await client.list_tools()
        region = next((t for t in listed.tools if t.name == "region"), None)
        expect(region is not None, "list_tools", f"no region tool in {[t.name for t in listed.tools]}")
        rep.ok()

        for check, arguments, want in [
            ("ascii_param", {"region": "us-west1", "query": "q1"}, "us-west1|q1"),
            ("encoded_param", {"region": " Hello, 世界 ", "query": "q2"}, " Hello, 世界 |q2"),
            ("absent_param", {"query": "q3"}, "-|q3"),
        ]:
            rep.begin(check)
            r = await client.call_tool("region", arguments)
            expect(not r.is_error, check, f"isError: {short(texts(r))}")
            got = first_text(r, check)
            expect(got == want, check, f"expected {want!r}, got {got!r}")
            rep.ok(detail=got)


SCENARIOS = {"everything": scenario_everything, "time": scenario_time, "params": scenario_params,
             "time-policy": scenario_time_policy, "demo": scenario_demo,
             "restart-everything": scenario_restart_everything, "restart-time": scenario_restart_time}
RESTART_SCENARIOS = {"restart-everything", "restart-time"}


def find_check_failed(exc: BaseException) -> CheckFailed | None:
    if isinstance(exc, CheckFailed):
        return exc
    for sub in getattr(exc, "exceptions", ()) or ():
        found = find_check_failed(sub)
        if found:
            return found
    for nxt in (exc.__cause__, exc.__context__):
        if nxt is not None and nxt is not exc and isinstance(nxt, CheckFailed):
            return nxt
    return None


def leaf(exc: BaseException) -> BaseException:
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv and not {"-h", "--help"} & set(argv):
        print("usage: py_client.py --scenario everything|time|params|demo|restart-everything|restart-time "
              "[--mode auto|legacy] [--url http://...] -- CMD ARGS...",
              file=sys.stderr)
        return 2
    split = argv.index("--") if "--" in argv else len(argv)
    opts, cmd = argv[:split], argv[split + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--mode", choices=["auto", "legacy"], default=None,
                    help="connect mode (default: auto for time and restart-time, legacy otherwise)")
    ap.add_argument("--expect-era", choices=["modern", "legacy", "any"], default=None,
                    help="era the connection must negotiate (default: time/auto=modern, legacy=legacy)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="overall timeout in seconds (default 60; 120 for the restart-* scenarios)")
    ap.add_argument("--no-list-changed", action="store_true",
                    help="everything: do not expect tools/list_changed (server-everything over HTTP)")
    ap.add_argument("--call-timeout", type=float, default=20.0, help="per-request timeout (default 20)")
    ap.add_argument("--go-timeout", type=float, default=60.0,
                    help="restart-*: how long to wait for 'go' on stdin after printing ready (default 60)")
    ap.add_argument("--inflight-timeout", type=float, default=20.0,
                    help="restart-everything: how long after 'go' the in-flight call may take to fail (default 20)")
    ap.add_argument("--retries", type=int, default=5,
                    help="restart-*: retries (0.5 s apart) of a call the bridge answers 'relay unavailable' (default 5)")
    ap.add_argument("--url", default=None,
                    help="connect over MCP Streamable HTTP to this URL instead of running CMD ARGS")
    args = ap.parse_args(opts)
    if not cmd and not args.url:
        ap.error("missing server command after -- (or --url)")
    if args.mode is None:
        args.mode = "auto" if args.scenario in ("time", "time-policy", "params", "restart-time") else "legacy"
    if args.timeout is None:
        args.timeout = 120.0 if args.scenario in RESTART_SCENARIOS else 60.0

    rep = Report(args.scenario, args.mode)
    rep.info["server_cmd"] = cmd

    # Last-resort watchdog: whatever happens (a hung close, a stuck child), never outlive the budget.
    def watchdog() -> None:
        log(f"watchdog: overall timeout {args.timeout + 15:.0f} s exceeded, exiting hard")
        rep.emit(False, failed=rep.current, error="hard timeout (watchdog)")
        os._exit(3)

    wd = threading.Timer(args.timeout + 15, watchdog)
    wd.daemon = True
    wd.start()

    # Both SDKs pass only HOME/LOGNAME/PATH/SHELL/TERM/USER to the child by default; hand the whole
    # environment on so a bridge under test sees its config (tokens, RUST_LOG, ...).
    params: Any = args.url or StdioServerParameters(command=cmd[0], args=cmd[1:], env=dict(os.environ))

    async def run() -> None:
        with anyio.fail_after(args.timeout):
            await SCENARIOS[args.scenario](args, rep, params)

    log(f"scenario {args.scenario} (mode {args.mode}) against: {args.url or ' '.join(cmd)}")
    try:
        anyio.run(run)
    except BaseException as exc:  # noqa: BLE001 - report everything as one JSON line
        if isinstance(exc, KeyboardInterrupt):
            raise
        cf = find_check_failed(exc)
        if cf is not None:
            log(f"FAILED {cf.check}: {cf.message}")
            rep.emit(False, failed=cf.check, error=cf.message)
            return 1
        lf = leaf(exc)
        if isinstance(lf, TimeoutError):
            msg = f"timed out (overall {args.timeout} s / per call {args.call_timeout} s) during {rep.current}"
            code = 3
        elif isinstance(lf, MCPError):
            msg = f"JSON-RPC error {lf.code}: {lf.message} during {rep.current}"
            code = 1
        else:
            msg = f"{type(lf).__name__}: {lf} during {rep.current}"
            code = 1
        log(f"FAILED {rep.current}: {msg}")
        traceback.print_exception(lf, file=sys.stderr)
        rep.emit(False, failed=rep.current, error=msg)
        return code
    rep.emit(True)
    log(f"PASS {args.scenario}: {len(rep.checks)} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())

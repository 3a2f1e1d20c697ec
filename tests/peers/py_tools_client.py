#!/usr/bin/env python3
"""The Python SDK client (`mcp` 2.3.0) over stdio against the tools of py_http_server.py, for
bridge-client's HTTP upstream tests (Streamable HTTP or the legacy HTTP+SSE transport).

Usage:
    .peers/venv/bin/python tests/peers/py_tools_client.py [--mode auto|legacy] -- CMD ARGS...

It lists the tools, calls `add` and `shout` (whose log notification must arrive in `legacy`
mode), runs ten
`echo` calls at once, and prints one JSON line on stdout:
    {"ok": true, "protocol_version": ..., "tools": [...], "logs": [...]}
or {"ok": false, "error": "..."} (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters


def text(r: Any) -> str:
    return r.content[0].text


async def run(args: argparse.Namespace, cmd: list[str]) -> dict[str, Any]:
    logs: list[Any] = []

    async def logging_callback(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=dict(os.environ))
    async with Client(params, mode=args.mode, read_timeout_seconds=20,
                      logging_callback=logging_callback) as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        assert {"add", "echo", "shout"} <= set(tools), tools
        assert text(await client.call_tool("add", {"a": 2, "b": 40})) == "42"
        assert text(await client.call_tool("shout", {"text": "hi"})) == "HI"
        results: dict[int, str] = {}

        async def echo(i: int) -> None:
            results[i] = text(await client.call_tool("echo", {"text": f"e{i}"}))

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(echo, i)
        assert results == {i: f"e{i}" for i in range(10)}, results
        if args.mode == "legacy":
            # In `auto` mode the SDK client does not hand log notifications to the callback
            # (the same against the server directly): checked in `legacy` mode only.
            assert any("shouting hi" in str(m) for m in logs), logs
        return {"ok": True, "protocol_version": client.protocol_version, "tools": tools,
                "logs": [str(m) for m in logs]}


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv:
        print("usage: py_tools_client.py [--mode auto|legacy] -- CMD ARGS...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["auto", "legacy"], default="legacy")
    args = ap.parse_args(argv[:cut])
    async def guarded() -> dict[str, Any]:
        with anyio.fail_after(60):
            return await run(args, argv[cut + 1:])

    try:
        out = anyio.run(guarded)
    except BaseException as exc:  # noqa: BLE001 - one JSON line whatever happened
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc!r}"}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

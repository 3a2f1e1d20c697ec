#!/usr/bin/env python3
"""The client under test for the official conformance suite's client scenarios
(`@modelcontextprotocol/conformance` 0.1.16 `client --command "CMD"`): the Python SDK client
(`mcp` 2.3.0, stdio, legacy handshake) with bridge-client between it and the suite's mock
server. The suite runs `CMD URL` with MCP_CONFORMANCE_SCENARIO (and, for pre-registration,
MCP_CONFORMANCE_CONTEXT holding the client id and secret) in the environment.

Usage (as the suite's CMD):
    .peers/venv/bin/python tests/peers/conformance_client.py --bridge BRIDGE_CLIENT URL

bridge-client gets what a user would give it: a Client ID Metadata Document URL (the one the
suite's mock authorization server expects), the pre-registered client from the context, the
stand-in browser (tests/peers/oauth_browser.py: follows redirects to the loopback callback) as
`$BROWSER`, and a scratch XDG_RUNTIME_DIR for its sign-in lock. Tokens land in the real user
keyring under the mock server's (random-port) issuer; `bridge-client logout URL` removes them
at the end.

What the client does, by scenario: `initialize` connects; `tools_call` lists the tools and
calls `add_numbers`; `elicitation-sep1034-client-defaults` calls the tool that asks the
client for a form (the server's request travels through bridge-client; this client accepts
it with the schema's defaults); `sse-retry` calls `test_reconnection`, whose answer comes on the stream
resumed with Last-Event-ID; `auth/*` lists the tools and calls the first (which needs the
sign-in) — or, with CONFORMANCE_CALL_FIRST=1 in the environment, calls `test-tool` at once. Prints one JSON line on stdout ({"ok": true|false, ...}); exit 1 when a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters

HERE = os.path.dirname(os.path.abspath(__file__))
# The client id the suite's auth/basic-cimd scenario expects (a URL it never fetches).
CIMD_URL = "https://conformance-test.local/client-metadata.json"


def text(r: Any) -> str:
    return r.content[0].text


async def accept_with_defaults(_ctx: Any, params: types.ElicitRequestParams) -> Any:
    """The user accepts the form as offered: every field with a default gets it (SEP-1034)."""
    schema = getattr(params, "requested_schema", None) or {}
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    content = {k: v["default"] for k, v in props.items() if isinstance(v, dict) and "default" in v}
    return types.ElicitResult(action="accept", content=content)


async def session(cmd: list[str], env: dict[str, str], scenario: str) -> dict[str, Any]:
    params = StdioServerParameters(command=cmd[0], args=cmd[1:], env=env)
    steps: list[str] = []
    async with Client(params, mode="legacy", read_timeout_seconds=40,
                      elicitation_callback=accept_with_defaults) as client:
        steps.append("initialize")
        out: dict[str, Any] = {"protocol_version": client.protocol_version}
        if scenario == "initialize":
            return {**out, "steps": steps}
        if os.environ.get("CONFORMANCE_CALL_FIRST") and scenario.startswith("auth/"):
            # The first authenticated request is the call (its 401 and then its 403 for more
            # scope both meet the same request).
            r = await client.call_tool("test-tool", {})
            assert not r.is_error, r
            steps.append("tools/call")
            return {**out, "steps": steps}
        tools = [t.name for t in (await client.list_tools()).tools]
        steps.append("tools/list")
        out["tools"] = tools
        if scenario == "tools_call":
            r = text(await client.call_tool("add_numbers", {"a": 5, "b": 3}))
            assert "8" in r, r
        elif scenario == "elicitation-sep1034-client-defaults":
            r = text(await client.call_tool("test_client_elicitation_defaults", {}))
            assert "completed" in r, r
        elif scenario == "sse-retry":
            r = text(await client.call_tool("test_reconnection", {}))
            assert "successfully" in r, r
        elif tools:
            r = await client.call_tool(tools[0], {})
            assert not r.is_error, r
        steps.append("tools/call")
        return {**out, "steps": steps}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bridge", required=True, help="the bridge-client binary")
    ap.add_argument("url")
    args = ap.parse_args()
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")

    scratch = tempfile.mkdtemp(prefix="conformance-client-")
    env = dict(os.environ)
    env.pop("MCP_BRIDGE_TOKEN", None)
    env["XDG_RUNTIME_DIR"] = scratch
    env.setdefault("BROWSER", f"{sys.executable} {os.path.join(HERE, 'oauth_browser.py')}")
    bridge = [args.bridge, args.url, "--no-keyring", "--oauth-timeout", "20",
              "--oauth-client-metadata-url", CIMD_URL]
    if context.get("client_id"):
        bridge += ["--oauth-client-id", context["client_id"]]
        if context.get("client_secret"):
            env["MCP_BRIDGE_OAUTH_CLIENT_SECRET"] = context["client_secret"]

    async def guarded() -> dict[str, Any]:
        with anyio.fail_after(50):
            return await session(bridge, env, scenario)

    try:
        out = {"ok": True, "scenario": scenario, **anyio.run(guarded)}
    except BaseException as exc:  # noqa: BLE001 - one JSON line whatever happened
        if isinstance(exc, KeyboardInterrupt):
            raise
        out = {"ok": False, "scenario": scenario, "error": f"{type(exc).__name__}: {exc!r}"}
    if scenario.startswith("auth/"):
        # Leave nothing behind in the user keyring.
        done = subprocess.run([args.bridge, "logout", args.url], env=env, timeout=20,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        out["logout"] = done.returncode
        if done.returncode != 0:
            print(f"conformance_client: logout failed: {done.stderr.strip()}", file=sys.stderr)
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A small MCP server (Python SDK `mcp` 2.3.0, MCPServer) over Streamable HTTP or the legacy
HTTP+SSE transport, on loopback, for bridge-client's HTTP upstream tests.

Usage:
    .peers/venv/bin/python tests/peers/py_http_server.py --transport streamable-http|sse [--port N]

It binds 127.0.0.1 (port 0 = one the OS picks), then prints exactly one stdout line
`{"port": N}` and serves until killed. Tools: `add(a, b)`, `echo(text)`, `shout(text)`,
which sends a log notification (`notifications/message`) before its result, `region(region)`,
and `annotate_region()`, which re-registers `region` with `x-mcp-header: Region` on its
argument: from then on a 2026-07-28 `tools/call` of `region` without a matching
`Mcp-Param-Region` header is refused with `-32020` (HeaderMismatch) by the SDK.
"""

from __future__ import annotations

import argparse
from typing import Annotated
import json
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field


def build() -> MCPServer:
    server = MCPServer("py-http-test")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Echoes the text."""
        return text

    @server.tool()
    async def shout(text: str, ctx: Context) -> str:
        """Logs the text, then returns it upper-cased."""
        await ctx.info(f"shouting {text}")
        return text.upper()

    def region(region: str) -> str:
        """Says which region it ran in."""
        return f"ran in {region}"

    def region_annotated(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        """Says which region it ran in (the region also travels as the Mcp-Param-Region header)."""
        return f"ran in {region}"

    server.add_tool(region, name="region")

    @server.tool()
    def annotate_region() -> str:
        """Re-registers `region` with an x-mcp-header annotation on its argument."""
        server.remove_tool("region")
        server.add_tool(region_annotated, name="region")
        return "annotated"

    return server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    server = build()
    if args.transport == "sse":
        app = server.sse_app()
    else:
        app = server.streamable_http_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    sys.exit(main())

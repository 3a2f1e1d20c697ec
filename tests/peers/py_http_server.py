#!/usr/bin/env python3
"""A small MCP server (Python SDK `mcp` 2.3.0, MCPServer) over Streamable HTTP or the legacy
HTTP+SSE transport, on loopback, for bridge-client's HTTP upstream tests.

Usage:
    .peers/venv/bin/python tests/peers/py_http_server.py --transport streamable-http|sse [--port N]

It binds 127.0.0.1 (port 0 = one the OS picks), then prints exactly one stdout line
`{"port": N}` and serves until killed. Tools: `add(a, b)`, `echo(text)`, and `shout(text)`,
which sends a log notification (`notifications/message`) before its result.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer


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

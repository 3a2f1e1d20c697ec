#!/usr/bin/env python3
"""A Streamable HTTP MCP server (Python standard library only) whose SSE answers break
mid-call, for bridge-client's resume tests.

Usage:
    python3 tests/peers/sse_cut_server.py [--port N]

It binds 127.0.0.1 (port 0 = one the OS picks), prints exactly one stdout line `{"port": N}`
and serves until killed:
- POST `initialize`: a JSON answer with `Mcp-Session-Id`; notifications and responses: 202;
- POST `tools/call` (any tool): an SSE stream with `retry: 20`, then a
  `notifications/progress` event with id `<n>-1`; when the arguments hold `"cut": true` the
  connection is then cut (no end of the chunked body), else the result follows as event
  `<n>-2` and the stream ends. The result's text is the arguments' `text`;
- GET with `Last-Event-ID: <n>-1`: an SSE stream with the rest (event `<n>-2`, the result);
  a GET without it: 405 (no standalone stream); DELETE: 200.
stderr gets one line per cut and per resume.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SESSION = "cut-session-1"
LOCK = threading.Lock()
# The answer each broken stream still owes, by stream number.
OWED: dict[str, bytes] = {}
COUNTER = [0]


def event(ev_id: str, msg: dict) -> bytes:
    return f"id: {ev_id}\ndata: {json.dumps(msg)}\n\n".encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:  # quiet
        pass

    def reply(self, status: int, body: bytes = b"", ctype: str | None = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Mcp-Session-Id", SESSION)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        msg = json.loads(self.rfile.read(length))
        method = msg.get("method")
        if "id" not in msg or method is None:
            return self.reply(202)
        if method == "initialize":
            result = {
                "protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "sse-cut", "version": "1"},
            }
            body = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result})
            return self.reply(200, body.encode(), "application/json")
        if method != "tools/call":
            err = {"code": -32601, "message": f"no method {method}"}
            body = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": err})
            return self.reply(200, body.encode(), "application/json")
        params = msg.get("params", {})
        args = params.get("arguments", {})
        token = params.get("_meta", {}).get("progressToken", msg["id"])
        with LOCK:
            COUNTER[0] += 1
            n = COUNTER[0]
        progress = {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": token, "progress": 1, "total": 2},
        }
        result = {
            "jsonrpc": "2.0",
            "id": msg["id"],
            "result": {"content": [{"type": "text", "text": str(args.get("text", ""))}]},
        }
        self.start_sse()
        self.chunk(b"retry: 20\n\n" + event(f"{n}-1", progress))
        if args.get("cut"):
            with LOCK:
                OWED[str(n)] = event(f"{n}-2", result)
            print(f"cut stream {n}", file=sys.stderr, flush=True)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.chunk(event(f"{n}-2", result))
        self.end_chunks()

    def do_GET(self) -> None:  # noqa: N802
        last = self.headers.get("Last-Event-ID")
        if not last:
            return self.reply(405)
        stream = last.split("-")[0]
        with LOCK:
            owed = OWED.get(stream)
        if owed is None:
            return self.reply(400)
        print(f"resumed stream {stream} after {last}", file=sys.stderr, flush=True)
        self.start_sse()
        self.chunk(owed)
        self.end_chunks()

    def do_DELETE(self) -> None:  # noqa: N802
        self.reply(200)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())

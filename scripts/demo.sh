#!/usr/bin/env bash
# The main job on a fresh machine: builds mcp-bridge, starts the relay on its built-in default
# config (the demo tool, on loopback), and runs bridge-client against it the way an IDE would:
# initialize, list tools, call two of them. Prints each JSON-RPC response; stops the relay.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --workspace --bins --locked --quiet
log=$(mktemp)
relay_pid=
cleanup() {
  [[ -n "$relay_pid" ]] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
  rm -f "$log"
}
trap cleanup EXIT

# No --config: the built-in default. Port 0 picks a free port; the relay prints the URL.
target/debug/bridge-server --listen 127.0.0.1:0 2>"$log" &
relay_pid=$!
url=
for _ in $(seq 100); do
  url=$(grep -o 'ws://[0-9.:]*/mcp/demo' "$log" | head -n1 || true)
  [[ -n "$url" ]] && break
  sleep 0.05
done
[[ -n "$url" ]] || { echo "demo: the relay did not start:" >&2; cat "$log" >&2; exit 1; }
echo "relay (pid $relay_pid) is serving the demo tool at $url" >&2
echo "IDE -> bridge-client $url:" >&2

{
  echo '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"demo.sh","version":"1"}}}'
  echo '{"jsonrpc":"2.0","method":"notifications/initialized"}'
  echo '{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
  echo '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello through the bridge"}}}'
  echo '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"add","arguments":{"a":20,"b":22}}}'
} | target/debug/bridge-client "$url"
echo "bridge-client exited $?; the relay's log:" >&2
sed 's/^/  relay| /' "$log" >&2

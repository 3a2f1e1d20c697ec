#!/usr/bin/env bash
# Runs the whole test suite on a fresh clone: installs nginx, bubblewrap and prometheus (Debian
# packages, for the scale-out, hosting and observability tests) and the pinned third-party MCP
# peers into .peers/ (reused when present), builds the binaries the end-to-end tests drive,
# then runs every test in the workspace. Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The system packages the tests need, installed when missing:
# nginx for tests/tests/e2e/scale_out/ (the load balancer in front of two relays; it runs
# deploy/nginx/nginx.conf). Debian package `nginx` (bookworm: 1.22.1; on trixie and later
# nginx-light/-core are transitional and `nginx` is the package). The tests start it
# themselves, on loopback; where a service manager is allowed to start packages' services, the
# package also starts its default site on port 80, which the tests do not use.
# bubblewrap (`bwrap`) for tests/tests/e2e/hosting.rs: the per-tool sandbox (Debian package
# `bubblewrap`; bookworm: 0.8.0).
# prometheus (`prometheus` and `promtool`) for tests/tests/e2e/observability/: a real
# Prometheus scraping two relays runs every dashboard query, and promtool checks and tests the
# alert rules (Debian package `prometheus`; bookworm: 2.42.0). The tests start their own
# instance on loopback; where a service manager may start packages' services, the package also
# starts one on port 9090, which the tests do not use.
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
echo "test.sh: nginx: $("$nginx_bin" -v 2>&1); $(bwrap --version); $(prometheus --version 2>&1 | head -1)"
scripts/install-peers.sh
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"

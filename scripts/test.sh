#!/usr/bin/env bash
# Runs the whole test suite on a fresh clone: installs the pinned third-party MCP peers into
# .peers/ (reused when present), builds the binaries the end-to-end tests drive, then runs
# every test in the workspace. Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-peers.sh
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"

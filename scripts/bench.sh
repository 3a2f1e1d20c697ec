#!/usr/bin/env bash
# The whole-chain benchmark: builds release binaries and prints the table (see README,
# "Performance"). BENCH_QUICK=1 for a short smoke run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked --workspace --bins
exec target/release/bench

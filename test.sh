#!/usr/bin/env bash
# Every test of the project, as CI runs it:
#   - unit, integration and doc tests of both crates (the allocation-count test among them),
#   - the API docs, with broken links refused,
#   - a build of the benchmarks,
#   - every load-generator mode once, at a tiny size, against the example server.
# Needs a Rust toolchain and python3; it installs nothing else.
set -euo pipefail
cd "$(dirname "$0")"

cargo test
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
cargo bench --no-run --quiet
benches/run.sh --smoke

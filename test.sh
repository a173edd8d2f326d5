#!/usr/bin/env bash
# Every test of the project, as CI runs it:
#   - unit, integration and doc tests of both crates (the allocation-count test among them),
#     and both crates without the optional JWT algorithms (`--no-default-features`),
#   - the API docs, with broken links refused,
#   - a build of the benchmarks,
#   - every load-generator mode once, at a tiny size, against the example server,
#   - the API fuzzed from its OpenAPI document with schemathesis, with a service and a
#     player token, after the document is validated as OpenAPI 3.1.
# Needs a Rust toolchain, python3 and curl; it installs schemathesis and
# openapi-spec-validator from PyPI into target/schemathesis-venv when they are missing.
set -euo pipefail
cd "$(dirname "$0")"

cargo test
cargo test --quiet -p dualcast-layers --no-default-features
cargo check --quiet -p dualcast --no-default-features --lib
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
cargo bench --no-run --quiet
benches/run.sh --smoke
tests/schemathesis/run.sh

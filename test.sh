#!/usr/bin/env bash
# Every test of the project, as CI runs it:
#   - unit, integration and doc tests of both crates (the allocation-count test among them),
#     with the Redis backplane (`--features redis`: the cluster tests start private
#     `redis-server`s on free loopback ports, and stop them), and both crates without the
#     optional JWT algorithms and without Redis (`--no-default-features`),
#   - the API docs, with broken links refused,
#   - a build of the benchmarks,
#   - every load-generator mode once, at a tiny size, against the example server, and the
#     cluster benchmark's cases (one node, two nodes on a private Redis) once, tiny,
#   - the API fuzzed from its OpenAPI document with schemathesis, with a service and a
#     player token, after the document is validated as OpenAPI 3.1.
# Needs a Rust toolchain, python3 and curl; it installs Debian's redis-server and jq when
# they are missing, and schemathesis and openapi-spec-validator from PyPI into
# target/schemathesis-venv.
set -euo pipefail
cd "$(dirname "$0")"

# Debian's packages the cluster tests and benches/cluster.sh need, when missing.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v jq >/dev/null || missing+=(jq)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing Debian's ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

cargo test --features redis
cargo test --quiet -p dualcast-layers --no-default-features
cargo check --quiet -p dualcast --no-default-features --lib
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet --features redis
cargo bench --no-run --quiet
benches/run.sh --smoke
benches/cluster.sh --smoke
tests/schemathesis/run.sh

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
#     player token, after the document is validated as OpenAPI 3.1,
#   - the browser client (client/): its unit tests and the React hook's with node's test
#     runner, then the end-to-end tests in headless Chromium against the example server
#     (they leave the demo page's screenshot in target/e2e/demo.png).
# Needs a Rust toolchain, python3, curl and Node.js 20+ with npm; it installs Debian's
# redis-server, jq and chromium when they are missing, schemathesis and
# openapi-spec-validator from PyPI into target/schemathesis-venv, and the client's npm
# dev dependencies (client/package-lock.json) into client/node_modules.
set -euo pipefail
cd "$(dirname "$0")"

# Debian's packages the cluster tests and benches/cluster.sh need, when missing.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v jq >/dev/null || missing+=(jq)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
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

# The browser client, against the example server's debug build (the build cargo test made).
command -v npm >/dev/null || { echo "test.sh: the browser client's tests need Node.js 20+ and npm" >&2; exit 1; }
cargo build --quiet --features redis --example server
(
  cd client
  [ -d node_modules/playwright-core ] && [ -d node_modules/react-test-renderer ] ||
    npm ci --no-audit --no-fund --loglevel=error
  node --test test/
  node --test --test-concurrency=1 e2e/
)

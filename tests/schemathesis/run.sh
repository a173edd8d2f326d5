#!/usr/bin/env bash
# The API fuzzed from its own OpenAPI document: starts the example server on a free
# loopback port, checks that GET /api/openapi.json is a valid OpenAPI 3.1 document, then
# runs schemathesis against it twice, with the server's service token and with its player
# token, every check on (see schemathesis.toml beside this file), and stops the server.
#
# Installs openapi-spec-validator and schemathesis (pinned) from PyPI into
# target/schemathesis-venv when they are not there yet. Fails on any finding.
#
#   DUALCAST_FUZZ_EXAMPLES=N  examples per operation and phase (default 20)
#   DUALCAST_FUZZ_SEED=N      the seed (default 1, so a CI run is reproducible)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

venv="$root/target/schemathesis-venv"
if [[ ! -x "$venv/bin/schemathesis" || ! -x "$venv/bin/openapi-spec-validator" ]]; then
  echo "installing schemathesis and openapi-spec-validator into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'schemathesis==4.32.5' 'openapi-spec-validator==0.9.0'
fi

cargo build --quiet --example server
log="$(mktemp)"
work="$(mktemp -d)"
DUALCAST_ADDR=127.0.0.1:0 RUST_LOG=warn target/debug/examples/server >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$log" "$work"' EXIT

addr=""
for _ in $(seq 1 100); do
  # The address is in the "Try it" lines it prints with the tokens.
  addr="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1 | cut -d/ -f3 || true)"
  [[ -n "$addr" ]] && grep -q 'SERVICE_TOKEN=' "$log" && break
  kill -0 "$server" 2>/dev/null || { grep -v 'TOKEN=' "$log"; echo "the example server did not start" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$addr" ]] || { grep -v 'TOKEN=' "$log"; echo "no address in the server's output" >&2; exit 1; }
service_token="$(grep -o 'SERVICE_TOKEN=[^ ]*' "$log" | head -1 | cut -d= -f2)"
player_token="$(grep -o 'PLAYER_TOKEN=[^ ]*' "$log" | head -1 | cut -d= -f2)"
url="http://$addr/api/openapi.json"

curl -sf "$url" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"
grep -q '"openapi":"3.1.0"' "$work/openapi.json" || { echo "not an OpenAPI 3.1 document" >&2; exit 1; }

# The player holds an SSE stream through the run, reopened whenever the fuzzing ends it (a
# new session, a logout), so that client messages and the connection views have a live
# connection to act on.
(while kill -0 "$server" 2>/dev/null; do
  curl -sN -H "Authorization: Bearer $player_token" "http://$addr/api/sse" >/dev/null 2>&1 || true
  sleep 0.2
done) &
holder=$!
trap 'kill "$holder" "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$log" "$work"' EXIT

status=0
for who in service player; do
  token="${who}_token"
  echo "schemathesis with the $who token"
  # Run from a scratch directory: schemathesis keeps its files in the working directory.
  (cd "$work" && SCHEMATHESIS_HOOKS="$here/hooks.py" "$venv/bin/schemathesis" \
    --config-file "$here/schemathesis.toml" run "$url" \
    -H "Authorization: Bearer ${!token}" \
    --max-examples "${DUALCAST_FUZZ_EXAMPLES:-20}" --seed "${DUALCAST_FUZZ_SEED:-1}" \
    --generation-database none --no-color) >"$work/$who.log" 2>&1 || status=$?
  if [[ $status -ne 0 ]]; then
    cat "$work/$who.log"
    echo "schemathesis found problems with the $who token (exit $status)" >&2
    exit "$status"
  fi
  grep -E '^Test cases:|generated' "$work/$who.log" | tail -1
done
kill -0 "$server" 2>/dev/null || { grep -v 'TOKEN=' "$log"; echo "the server died during the run" >&2; exit 1; }
echo "schemathesis: no findings with either token"

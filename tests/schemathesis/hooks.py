"""Schemathesis hooks for dualcast's API run (loaded through SCHEMATHESIS_HOOKS).

A WebSocket handshake answered `101 Switching Protocols` leaves the TCP connection a
WebSocket: it must never carry another HTTP request. `requests` would put it back in its
pool and reuse it, so the answer's connection is closed as soon as its headers are read
(the server then sees the client go, as it would from any client that hangs up).
"""

import schemathesis


def _close_upgraded(response, *args, **kwargs):
    if response.status_code == 101:
        response.raw.close()
    return response


@schemathesis.hook
def before_call(context, case, kwargs):
    hooks = kwargs.get("hooks") or {}
    kwargs["hooks"] = {
        **hooks,
        "response": [*hooks.get("response", []), _close_upgraded],
    }

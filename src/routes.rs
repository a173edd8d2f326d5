//! The one route table: dualcast's own paths under its prefix, parsed once, used by the
//! router of [`Dualcast`](crate::Dualcast) and by the direct-SSE check of
//! [`serve`](crate::serve()).
//!
//! | route | handler |
//! |---|---|
//! | `GET {prefix}/api/ws?session_id=…` | [`WebSocketHandler`](crate::WebSocketHandler) |
//! | `GET {prefix}/api/ws/{player_id}` | the same, deprecated path (`Deprecation`, `Link` to the successor) |
//! | `GET {prefix}/sse/{player_id}?session_id=…` | [`SseHandler`](crate::SseHandler) with a [`RequestedPlayer`](crate::RequestedPlayer) |
//! | `GET {prefix}/api/sse` | [`SseHandler`](crate::SseHandler) |
//! | `POST {prefix}/api/players/{player_id}/messages` | [`PublishApi`](crate::PublishApi) |
//! | `POST {prefix}/api/rooms/{room}/messages` | [`PublishApi`](crate::PublishApi) |
//! | `POST {prefix}/api/broadcast` | [`PublishApi`](crate::PublishApi) |
//! | `PUT`, `DELETE {prefix}/api/rooms/{room}/members/{player_id}` | [`PublishApi`](crate::PublishApi) |
//! | `POST`, `GET {prefix}/api/connections/{player_id}/session` | [`PublishApi`](crate::PublishApi): begin or read the player's session |
//! | `POST {prefix}/api/connections/{player_id}/logout` | [`PublishApi`](crate::PublishApi): end every connection of the player |
//! | `GET {prefix}/api/connections/{player_id}` | [`PublishApi`](crate::PublishApi): the player's connections, presence and health |
//! | `GET {prefix}/api/connections/stats` | [`PublishApi`](crate::PublishApi): connection statistics (`service`, `admin`) |
//! | `GET {prefix}/monitoring/{dual-connections,performance,connection-health}` | [`PublishApi`](crate::PublishApi): seed 004's monitoring views (`service`, `admin`) |
//! | `GET {prefix}/metrics` | Prometheus text; a `service` or `admin` token unless public |
//! | `GET {prefix}/healthz` | liveness, no token |
//! | `GET {prefix}/api/openapi.json` | the OpenAPI 3.1 document of these routes, no token |
//!
//! A path that is none of these is not dualcast's: a layer passes it to the host's service.
//! The publishing, membership and health routes can each be switched off
//! ([`DualcastBuilder`](crate::DualcastBuilder)), and their paths then go to the host too.
//! Without a prefix, a host route with one of these paths (its own `/healthz`, say) is
//! shadowed by dualcast's when dualcast is the outer layer: set a prefix, or switch the
//! route off.

use std::sync::Arc;

use dualcast_layers::query::percent_decode_path;

use crate::api::MonitoringView;
use crate::error::ApiError;
use crate::extract::ApiTarget;

/// A route of the table, with what its path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/api/ws`.
    WebSocket,
    /// `/api/ws/{player_id}`, deprecated.
    WebSocketOf(Arc<str>),
    /// `/api/sse`.
    Sse,
    /// `/sse/{player_id}`.
    SseOf(Arc<str>),
    /// The publishing and membership API.
    Api(ApiTarget),
    /// `/healthz`.
    Health,
    /// `/metrics`.
    Metrics,
    /// `/api/openapi.json`.
    OpenApi,
}

impl Route {
    /// The route's template, the `route` label of its HTTP metrics (never the raw path,
    /// which would make a series per player).
    pub(crate) fn template(&self) -> &'static str {
        match self {
            Self::WebSocket => "/api/ws",
            Self::WebSocketOf(_) => "/api/ws/{player_id}",
            Self::Sse => "/api/sse",
            Self::SseOf(_) => "/sse/{player_id}",
            Self::Api(ApiTarget::Player(_)) => "/api/players/{player_id}/messages",
            Self::Api(ApiTarget::Room(_)) => "/api/rooms/{room}/messages",
            Self::Api(ApiTarget::Everyone) => "/api/broadcast",
            Self::Api(ApiTarget::Membership { .. }) => "/api/rooms/{room}/members/{player_id}",
            Self::Api(ApiTarget::Session(_)) => "/api/connections/{player_id}/session",
            Self::Api(ApiTarget::Logout(_)) => "/api/connections/{player_id}/logout",
            Self::Api(ApiTarget::ClientMessage) => "/api/messages",
            Self::Api(ApiTarget::Connections(_)) => "/api/connections/{player_id}",
            Self::Api(ApiTarget::ConnectionStats) => "/api/connections/stats",
            Self::Api(ApiTarget::Monitoring(view)) => view.template(),
            Self::Health => "/healthz",
            Self::Metrics => "/metrics",
            Self::OpenApi => "/api/openapi.json",
        }
    }
}

/// Where dualcast's routes are and which of them are on.
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    /// Empty, or `/`-led without a trailing `/`.
    prefix: Box<str>,
    publish: bool,
    membership: bool,
    health: bool,
    pub(crate) sessions: bool,
    pub(crate) client_messages: bool,
    pub(crate) metrics: bool,
    pub(crate) metrics_public: bool,
    pub(crate) monitoring: bool,
    pub(crate) openapi: bool,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new("", true, true, true)
    }
}

impl RouteTable {
    /// The table under `prefix` (`""` for none; `"/rt"`, `"rt"` and `"/rt/"` are the same),
    /// with the publishing, membership and health routes each on or off.
    pub(crate) fn new(prefix: &str, publish: bool, membership: bool, health: bool) -> Self {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{}", encode_path(trimmed))
        };
        Self {
            prefix: prefix.into(),
            publish,
            membership,
            health,
            sessions: true,
            client_messages: true,
            metrics: true,
            metrics_public: false,
            monitoring: true,
            openapi: true,
        }
    }

    /// The segments of `path` after the prefix; `None` when it is not under it.
    fn segments<'a>(&self, path: &'a str) -> Option<std::str::Split<'a, char>> {
        let rest = path.strip_prefix(&*self.prefix)?;
        let rest = rest.strip_prefix('/')?;
        Some(rest.split('/'))
    }

    /// The route of `path`: `None` when it is not one of dualcast's (the host's, then);
    /// an error when it is one but a segment is not valid percent-encoded UTF-8.
    pub(crate) fn route(&self, path: &str) -> Option<Result<Route, ApiError>> {
        let mut segments = self.segments(path)?;
        let mut next = [""; 5];
        let mut count = 0;
        for segment in segments.by_ref() {
            if count == next.len() {
                return None;
            }
            next[count] = segment;
            count += 1;
        }
        let name = |raw: &str| -> Result<Arc<str>, ApiError> {
            percent_decode_path(raw).map(Arc::from).ok_or_else(|| {
                ApiError::bad_request(
                    "INVALID_PATH",
                    "the path is not valid percent-encoded UTF-8",
                )
            })
        };
        let route = match &next[..count] {
            ["healthz"] if self.health => Ok(Route::Health),
            ["metrics"] if self.metrics => Ok(Route::Metrics),
            ["api", "openapi.json"] if self.openapi => Ok(Route::OpenApi),
            ["api", "connections", player, "session"] if self.sessions && !player.is_empty() => {
                name(player).map(|player| Route::Api(ApiTarget::Session(player)))
            }
            ["api", "connections", player, "logout"] if self.sessions && !player.is_empty() => {
                name(player).map(|player| Route::Api(ApiTarget::Logout(player)))
            }
            ["api", "messages"] if self.client_messages => Ok(Route::Api(ApiTarget::ClientMessage)),
            // Seed 004's path: a player named `stats` is read by the service routes only.
            ["api", "connections", "stats"] if self.monitoring => {
                Ok(Route::Api(ApiTarget::ConnectionStats))
            }
            ["api", "connections", player] if self.monitoring && !player.is_empty() => {
                name(player).map(|player| Route::Api(ApiTarget::Connections(player)))
            }
            ["monitoring", view] if self.monitoring => match MonitoringView::from_segment(view) {
                Some(view) => Ok(Route::Api(ApiTarget::Monitoring(view))),
                None => return None,
            },
            ["api", "ws"] => Ok(Route::WebSocket),
            ["api", "ws", player] if !player.is_empty() => name(player).map(Route::WebSocketOf),
            ["api", "sse"] => Ok(Route::Sse),
            ["sse", player] if !player.is_empty() => name(player).map(Route::SseOf),
            ["api", "players", player, "messages"] if self.publish && !player.is_empty() => {
                name(player).map(|player| Route::Api(ApiTarget::Player(player)))
            }
            ["api", "rooms", room, "messages"] if self.publish && !room.is_empty() => {
                name(room).map(|room| Route::Api(ApiTarget::Room(room)))
            }
            ["api", "broadcast"] if self.publish => Ok(Route::Api(ApiTarget::Everyone)),
            ["api", "rooms", room, "members", player]
                if self.membership && !room.is_empty() && !player.is_empty() =>
            {
                name(room).and_then(|room| {
                    Ok(Route::Api(ApiTarget::Membership {
                        room,
                        player: name(player)?,
                    }))
                })
            }
            _ => return None,
        };
        Some(route)
    }

    /// `template` (a route's, as [`Route::template`] gives it) under the prefix.
    pub(crate) fn prefixed(&self, template: &str) -> String {
        format!("{}{template}", self.prefix)
    }

    /// Whether the route of `template` is on: a path made from it (each `{parameter}`
    /// filled in) is routed to a route of that very template.
    pub(crate) fn serves(&self, template: &str) -> bool {
        let path: Vec<&str> = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "p"
                } else {
                    segment
                }
            })
            .collect();
        matches!(
            self.route(&self.prefixed(&path.join("/"))),
            Some(Ok(route)) if route.template() == template
        )
    }

    /// Whether `path` (without its query) is one of the SSE routes, checked without
    /// allocating: what `serve` may answer itself.
    pub(crate) fn is_sse(&self, path: &str) -> bool {
        let Some(mut segments) = self.segments(path) else {
            return false;
        };
        match (segments.next(), segments.next(), segments.next()) {
            (Some("api"), Some("sse"), None) => true,
            (Some("sse"), Some(player), None) => !player.is_empty(),
            _ => false,
        }
    }

    /// The path of the health route, which `serve` answers even past its connection cap.
    pub(crate) fn health_path(&self) -> String {
        format!("{}/healthz", self.prefix)
    }

    /// The path of the WebSocket route, for the deprecated route's `Link` header.
    pub(crate) fn websocket_path(&self) -> String {
        format!("{}/api/ws", self.prefix)
    }
}

/// `path` with every byte that may not stand as itself in a URL path (RFC 3986 `pchar`,
/// and `/`) percent-encoded, as a client sends it: a prefix `/{tenant}` is matched as
/// `/%7Btenant%7D`, the path a browser requests for it (and a valid path for the
/// OpenAPI document, where `{…}` would name a parameter). An escape already there stays.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        let plain = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&byte);
        if plain {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dualcast_paths_under_the_prefix_are_routes() {
        let table = RouteTable::new("/rt/", true, true, true);
        assert!(matches!(
            table.route("/rt/api/ws"),
            Some(Ok(Route::WebSocket))
        ));
        for path in [
            "/api/ws",
            "/rtx/api/ws",
            "/rt",
            "/rt/",
            "/rt/api/ws/",
            "/rt/sse/",
            "/rt/sse/a/b",
            "/rt/favicon.ico",
            "/rt/api/ws/a/b",
        ] {
            assert!(table.route(path).is_none(), "{path}");
        }
        assert!(
            matches!(table.route("/rt/sse/al%20ice"), Some(Ok(Route::SseOf(p))) if &*p == "al ice")
        );
        assert!(matches!(table.route("/rt/sse/%ff"), Some(Err(_))));
        assert!(table.is_sse("/rt/api/sse"));
        assert!(table.is_sse("/rt/sse/alice"));
        assert!(!table.is_sse("/api/sse"));
        assert!(!table.is_sse("/rt/sse/a/b"));
        assert_eq!(table.websocket_path(), "/rt/api/ws");
    }

    #[test]
    fn a_prefix_is_matched_as_clients_send_it() {
        let table = RouteTable::new("{tenant} 1", true, true, true);
        assert!(matches!(
            table.route("/%7Btenant%7D%201/api/ws"),
            Some(Ok(Route::WebSocket))
        ));
        assert!(table.route("/{tenant} 1/api/ws").is_none());
        assert_eq!(table.prefixed("/healthz"), "/%7Btenant%7D%201/healthz");
        let plain = RouteTable::new("/rt/v1/", true, true, true);
        assert_eq!(plain.prefixed("/healthz"), "/rt/v1/healthz");
    }

    #[test]
    fn switched_off_apis_are_not_routes() {
        let table = RouteTable::new("", false, false, false);
        for path in [
            "/api/broadcast",
            "/api/rooms/r/messages",
            "/api/rooms/r/members/p",
            "/api/players/p/messages",
        ] {
            assert!(table.route(path).is_none(), "{path}");
        }
        assert!(matches!(table.route("/api/sse"), Some(Ok(Route::Sse))));
        let all = RouteTable::default();
        assert!(matches!(
            all.route("/api/connections/stats"),
            Some(Ok(Route::Api(ApiTarget::ConnectionStats)))
        ));
        assert!(matches!(
            all.route("/api/connections/alice"),
            Some(Ok(Route::Api(ApiTarget::Connections(p)))) if &*p == "alice"
        ));
        assert!(matches!(
            all.route("/monitoring/performance"),
            Some(Ok(Route::Api(ApiTarget::Monitoring(
                MonitoringView::Performance
            ))))
        ));
        assert!(all.route("/monitoring/elsewhere").is_none());
        assert!(matches!(
            all.route("/api/connections/%73tats"),
            Some(Ok(Route::Api(ApiTarget::Connections(p)))) if &*p == "stats"
        ));
        let off = RouteTable {
            monitoring: false,
            ..RouteTable::default()
        };
        assert!(off.route("/monitoring/performance").is_none());
        assert!(off.route("/api/connections/alice").is_none());
        assert!(matches!(
            all.route("/api/rooms/lobby/members/alice"),
            Some(Ok(Route::Api(ApiTarget::Membership { .. })))
        ));
    }
}

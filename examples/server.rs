//! The example server: every dualcast endpoint on one address.
//!
//! ```text
//! cargo run --release --example server
//! ```
//!
//! Settings, all optional, from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DUALCAST_ADDR` | `127.0.0.1:8000` | address to listen on |
//! | `DUALCAST_JWT_SECRET` | random, printed tokens | HS256 secret tokens are verified with |
//! | `DUALCAST_JWT_LEEWAY_SECS` | `30` | clock skew allowed on a token's `exp` and `nbf`; a connection ends with `auth_expired` this long after `exp` |
//! | `DUALCAST_OUTBOX_CAPACITY` | `256` | messages queued per connection before `slow_consumer` |
//! | `DUALCAST_SSE_KEEP_ALIVE_SECS` | `15` | seconds between SSE keep-alive comments |
//! | `DUALCAST_MAX_PUBLISH_BYTES` | `1048576` | largest publish body |
//! | `DUALCAST_WS_READ_BUFFER` | `2048` | bytes of read buffer per WebSocket |
//! | `DUALCAST_MAX_CONNECTIONS` | descriptor limit minus a reserve | open connections before new ones get `503` |
//! | `DUALCAST_MAX_CONNECTIONS_PER_PLAYER` | `4` | live connections per player before the next gets `429` (`0`: no limit) |
//! | `DUALCAST_CONNECT_RATE_PER_PLAYER` | `10` | connection attempts a second per player, burst twice that (`0`: off) |
//! | `DUALCAST_CONNECT_RATE_PER_ADDR` | `50` | connection attempts a second per client address, burst twice that (`0`: off) |
//! | `DUALCAST_TRUSTED_PROXIES` | none | comma-separated proxy addresses or CIDRs whose `X-Forwarded-For` names the client |
//! | `DUALCAST_STRICT_SESSIONS` | `false` | refuse sessions not begun through `POST /api/connections/{id}/session` |
//! | `DUALCAST_METRICS_PUBLIC` | `false` | serve `GET /metrics` without a `service`/`admin` token |
//! | `DUALCAST_HEARTBEAT_INTERVAL_SECS` | `25` | seconds of quiet before a WebSocket is pinged |
//! | `DUALCAST_HEARTBEAT_TIMEOUT_SECS` | `60` | seconds of silence before a WebSocket ends with `heartbeat_timeout` |
//! | `DUALCAST_PRESENCE_GRACE_SECS` | `10` | seconds a player stays `reconnecting` after its last connection |
//! | `DUALCAST_STATE_TTL_SECS` | `300` | seconds an offline player's rooms and session are kept |
//! | `DUALCAST_INBOUND_RATE` | `20` | client messages a second per connection, burst twice that (`0`: off) |
//! | `DUALCAST_REPLAY_COUNT` | `100` | messages kept per player for a reconnect to replay (`0`: off) |
//! | `DUALCAST_REPLAY_AGE_SECS` | `300` | seconds a message stays replayable |
//! | `DUALCAST_PENDING_COUNT` | `100` | messages queued per player with no live connection (`0`: off) |
//! | `DUALCAST_MESSAGE_TTL_SECS` | `300` | default lifetime of a message in a pending queue, the replay buffer, or awaiting an ack (a publish's `ttl_ms` overrides it) |
//! | `DUALCAST_REDIS_URL` | none | join the cluster behind this Redis (build with `--features redis`; refused otherwise) |
//! | `DUALCAST_NODE_ID` | random | this node's id in the cluster (`A-Z a-z 0-9 . _ -`, at most 64) |
//! | `RUST_LOG` | `info` | log filter (`tracing-subscriber` syntax) |
//!
//! Client messages: `{"type":"say","data":{"room":"lobby","text":"hi"}}` (a WebSocket text
//! frame, or the body of `POST /api/messages`) goes to every member of `lobby` as a `say`
//! envelope naming the sender, if the sender is a member (`PUT
//! /api/rooms/lobby/members/{player_id}` with a service token makes it one); otherwise the
//! sender gets an `error`. `{"type":"ping"}` is answered with `pong`.

use std::env;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use dualcast::dualcast_layers::jwt::{issue_hs256, Claims};
use dualcast::dualcast_layers::track::TrustedProxy;
use dualcast::error::ErrorType;
use dualcast::{
    Audience, AuthLayer, ClientMessage, DeliverySettings, Dualcast, HeartbeatSettings, Hub,
    HubSettings, InboundSettings, JwtAuthenticator, Message, MessageHandler, Role, ServeSettings,
    SseSettings, TrackLayer, WebSocketSettings,
};
use tower::Layer;

#[path = "server/demo.rs"]
mod demo;
use demo::DemoRoutes;
use tower_http::trace::TraceLayer;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a terminal: a log written to a file stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), String> {
    let addr: SocketAddr = setting(
        "DUALCAST_ADDR",
        "127.0.0.1:8000".parse().map_err(|_| "bad default")?,
    )?;
    let outbox_capacity: usize = setting("DUALCAST_OUTBOX_CAPACITY", 256)?;
    let keep_alive_secs: u64 = setting("DUALCAST_SSE_KEEP_ALIVE_SECS", 15)?;
    let max_publish_bytes: usize = setting("DUALCAST_MAX_PUBLISH_BYTES", 1024 * 1024)?;
    let ws_read_buffer: usize = setting("DUALCAST_WS_READ_BUFFER", 2048)?;
    let mut serve_settings = ServeSettings::new();
    let max_connections: usize = setting(
        "DUALCAST_MAX_CONNECTIONS",
        serve_settings.get_max_connections(),
    )?;
    serve_settings = serve_settings.max_connections(max_connections);
    let per_player: usize = setting("DUALCAST_MAX_CONNECTIONS_PER_PLAYER", 4)?;
    let rate_per_player: u32 = setting("DUALCAST_CONNECT_RATE_PER_PLAYER", 10)?;
    let rate_per_addr: u32 = setting("DUALCAST_CONNECT_RATE_PER_ADDR", 50)?;
    let strict_sessions: bool = setting("DUALCAST_STRICT_SESSIONS", false)?;
    let metrics_public: bool = setting("DUALCAST_METRICS_PUBLIC", false)?;
    let trusted_proxies = match env::var("DUALCAST_TRUSTED_PROXIES") {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry.parse::<TrustedProxy>().map_err(|_| {
                    format!("DUALCAST_TRUSTED_PROXIES: {entry:?} is not an address or CIDR")
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Err(_) => Vec::new(),
    };

    let (secret, generated) = match env::var("DUALCAST_JWT_SECRET") {
        Ok(secret) if secret.len() >= 32 => (secret.into_bytes(), false),
        Ok(_) => return Err("DUALCAST_JWT_SECRET must be at least 32 bytes".into()),
        Err(_) => (random_secret()?.into_bytes(), true),
    };

    let heartbeat = HeartbeatSettings::new()
        .interval(Duration::from_secs(setting(
            "DUALCAST_HEARTBEAT_INTERVAL_SECS",
            25,
        )?))
        .timeout(Duration::from_secs(setting(
            "DUALCAST_HEARTBEAT_TIMEOUT_SECS",
            60,
        )?));
    let inbound_rate: u32 = setting("DUALCAST_INBOUND_RATE", 20)?;
    let delivery = DeliverySettings::new()
        .replay_count(setting("DUALCAST_REPLAY_COUNT", 100)?)
        .replay_age(Duration::from_secs(setting(
            "DUALCAST_REPLAY_AGE_SECS",
            300,
        )?))
        .pending_count(setting("DUALCAST_PENDING_COUNT", 100)?)
        .message_ttl(Duration::from_secs(setting(
            "DUALCAST_MESSAGE_TTL_SECS",
            300,
        )?));
    let hub = Hub::builder()
        .outbox_capacity(outbox_capacity)
        .strict_sessions(strict_sessions)
        .heartbeat(heartbeat)
        .presence_grace(Duration::from_secs(setting(
            "DUALCAST_PRESENCE_GRACE_SECS",
            10,
        )?))
        .state_ttl(Duration::from_secs(setting(
            "DUALCAST_STATE_TTL_SECS",
            300,
        )?))
        .inbound(InboundSettings::new().rate(inbound_rate, inbound_rate.saturating_mul(2)))
        .delivery(delivery)
        .message_handler(say_to_room());
    let hub = with_backplane(hub).await?.build();
    let leeway = Duration::from_secs(setting("DUALCAST_JWT_LEEWAY_SECS", 30)?);
    let auth = AuthLayer::new(JwtAuthenticator::hs256(&secret).leeway(leeway));
    let track = TrackLayer::pair()
        .0
        .max_connections_per_player(per_player)
        .connect_rate_per_player(rate_per_player)
        .connect_rate_per_address(rate_per_addr)
        .trusted_proxies(trusted_proxies);
    let (layer, hub) = Dualcast::builder(auth)
        .hub(hub)
        .track(track)
        .metrics_public(metrics_public)
        .sse(SseSettings::new().keep_alive(Duration::from_secs(keep_alive_secs)))
        .max_publish_body(max_publish_bytes)
        .websocket(WebSocketSettings::new().read_buffer_size(ws_read_buffer))
        .openapi_route(true)
        .build();
    let endpoints = layer.endpoints().clone();
    // dualcast's layer around the example's own routes: the demo page, the client's files.
    let app = layer.layer(DemoRoutes::new(generated.then_some(&secret[..])));
    let traced = TraceLayer::new_for_http()
        .make_span_with(PathSpan)
        .layer(app);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        addr = %local,
        epoch = hub.epoch(),
        max_connections,
        per_player,
        rate_per_player,
        rate_per_addr,
        strict_sessions,
        "dualcast example server listening"
    );
    if generated {
        print_try_it(&secret, local)?;
    }
    dualcast::serve_with_settings(
        listener,
        endpoints,
        traced,
        serve_settings,
        shutdown_signal(),
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// The example's client messages: `say` sends `data.text` to the members of `data.room`,
/// if the sender is one of them.
fn say_to_room() -> MessageHandler {
    #[derive(serde::Deserialize)]
    struct Say {
        room: String,
        text: String,
    }
    MessageHandler::from_fn(|message: ClientMessage| async move {
        if message.message_type() != "say" {
            let error = format!(
                "this server knows `say` only, not `{}`",
                message.message_type()
            );
            return Some(message.error_reply(ErrorType::ValidationError, "UNKNOWN_TYPE", error));
        }
        let Ok(say) = message.data_as::<Say>() else {
            return Some(message.error_reply(
                ErrorType::ValidationError,
                "INVALID_SAY",
                "say needs data {\"room\": string, \"text\": string}",
            ));
        };
        if say.text.chars().count() > 1000 {
            return Some(message.error_reply(
                ErrorType::ValidationError,
                "INVALID_SAY",
                "say texts are at most 1000 characters",
            ));
        }
        let hub = message.hub();
        if !hub.is_member(&say.room, message.player_id()) {
            return Some(message.error_reply(
                ErrorType::AuthorizationError,
                "NOT_A_ROOM_MEMBER",
                format!("you are not a member of {:?}", say.room),
            ));
        }
        let said = Message::json(
            "say",
            serde_json::json!({ "from": message.player_id(), "text": say.text }),
        );
        let audience = Audience::Room {
            room: &say.room,
            exclude: &[],
        };
        let report = match hub.publish(audience, &said).await {
            Ok(report) => report,
            Err(error) => {
                return Some(message.error_reply(
                    ErrorType::SystemError,
                    "BACKPLANE_UNAVAILABLE",
                    error.to_string(),
                ))
            }
        };
        Some(Message::json(
            "said",
            serde_json::json!({ "room": say.room, "id": message.id(), "players": report.players }),
        ))
    })
}

/// The cluster's backplane when `DUALCAST_REDIS_URL` is set (node id from
/// `DUALCAST_NODE_ID`, else random); a clear error when this build has no Redis support.
#[cfg(feature = "redis")]
async fn with_backplane(hub: HubSettings) -> Result<HubSettings, String> {
    let Ok(url) = env::var("DUALCAST_REDIS_URL") else {
        return Ok(hub);
    };
    let mut settings = dualcast::RedisSettings::new(url);
    if let Ok(node) = env::var("DUALCAST_NODE_ID") {
        settings = settings.node_id(node);
    }
    let backplane = dualcast::RedisBackplane::connect(settings)
        .await
        .map_err(|e| format!("DUALCAST_REDIS_URL: {e}"))?;
    tracing::info!(
        node = dualcast::Backplane::node_id(&backplane),
        "joining the cluster"
    );
    Ok(hub.backplane(backplane))
}

/// Without the `redis` feature a set `DUALCAST_REDIS_URL` is refused rather than ignored,
/// so nobody believes a lone node is part of a cluster.
#[cfg(not(feature = "redis"))]
async fn with_backplane(hub: HubSettings) -> Result<HubSettings, String> {
    if env::var_os("DUALCAST_REDIS_URL").is_some() {
        return Err("DUALCAST_REDIS_URL is set, but this server was built without the `redis` \
                    feature: build it with `cargo run --release --features redis --example server`, \
                    or unset DUALCAST_REDIS_URL to run a single node"
            .into());
    }
    Ok(hub)
}

/// Request spans with the method and the path only: a query string may hold a token.
#[derive(Clone, Copy)]
struct PathSpan;

impl<B> tower_http::trace::MakeSpan<B> for PathSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        tracing::debug_span!("request", method = %request.method(), path = request.uri().path())
    }
}

/// Reads `name` from the environment, or `default` when unset.
fn setting<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

fn random_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// With a generated secret nobody else can mint tokens, so print two ready ones, once.
fn print_try_it(secret: &[u8], addr: SocketAddr) -> Result<(), String> {
    let day = 24 * 3600;
    let player = issue_hs256(secret, &Claims::new("player-1", Role::Player, day))
        .map_err(|e| e.to_string())?;
    let service = issue_hs256(secret, &Claims::new("backend", Role::Service, day))
        .map_err(|e| e.to_string())?;
    println!(
        "\nNo DUALCAST_JWT_SECRET set: using a random one. Tokens valid for 24 hours:\n\
         \n  PLAYER_TOKEN={player}\n  SERVICE_TOKEN={service}\n\
         \nTry it (paste the two lines above first):\n\
         \n  curl -N -H \"Authorization: Bearer $PLAYER_TOKEN\" http://{addr}/sse/player-1\
         \n  curl -X POST -H \"Authorization: Bearer $SERVICE_TOKEN\" -H 'content-type: application/json' \\\
         \n       -d '{{\"type\":\"chat\",\"data\":{{\"text\":\"hello\"}}}}' http://{addr}/api/players/player-1/messages\n"
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {error}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

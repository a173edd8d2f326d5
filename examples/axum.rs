//! An existing axum app with dualcast as a layer: the app keeps its own routes, its own
//! 404 and its own cookie login (dualcast identifies its connections through the app's
//! session table, with the identify hook), publishes from its own handler, and shuts down
//! cleanly on Ctrl-C (WebSockets get `1001 server_shutdown`, SSE streams a `disconnect`).
//!
//! ```text
//! cargo run --example axum                 # DUALCAST_ADDR=127.0.0.1:3000 by default
//! curl -c jar http://127.0.0.1:3000/login/alice
//! curl -b jar -N http://127.0.0.1:3000/rt/api/sse          # alice's stream, by cookie
//! curl -b jar -d 'hello' http://127.0.0.1:3000/announce    # the app publishes to everyone
//! curl -b jar -d '{"type":"whoami"}' http://127.0.0.1:3000/rt/api/messages  # while the stream is open
//! ```
//!
//! Client messages (WebSocket text frames, or `POST /rt/api/messages` from an SSE-only
//! client) go to the app's handler with the identity its cookie login gave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use dualcast::error::ErrorType;
use dualcast::{
    AuthError, AuthLayer, ClientMessage, Dualcast, Hub, Identity, Message, MessageHandler, Role,
};

/// The app's own session table: cookie value → player.
type Sessions = Arc<Mutex<HashMap<String, String>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let sessions = Sessions::default();
    let table = sessions.clone();
    let auth = AuthLayer::identify(move |request: &Parts| {
        let player = player_of(&table, &request.headers);
        // A real app would await its database here; the future may do anything async.
        async move {
            let player = player.ok_or(AuthError::missing("log in first: GET /login/{player}"))?;
            Ok(Identity::new(player, Role::Player))
        }
    });
    let (realtime, hub) = Dualcast::builder(auth)
        .prefix("/rt")
        .on_message(MessageHandler::from_fn(whoami))
        .build();
    let app = Router::new()
        .route("/login/{player}", get(login))
        .route("/announce", post(announce))
        .fallback(|| async { (StatusCode::NOT_FOUND, "the app's own 404\n") })
        .with_state((sessions, hub.clone()))
        .layer(realtime);
    let addr = std::env::var("DUALCAST_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let ctrl_c = async { drop(tokio::signal::ctrl_c().await) };
    let server = axum::serve(listener, app).with_graceful_shutdown(hub.shutdown_on(ctrl_c));
    // A client that stopped reading must not hold the shutdown open: 10 s at most.
    hub.bounded_shutdown(server, dualcast::SHUTDOWN_GRACE)
        .await
        .unwrap_or(Ok(()))
}

type AppState = State<(Sessions, Hub)>;

async fn login(State((sessions, _)): AppState, Path(player): Path<String>) -> impl IntoResponse {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("OS randomness");
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    sessions
        .lock()
        .expect("not poisoned")
        .insert(id.clone(), player.clone());
    // A demo: anyone may log in as anyone, and the table only grows. Over HTTPS, add
    // `Secure`, and set `AuthLayer::allowed_origins` to the site's https origin.
    let cookie = format!("session={id}; HttpOnly; SameSite=Lax; Path=/");
    (
        [(header::SET_COOKIE, cookie)],
        format!("logged in as {player}\n"),
    )
}

/// The app's own handler publishes to every connection of every player.
async fn announce(State((sessions, hub)): AppState, headers: HeaderMap, text: String) -> Response {
    if player_of(&sessions, &headers).is_none() {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    }
    let report = hub.broadcast_global(&Message::json("announcement", text.into()), &[]);
    format!("delivered to {} connections\n", report.delivered).into_response()
}

/// The app's handler of client messages: `whoami` is answered with the sender's identity.
async fn whoami(message: ClientMessage) -> Option<Message> {
    if message.message_type() != "whoami" {
        return Some(message.error_reply(
            ErrorType::ValidationError,
            "UNKNOWN_TYPE",
            "this app answers `whoami` only",
        ));
    }
    let reply = serde_json::json!({
        "player": message.player_id(),
        "connection": message.connection_id().map(|id| id.to_string()),
    });
    Some(Message::json("you_are", reply))
}

/// The player whose `session` cookie the request carries.
fn player_of(sessions: &Sessions, headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    let id = cookies
        .split(';')
        .find_map(|c| c.trim().strip_prefix("session="))?;
    sessions.lock().ok()?.get(id).cloned()
}

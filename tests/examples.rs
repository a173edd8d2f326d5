//! The example binaries as their users run them: started as processes (`cargo test` builds
//! them into `target/debug/examples/`), reached over loopback, stopped with SIGINT.
//!
//! - `server`: its log, written to a pipe, is plain text; SIGINT shuts it down gracefully.
//! - `axum`: an axum app with dualcast as a layer, cookie login, the app's own 404.
//! - `hyper`: a plain hyper server with the handlers at `/play` and `/events`.
#![cfg(unix)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use dualcast::jwt::{issue_hs256, Claims};
use dualcast::Role;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long an example has to start, or to exit after SIGINT (its shutdown grace is 10 s).
const PROCESS_BOUND: Duration = Duration::from_secs(15);

/// A secret of 32+ bytes for the examples that verify tokens.
const EXAMPLE_SECRET: &str = "examples-test-secret-of-at-least-32-bytes";

/// `target/debug/examples/{name}`, next to this test's own binary
/// (`target/debug/deps/examples-…`).
fn example_binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    let profile = test
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    let binary = profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: `cargo test` builds the examples (or run `cargo build --examples`)",
        binary.display()
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(written)) = (modified(&binary), modified(&source)) {
        assert!(
            built >= written,
            "{} is older than {}: `cargo test` builds the examples (or run `cargo build --examples`)",
            binary.display(),
            source.display()
        );
    }
    binary
}

/// A running example; killed when dropped, so a failing test leaves no process behind.
struct Example {
    name: &'static str,
    child: Child,
    /// Its stdout, line by line, read by a task so that the pipe never fills.
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl Example {
    fn start(name: &'static str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(example_binary(name));
        for variable in [
            "DUALCAST_ADDR",
            "DUALCAST_JWT_SECRET",
            "DUALCAST_MAX_CONNECTIONS",
            "DUALCAST_REDIS_URL",
            "RUST_LOG",
        ] {
            command.env_remove(variable);
        }
        command
            .env("DUALCAST_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start the {name} example: {error}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            name,
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line of its stdout containing `needle`.
    async fn line_containing(&mut self, needle: &str) -> String {
        let what = format!("a line of the {} example containing {needle:?}", self.name);
        let found = within_for(PROCESS_BOUND, &what, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "the {} example's stdout ended without {needle:?}; it wrote:\n{}",
                self.name,
                self.seen.join("\n")
            )
        })
    }

    /// The address of its `listening on http://ADDR` line.
    async fn listening_address(&mut self) -> SocketAddr {
        let line = self.line_containing("listening on http://").await;
        let addr = line
            .rsplit("http://")
            .next()
            .expect("an address after http://");
        addr.trim().parse().unwrap_or_else(|_| panic!("{line:?}"))
    }

    /// Sends SIGINT, as Ctrl-C does.
    fn interrupt(&self) {
        let pid = self.child.id().expect("the example is running");
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -INT {pid}: {status}");
    }

    /// Waits for it to exit, and asserts it succeeded.
    async fn exits_successfully(mut self) {
        let what = format!("the {} example's exit", self.name);
        let status = within_for(PROCESS_BOUND, &what, self.child.wait())
            .await
            .expect("the exit status");
        // What it wrote while shutting down, for the message.
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        assert!(
            status.success(),
            "the {} example exited with {status}; it wrote:\n{}",
            self.name,
            self.seen.join("\n")
        );
    }
}

fn token_for(player: &str) -> String {
    issue_hs256(
        EXAMPLE_SECRET.as_bytes(),
        &Claims::new(player, Role::Player, 3600),
    )
    .unwrap()
}

/// The number after `field=` in a log line.
fn field(line: &str, field: &str) -> Option<String> {
    let start = line.find(&format!("{field}="))? + field.len() + 1;
    let value = line[start..].split_whitespace().next()?;
    Some(value.trim_matches('"').to_owned())
}

// The example server.

fn start_server() -> Example {
    Example::start(
        "server",
        &[
            ("RUST_LOG", "info"),
            ("DUALCAST_JWT_SECRET", EXAMPLE_SECRET),
        ],
    )
}

/// Reads the server's log up to its listening line; the address it logged.
async fn server_address(server: &mut Example) -> SocketAddr {
    let line = server.line_containing("listening").await;
    let addr = field(&line, "addr").unwrap_or_else(|| panic!("no addr= in {line:?}"));
    addr.parse().unwrap_or_else(|_| panic!("{line:?}"))
}

fn assert_no_ansi(example: &Example) {
    for line in &example.seen {
        assert!(
            !line.contains("\x1b["),
            "a colour code in a log written to a pipe: {line:?}"
        );
    }
}

#[tokio::test]
async fn the_example_servers_log_written_to_a_pipe_has_no_colour_codes() {
    let mut server = start_server();
    let addr = server_address(&mut server).await;
    // A request, so that the log has more than the start-up lines.
    let (status, _, _) = http_at(addr, "GET", "/healthz", &[], Bytes::new()).await;
    assert!(status.is_success());
    assert!(!server.seen.is_empty());
    assert_no_ansi(&server);
}

#[tokio::test]
async fn sigint_shuts_the_example_server_down_counting_its_realtime_connections() {
    let mut server = start_server();
    let addr = server_address(&mut server).await;
    let token = token_for("player-1");
    let mut ws = ws_with_token_at(addr, "/api/ws", &token).await;
    let mut sse = sse_with_token_at(addr, "/sse/player-1", &token).await;

    server.interrupt();
    let line = server.line_containing("shutting down").await;
    assert_eq!(
        field(&line, "realtime").as_deref(),
        Some("2"),
        "both connections counted: {line:?}"
    );
    assert_eq!(ws.next_close().await, (1001, "server_shutdown".to_owned()));
    assert_eq!(
        sse.next_named("disconnect").await["reason"],
        "server_shutdown"
    );
    ws.finish_close().await;
    sse.closed().await;
    assert_no_ansi(&server);
    server.exits_successfully().await;
}

/// The example server with its own generated secret: no `DUALCAST_JWT_SECRET`.
fn start_server_with_generated_secret() -> Example {
    Example::start("server", &[("RUST_LOG", "info")])
}

/// `GET path` on `addr`: the status, the content type and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, Bytes) {
    let (status, headers, body) = http_at(addr, "GET", path, &[], Bytes::new()).await;
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status.as_u16(), content_type, body)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn the_example_server_serves_the_demo_page_the_browser_client_and_demo_tokens() {
    let mut server = start_server_with_generated_secret();
    let addr = server_address(&mut server).await;

    let (status, content_type, page) = get(addr, "/").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(
        page.contains(r#"from "/client/dualcast.js""#),
        "the page imports the client"
    );
    assert!(page.contains(r#"id="monitor-chart""#));
    for (path, file) in [
        ("/client/dualcast.js", include_str!("../client/dualcast.js")),
        ("/client/react.js", include_str!("../client/react.js")),
        (
            "/client/dualcast.d.ts",
            include_str!("../client/dualcast.d.ts"),
        ),
        ("/client/react.d.ts", include_str!("../client/react.d.ts")),
    ] {
        let (status, content_type, body) = get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        let expected = if path.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
        };
        assert_eq!(content_type, expected, "{path}");
        assert_eq!(&body[..], file.as_bytes(), "{path} is the file itself");
    }

    // A demo token opens what a player may open; a service one what a service may.
    let (status, _, body) = get(addr, "/demo/token?player=alice&ttl=60").await;
    assert_eq!(status, 200, "{body:?}");
    let answer = json(&body);
    assert_eq!(
        (answer["player_id"].as_str(), answer["role"].as_str()),
        (Some("alice"), Some("player"))
    );
    assert_eq!(
        (answer["demo"].as_bool(), answer["expires_in"].as_u64()),
        (Some(true), Some(60))
    );
    assert!(answer["note"]
        .as_str()
        .unwrap()
        .contains("DUALCAST_JWT_SECRET"));
    let player = answer["token"].as_str().unwrap().to_owned();
    let bearer = |token: &str| [("authorization", format!("Bearer {token}"))];
    let (status, _, body) = http_at(
        addr,
        "GET",
        "/api/connections/alice/session",
        &bearer(&player),
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    let (status, _, _) = http_at(
        addr,
        "GET",
        "/api/connections/stats",
        &bearer(&player),
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 403, "a player token is no service token");
    let (_, _, body) = get(addr, "/demo/token?player=backend&role=service").await;
    let service = json(&body)["token"].as_str().unwrap().to_owned();
    let (status, _, body) = http_at(
        addr,
        "GET",
        "/api/connections/stats",
        &bearer(&service),
        Bytes::new(),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");

    // Bad requests are the SPEC's error body.
    for (query, code) in [
        ("", "INVALID_PLAYER"),
        ("player=a%20b", "INVALID_PLAYER"),
        ("player=alice&role=admin", "INVALID_ROLE"),
        ("player=alice&ttl=0", "INVALID_TTL"),
        ("player=alice&ttl=86401", "INVALID_TTL"),
        ("player=alice&ttl=soon", "INVALID_TTL"),
    ] {
        let (status, _, body) = get(addr, &format!("/demo/token?{query}")).await;
        let answer = json(&body);
        assert_eq!(
            (status, answer["details"]["error_code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
        assert_eq!(answer["error"], true);
    }
    let (status, headers, body) = http_at(addr, "POST", "/", &[], Bytes::new()).await;
    assert_eq!(status, 405, "{body:?}");
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, _, body) = get(addr, "/client/other.js").await;
    assert_eq!(
        (status, json(&body)["details"]["error_code"].as_str()),
        (404, Some("ROUTE_NOT_FOUND"))
    );
    let (status, _, _) = get(addr, "/api/openapi.json").await;
    assert_eq!(status, 200, "the OpenAPI document is still served");
    server.interrupt();
    server.exits_successfully().await;
}

#[tokio::test]
async fn with_a_configured_secret_the_example_server_has_no_demo_tokens() {
    let mut server = start_server();
    let addr = server_address(&mut server).await;
    let (status, _, body) = get(addr, "/demo/token?player=alice").await;
    assert_eq!(
        (status, json(&body)["details"]["error_code"].as_str()),
        (404, Some("ROUTE_NOT_FOUND"))
    );
    let (status, _, _) = get(addr, "/").await;
    assert_eq!(status, 200, "the page is served: it asks for tokens");
    server.interrupt();
    server.exits_successfully().await;
}

// The axum example.

#[tokio::test]
async fn the_axum_example_serves_cookie_sessions_client_messages_its_own_404_and_stops_on_sigint() {
    let mut app = Example::start("axum", &[]);
    let addr = app.listening_address().await;

    let (status, headers, _) = http_at(addr, "GET", "/login/alice", &[], Bytes::new()).await;
    assert_eq!(status, 200);
    let set_cookie = headers["set-cookie"].to_str().unwrap();
    let session = set_cookie
        .split(';')
        .next()
        .filter(|pair| pair.starts_with("session="))
        .unwrap_or_else(|| panic!("a session cookie: {set_cookie:?}"));
    let cookie = [("cookie", session.to_owned())];

    let mut ws = ws_at(addr, "/rt/api/ws", &cookie)
        .await
        .unwrap_or_else(|refused| panic!("the WebSocket was refused: {refused:?}"));
    let mut sse = sse_at(addr, "/rt/api/sse", &cookie)
        .await
        .unwrap_or_else(|refused| panic!("the SSE stream was refused: {refused:?}"));

    let (status, _, body) = http_at(
        addr,
        "POST",
        "/announce",
        &cookie,
        Bytes::from_static(b"hello"),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    for envelope in [ws.next_json().await, sse.next_json().await] {
        assert_eq!(envelope["type"], "announcement");
        assert_eq!(envelope["data"], "hello");
    }

    // Client messages reach the app's handler with the identity of its cookie login: over
    // the WebSocket, and over HTTP for the SSE stream.
    ws.send_json(&serde_json::json!({"type": "whoami", "id": "w1"}))
        .await;
    let reply = ws.next_json().await;
    assert_eq!(
        (reply["type"].as_str(), reply["data"]["player"].as_str()),
        (Some("you_are"), Some("alice"))
    );
    let (status, _, body) = http_at(
        addr,
        "POST",
        "/rt/api/messages",
        &cookie,
        Bytes::from_static(br#"{"type":"whoami"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["reply"]["data"]["player"], "alice");

    let (status, _, body) = http_at(addr, "GET", "/nope", &[], Bytes::new()).await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (404, &b"the app's own 404\n"[..])
    );

    app.interrupt();
    assert_eq!(ws.next_close().await, (1001, "server_shutdown".to_owned()));
    assert_eq!(
        sse.next_named("disconnect").await["reason"],
        "server_shutdown"
    );
    ws.finish_close().await;
    sse.closed().await;
    app.exits_successfully().await;
}

// The hyper example.

#[tokio::test]
async fn the_hyper_example_serves_its_handlers_at_its_own_paths_and_stops_on_sigint() {
    let mut app = Example::start("hyper", &[("DUALCAST_JWT_SECRET", EXAMPLE_SECRET)]);
    let addr = app.listening_address().await;
    let token = token_for("kim");

    let mut ws = ws_with_token_at(addr, "/play", &token).await;
    assert_eq!(ws.response.headers()["sec-websocket-protocol"], "bearer");
    let mut sse = sse_with_token_at(addr, "/events", &token).await;
    // The host publishes a tick every second.
    for envelope in [ws.next_json().await, sse.next_json().await] {
        assert_eq!(envelope["type"], "tick");
    }

    app.interrupt();
    assert_eq!(ws.next_close().await, (1001, "server_shutdown".to_owned()));
    assert_eq!(
        sse.next_named("disconnect").await["reason"],
        "server_shutdown"
    );
    ws.finish_close().await;
    sse.closed().await;
    app.exits_successfully().await;
}

#[tokio::test]
async fn the_example_servers_say_reaches_every_member_of_the_room_and_nobody_else() {
    use serde_json::{json, Value};
    let mut server = start_server();
    let addr = server_address(&mut server).await;
    let service = issue_hs256(
        EXAMPLE_SECRET.as_bytes(),
        &Claims::new("backend", Role::Service, 3600),
    )
    .unwrap();
    let as_service = [
        ("authorization", format!("Bearer {service}")),
        ("content-type", "application/json".to_owned()),
    ];
    for member in ["ann", "ben"] {
        let path = format!("/api/rooms/lobby/members/{member}");
        let (status, _, body) = http_at(addr, "PUT", &path, &as_service, Bytes::new()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let mut ann = ws_with_token_at(addr, "/api/ws", &token_for("ann")).await;
    let mut ben = sse_with_token_at(addr, "/sse/ben", &token_for("ben")).await;
    let mut cat = ws_with_token_at(addr, "/api/ws", &token_for("cat")).await;

    let say = json!({"type": "say", "id": "s1", "data": {"room": "lobby", "text": "hello"}});
    ann.send_json(&say).await;
    let heard = ben.next_json().await;
    assert_eq!(heard["type"], "say", "{}", abbreviated(&heard));
    assert_eq!(heard["room"], "lobby");
    assert_eq!(heard["data"], json!({"from": "ann", "text": "hello"}));
    // The sender is a member too: it gets the same say, and the reply for it alone.
    let to_ann = [ann.next_json().await, ann.next_json().await];
    let of_type = |wanted: &str| -> &Value {
        to_ann
            .iter()
            .find(|envelope| envelope["type"] == wanted)
            .unwrap_or_else(|| panic!("no {wanted} for the sender among {to_ann:?}"))
    };
    assert_eq!(
        of_type("say")["id"],
        heard["id"],
        "one envelope for every member"
    );
    let said = &of_type("said")["data"];
    assert_eq!(
        (&said["room"], &said["id"], &said["players"]),
        (&json!("lobby"), &json!("s1"), &json!(2))
    );

    // An outsider's say is refused, and reaches nobody.
    cat.send_json(&say).await;
    let refused = cat.next_json().await;
    assert_eq!(refused["type"], "error", "{}", abbreviated(&refused));
    assert_eq!(refused["data"]["error_code"], "NOT_A_ROOM_MEMBER");
    let body = Bytes::from(json!({"type": SENTINEL}).to_string());
    let (status, _, report) = http_at(addr, "POST", "/api/broadcast", &as_service, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&report));
    let report: Value = serde_json::from_slice(&report).unwrap();
    let sentinel = report["id"]
        .as_str()
        .expect("the report names the envelope");
    ann.expect_next_is_sentinel(sentinel).await;
    ben.expect_next_is_sentinel(sentinel).await;
    cat.expect_next_is_sentinel(sentinel).await;

    server.interrupt();
    for ws in [&mut ann, &mut cat] {
        assert_eq!(ws.next_close().await, (1001, "server_shutdown".to_owned()));
        ws.finish_close().await;
    }
    assert_eq!(
        ben.next_named("disconnect").await["reason"],
        "server_shutdown"
    );
    ben.closed().await;
    server.exits_successfully().await;
}

#[tokio::test]
async fn a_redis_url_that_cannot_be_used_is_a_start_up_error_rather_than_ignored() {
    let mut server = Example::start("server", &[("DUALCAST_REDIS_URL", "redis://127.0.0.1:1")]);
    let status = within_for(
        PROCESS_BOUND,
        "the refusing server's exit",
        server.child.wait(),
    )
    .await
    .expect("the exit status");
    assert_eq!(status.code(), Some(2), "a start-up error");
    // Everything it wrote: the reader task ends at the end of its stdout.
    within("the rest of its stdout", async {
        while let Some(line) = server.lines.recv().await {
            server.seen.push(line);
        }
    })
    .await;
    let said = server.seen.join("\n");
    // Built with the `redis` feature, the URL is used, and nothing answers at port 1;
    // without it, the URL is refused as unsupported. Either way a clear start-up error.
    // (Which build `target/debug/examples/server` is depends on the last build: cargo does
    // not re-link a fresh example when the features change.)
    let unreachable = said.contains("DUALCAST_REDIS_URL: Redis at 127.0.0.1:1 did not answer");
    let unsupported = said.contains(
        "DUALCAST_REDIS_URL is set, but this server was built without the `redis` feature",
    );
    assert!(unreachable || unsupported, "{said}");
    assert!(!said.contains("listening"), "it never listened: {said}");
}

/// `GET /healthz` of the node at `addr`, as JSON.
#[cfg(feature = "redis")]
async fn health_at(addr: SocketAddr) -> serde_json::Value {
    let (status, _, body) = http_at(addr, "GET", "/healthz", &[], Bytes::new()).await;
    assert_eq!(status, http::StatusCode::OK);
    serde_json::from_slice(&body).expect("JSON")
}

/// Asks the node at `addr` for its health until `accept` takes it, for up to `limit`.
#[cfg(feature = "redis")]
async fn health_until(
    addr: SocketAddr,
    limit: Duration,
    what: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
) {
    within_for(limit, what, async {
        loop {
            if accept(&health_at(addr).await) {
                return;
            }
            tokio::time::sleep(POLL_STEP).await;
        }
    })
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn three_example_servers_on_one_redis_act_as_one_and_a_killed_nodes_connections_and_presence_expire(
) {
    let redis = common::redis_server::RedisServer::start().await;
    let url = redis.url();
    let env = |node: &'static str| {
        [
            ("RUST_LOG", "info"),
            ("DUALCAST_JWT_SECRET", EXAMPLE_SECRET),
            ("DUALCAST_REDIS_URL", url.as_str()),
            ("DUALCAST_NODE_ID", node),
        ]
        .map(|(k, v)| (k, v.to_owned()))
    };
    let start = |node| {
        let env = env(node);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Example::start("server", &pairs)
    };
    let mut x = start("x");
    let mut y = start("y");
    let mut z = start("z");
    let (x_addr, y_addr) = (server_address(&mut x).await, server_address(&mut y).await);
    let z_addr = server_address(&mut z).await;
    health_until(x_addr, PROCESS_BOUND, "x sees y and z", |health| {
        health["backplane"] == serde_json::json!({"node": "x", "state": "up", "peers": 2})
    })
    .await;

    let mut alice = sse_with_token_at(y_addr, "/sse/alice", &token_for("alice")).await;
    let mut alice_on_z = sse_with_token_at(z_addr, "/sse/alice", &token_for("alice")).await;
    let service = issue_hs256(
        EXAMPLE_SECRET.as_bytes(),
        &Claims::new("backend", Role::Service, 3600),
    )
    .unwrap();
    let publish = || async {
        let (status, _, body) = http_at(
            x_addr,
            "POST",
            "/api/players/alice/messages",
            &[
                ("authorization", format!("Bearer {service}")),
                ("content-type", "application/json".to_owned()),
            ],
            Bytes::from_static(br#"{"type":"chat","data":"hi"}"#),
        )
        .await;
        assert_eq!(status, http::StatusCode::OK);
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let report = publish().await;
    assert_eq!(report["sse"], 2, "{report}");
    assert_eq!(alice.next_json().await["id"], report["id"]);
    assert_eq!(alice_on_z.next_json().await["id"], report["id"]);

    let presence_on_x = || async {
        let (status, _, body) = http_at(
            x_addr,
            "GET",
            "/api/connections/alice",
            &[("authorization", format!("Bearer {service}"))],
            Bytes::new(),
        )
        .await;
        assert_eq!(status, http::StatusCode::OK);
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    // Announced through the log: x learns of them a moment after y and z registered them.
    let presence_until = |what: &'static str, accept: fn(&serde_json::Value) -> bool| {
        let presence_on_x = &presence_on_x;
        async move {
            within_for(PROCESS_BOUND, what, async {
                loop {
                    let seen = presence_on_x().await;
                    if accept(&seen) {
                        return seen;
                    }
                    tokio::time::sleep(POLL_STEP).await;
                }
            })
            .await
        }
    };
    let seen = presence_until("x sees alice's streams on y and z", |seen| {
        seen["presence"]["total_connections"] == 2
    })
    .await;
    assert_eq!(seen["presence"]["status"], "online", "{seen}");
    let mut nodes: Vec<&str> = (0..2)
        .map(|i| seen["cluster"][i]["node"].as_str().unwrap())
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["y", "z"], "{seen}");

    // SIGKILL: y says no goodbye; x stops counting it within the node timeout (5 s), and
    // alice is still online through z.
    y.child.kill().await.unwrap();
    health_until(x_addr, PROCESS_BOUND, "x no longer sees y", |health| {
        health["backplane"]["peers"] == 1
    })
    .await;
    let left = presence_until("x forgets y's stream", |seen| {
        seen["presence"]["total_connections"] == 1
    })
    .await;
    assert_eq!(left["presence"]["status"], "online", "z holds one: {left}");
    assert_eq!(left["cluster"][0]["node"], "z", "{left}");
    // The last stream goes: alice is no longer online anywhere.
    drop(alice_on_z);
    let gone = presence_until("alice's last stream closes", |seen| {
        seen["presence"]["total_connections"] == 0
    })
    .await;
    assert_ne!(gone["presence"]["status"], "online", "{gone}");
    let report = publish().await;
    let mut answered: Vec<&str> = (0..2)
        .map(|i| report["nodes"][i]["node"].as_str().unwrap())
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, ["x", "z"], "{report}");
    assert_eq!(report["unanswered"], serde_json::json!([]), "{report}");
    for node in [x, z] {
        node.interrupt();
        node.exits_successfully().await;
    }
}

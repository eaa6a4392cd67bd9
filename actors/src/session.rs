//! # SocketSession — one per guest table socket or kitchen socket
//!
//! Owns one socket's conversation: `hello`, then `resume` or snapshot, then live events (pushed straight
//! into its [`SocketSink`] by the restaurant actor), server pings with a timeout, and for the kitchen the
//! `set_status` requests answered with `ack` or `error`. It sees its socket only through the seam: a
//! stream of [`Inbound`] frames and the bounded sink of outbound ones, so the transport underneath can be
//! replaced without touching this file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use scan2order_schema::domain::StaffId;
use scan2order_schema::tokens;
use scan2order_schema::wire::{ClientMsg, ServerMsg};

use crate::restaurant::{Audience, ChangeStatus, EngineError, SayHello, Subscribe, Unsubscribe};
use crate::room::Room;
use crate::sink::{close_code, Outgoing, SocketSink};

/// Timing and limits of every socket session.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// How often the server pings.
    pub ping_interval: Duration,
    /// A socket that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// How long a new socket waits for a `resume` before it gets a snapshot.
    pub resume_grace: Duration,
    /// Inbound messages allowed per second; more closes the socket with 1008.
    pub max_inbound_per_sec: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            resume_grace: Duration::from_millis(500),
            max_inbound_per_sec: 20,
        }
    }
}

/// One inbound frame, as the transport hands it over.
#[derive(Debug)]
pub enum Inbound {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The frame was over the size limit.
    TooBig,
    /// The peer closed or broke the connection.
    Closed,
}

pub struct SocketSession {
    restaurant: Room,
    audience: Audience,
    table_token: Option<String>,
    staff: Option<StaffId>,
    sink: SocketSink,
    resume: Option<(String, u64)>,
    subscription: Option<u64>,
    subscribing: bool,
    /// The client has sent a message (a `resume` is only accepted as the first).
    spoke: bool,
    last_heard: Instant,
    window_start: Instant,
    window_count: u32,
    /// Shared by every session of a worker: a socket should not carry its own copy.
    settings: Arc<SessionSettings>,
}

impl SocketSession {
    /// A session for `audience`; `resume` when the client put `epoch`/`since` in the URL.
    pub fn new(
        restaurant: Room,
        audience: Audience,
        table_token: Option<String>,
        staff: Option<StaffId>,
        sink: SocketSink,
        resume: Option<(String, u64)>,
        settings: Arc<SessionSettings>,
    ) -> Self {
        let now = Instant::now();
        SocketSession {
            restaurant,
            audience,
            table_token,
            staff,
            sink,
            resume,
            subscription: None,
            subscribing: false,
            spoke: false,
            last_heard: now,
            window_start: now,
            window_count: 0,
            settings,
        }
    }

    fn subscribe(&mut self, ctx: &mut Context<Self>, hello: bool) {
        if self.subscription.is_some() || self.subscribing {
            return;
        }
        self.subscribing = true;
        let msg = Subscribe {
            sink: self.sink.clone(),
            audience: self.audience,
            table_token: self.table_token.clone(),
            staff: self.staff,
            resume: self.resume.take(),
            hello,
        };
        let room = self.restaurant.clone();
        ctx.wait(
            async move { room.subscribe(msg).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.subscribing = false;
                    match res {
                        Ok(Ok(id)) => act.subscription = Some(id),
                        Ok(Err(EngineError::NotFound(_))) => {
                            act.sink.close(close_code::POLICY);
                            ctx.stop();
                        }
                        _ => {
                            act.sink.close(close_code::GOING_AWAY);
                            ctx.stop();
                        }
                    }
                }),
        );
    }

    fn send(&self, msg: &ServerMsg) {
        if let Ok(s) = serde_json::to_string(msg) {
            let _ = self.sink.send_text(s.into());
        }
    }

    fn error(&self, request_id: Option<String>, error: &str, message: String) {
        self.send(&ServerMsg::Error {
            request_id,
            error: error.to_string(),
            message,
        });
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let msg = match ClientMsg::parse(text) {
            Ok(m) => m,
            Err(e) => {
                self.error(
                    None,
                    "invalid_request",
                    format!("message not understood: {e}"),
                );
                return;
            }
        };
        match msg {
            ClientMsg::Resume { epoch, since } => {
                if self.spoke {
                    self.error(
                        None,
                        "invalid_request",
                        "resume must be the first message".into(),
                    );
                    return;
                }
                self.spoke = true;
                if self.subscription.is_some() || self.subscribing {
                    // The client's first message, but after the resume grace: the socket was
                    // subscribed with a snapshot already, which brings it up to date.
                    return;
                }
                self.resume = Some((epoch, since));
                self.subscribe(ctx, false);
            }
            ClientMsg::SetStatus {
                request_id,
                order_id,
                status,
                allergy_ack,
            } => {
                self.spoke = true;
                if self.audience != Audience::Kitchen {
                    self.error(
                        Some(request_id),
                        "forbidden",
                        "only the kitchen may change orders".into(),
                    );
                    return;
                }
                self.subscribe(ctx, false);
                let msg = ChangeStatus {
                    order_id,
                    status,
                    by: self.staff,
                    session: None,
                    // A kitchen that sends a change again (reconnected without its answer) is
                    // answered as done rather than refused.
                    request_id: Some(tokens::request_key(&request_id)),
                    allergy_ack,
                };
                let room = self.restaurant.clone();
                ctx.spawn(
                    async move { room.change_status(msg).await }
                        .into_actor(self)
                        .map(move |res, act, _| match res {
                            Ok(Ok(_)) => act.send(&ServerMsg::Ack { request_id }),
                            Ok(Err(e)) => {
                                let (code, message) = e.code();
                                act.error(Some(request_id), code, message);
                            }
                            Err(_) => act.error(
                                Some(request_id),
                                "unavailable",
                                "the kitchen service is restarting; try again".into(),
                            ),
                        }),
                );
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self.audience {
            Audience::Kitchen => "kitchen",
            Audience::Table(_) => "table",
        }
    }

    /// Counts an inbound message; false once the client sends faster than allowed.
    fn within_rate(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count += 1;
        self.window_count <= self.settings.max_inbound_per_sec
    }
}

/// Socket sessions running in this process (what the node reports to its fleet).
static OPEN_SOCKETS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// How many socket sessions this process runs now.
pub fn open_sockets() -> i64 {
    OPEN_SOCKETS.load(std::sync::atomic::Ordering::Relaxed)
}

impl Actor for SocketSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        OPEN_SOCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("s2o_sockets", "kind" => self.kind()).increment(1.0);
        metrics::counter!("s2o_socket_connects_total", "kind" => self.kind()).increment(1);
        if self.resume.is_some() {
            self.subscribe(ctx, true);
        } else {
            self.restaurant.say_hello(SayHello {
                sink: self.sink.clone(),
            });
            ctx.run_later(self.settings.resume_grace, |act, ctx| {
                act.subscribe(ctx, false)
            });
        }
        ctx.run_interval(self.settings.ping_interval, |act, ctx| {
            if act.sink.is_closed() {
                ctx.stop();
            } else if !act.restaurant.connected() {
                // The restaurant actor died: it comes back under a new epoch; reconnecting gets a
                // fresh snapshot from it.
                act.sink.close(close_code::GOING_AWAY);
                ctx.stop();
            } else if act.last_heard.elapsed() > act.settings.idle_timeout {
                act.sink.close(close_code::GOING_AWAY);
                ctx.stop();
            } else {
                let _ = act.sink.push(Outgoing::Ping);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        OPEN_SOCKETS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("s2o_sockets", "kind" => self.kind()).decrement(1.0);
        metrics::counter!("s2o_socket_disconnects_total", "kind" => self.kind()).increment(1);
        if let Some(id) = self.subscription.take() {
            self.restaurant.unsubscribe(Unsubscribe {
                id,
                audience: self.audience,
            });
        }
    }
}

impl StreamHandler<Inbound> for SocketSession {
    fn handle(&mut self, frame: Inbound, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        // Every frame the client chooses to send counts, pings and pongs too: a ping flood costs the
        // server as much as a message flood.
        let counted = matches!(
            frame,
            Inbound::Text(_) | Inbound::Binary | Inbound::Ping(_) | Inbound::Pong
        );
        if counted && !self.within_rate() {
            self.sink.close(close_code::POLICY);
            ctx.stop();
            return;
        }
        match frame {
            Inbound::Text(text) => self.on_text(&text, ctx),
            Inbound::Binary => {
                self.error(
                    None,
                    "invalid_request",
                    "messages are JSON text frames".into(),
                );
            }
            Inbound::Ping(payload) => {
                let _ = self.sink.push(Outgoing::Pong(payload));
            }
            Inbound::Pong => {}
            Inbound::TooBig => {
                self.sink.close(close_code::TOO_BIG);
                ctx.stop();
            }
            Inbound::Closed => ctx.stop(),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

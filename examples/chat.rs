//! A TCP chat server: one actor per connection and one room actor. Lines a
//! client sends are broadcast to everyone else in the room.
//!
//! Run: `cargo run --example chat [ADDR]` (default `127.0.0.1:7878`), then in
//! other terminals: `nc 127.0.0.1 7878`. Commands: `/nick NAME`, `/who`,
//! `/quit`. Ctrl-C stops the server gracefully.
//!
//! A slow client never stalls the room: the room hands lines to sessions with
//! `try_send`, and a session whose mailbox is full misses lines (and is told
//! so) instead of blocking everyone.

#![allow(clippy::print_stdout)] // An example talks to its user.

use std::collections::BTreeMap;

use shoal::actor::{
    Actor, ActorId, ActorSystem, Addr, Context, Handler, Message, SendError, StreamHandler,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

/// Longest line a client may send, in bytes.
const LINE_BYTES_MAX: usize = 4096;
/// Lines a session may have queued before it starts missing some.
const SESSION_MAILBOX: usize = 64;

// ---- the room -----------------------------------------------------------

#[derive(Default)]
struct Room {
    members: BTreeMap<ActorId, (String, Addr<Session>)>,
}
impl Actor for Room {}

impl Room {
    fn broadcast(&mut self, from: Option<ActorId>, line: &str) {
        for (id, (nick, session)) in &self.members {
            if Some(*id) == from {
                continue;
            }
            match session.try_send(Deliver(line.to_owned())) {
                Ok(()) | Err(SendError::MailboxClosed) => {}
                Err(e) => tracing::warn!(%nick, error = %e, "dropping a line for a slow client"),
            }
        }
    }
}

struct Join {
    session: Addr<Session>,
}
impl Message for Join {
    type Result = String;
}
impl Handler<Join> for Room {
    async fn handle(&mut self, msg: Join, _ctx: &mut Context<Self>) -> String {
        let id = msg.session.id();
        let nick = format!("guest{}", id.get());
        self.broadcast(None, &format!("* {nick} joined"));
        self.members.insert(id, (nick.clone(), msg.session));
        nick
    }
}

struct Leave(ActorId);
impl Message for Leave {
    type Result = ();
}
impl Handler<Leave> for Room {
    async fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        if let Some((nick, _)) = self.members.remove(&msg.0) {
            self.broadcast(None, &format!("* {nick} left"));
        }
    }
}

struct Say {
    from: ActorId,
    text: String,
}
impl Message for Say {
    type Result = ();
}
impl Handler<Say> for Room {
    async fn handle(&mut self, msg: Say, _ctx: &mut Context<Self>) {
        let Some((nick, _)) = self.members.get(&msg.from) else {
            return;
        };
        let line = format!("<{nick}> {}", msg.text);
        self.broadcast(Some(msg.from), &line);
    }
}

struct Rename {
    from: ActorId,
    nick: String,
}
impl Message for Rename {
    type Result = Result<(), String>;
}
impl Handler<Rename> for Room {
    async fn handle(&mut self, msg: Rename, _ctx: &mut Context<Self>) -> Result<(), String> {
        if msg.nick.is_empty() || msg.nick.len() > 32 || msg.nick.contains(char::is_whitespace) {
            return Err("a nick is 1 to 32 characters without spaces".into());
        }
        if self.members.values().any(|(n, _)| *n == msg.nick) {
            return Err(format!("{} is taken", msg.nick));
        }
        let Some((nick, _)) = self.members.get_mut(&msg.from) else {
            return Err("not in the room".into());
        };
        let old = std::mem::replace(nick, msg.nick.clone());
        self.broadcast(None, &format!("* {old} is now {}", msg.nick));
        Ok(())
    }
}

struct Who;
impl Message for Who {
    type Result = Vec<String>;
}
impl Handler<Who> for Room {
    async fn handle(&mut self, _: Who, _ctx: &mut Context<Self>) -> Vec<String> {
        self.members.values().map(|(n, _)| n.clone()).collect()
    }
}

// ---- one session per connection -----------------------------------------

struct Session {
    room: Addr<Room>,
    reader: Option<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Session {
    async fn write(&mut self, line: &str, ctx: &mut Context<Self>) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if self.writer.write_all(&bytes).await.is_err() {
            ctx.stop();
        }
    }
}

impl Actor for Session {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(reader) = self.reader.take() {
            let lines = FramedRead::new(reader, LinesCodec::new_with_max_length(LINE_BYTES_MAX));
            ctx.add_stream(lines);
        }
        match self
            .room
            .send(Join {
                session: ctx.address(),
            })
            .await
        {
            Ok(nick) => {
                let hello = format!("* welcome, {nick}. Commands: /nick NAME, /who, /quit");
                self.write(&hello, ctx).await;
            }
            Err(_) => ctx.stop(),
        }
    }

    async fn stopped(&mut self, ctx: &mut Context<Self>) {
        let _ = self.room.do_send(Leave(ctx.id())).await;
        let _ = self.writer.shutdown().await;
    }
}

/// A line for this client.
struct Deliver(String);
impl Message for Deliver {
    type Result = ();
}
impl Handler<Deliver> for Session {
    async fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        self.write(&msg.0, ctx).await;
    }
}

impl StreamHandler<Result<String, LinesCodecError>> for Session {
    async fn handle(&mut self, line: Result<String, LinesCodecError>, ctx: &mut Context<Self>) {
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                self.write(
                    &format!("* lines are limited to {LINE_BYTES_MAX} bytes"),
                    ctx,
                )
                .await;
                ctx.stop();
                return;
            }
            Err(LinesCodecError::Io(_)) => {
                ctx.stop();
                return;
            }
        };
        let line = line.trim_end_matches('\r');
        let me = ctx.id();
        if let Some(nick) = line.strip_prefix("/nick ") {
            let answer = match self
                .room
                .send(Rename {
                    from: me,
                    nick: nick.trim().to_owned(),
                })
                .await
            {
                Ok(Ok(())) => return,
                Ok(Err(reason)) => format!("* {reason}"),
                Err(e) => format!("* {e}"),
            };
            self.write(&answer, ctx).await;
        } else if line == "/who" {
            let answer = match self.room.send(Who).await {
                Ok(nicks) => format!("* here: {}", nicks.join(", ")),
                Err(e) => format!("* {e}"),
            };
            self.write(&answer, ctx).await;
        } else if line == "/quit" {
            self.write("* bye", ctx).await;
            ctx.stop();
        } else if !line.is_empty() {
            let _ = self
                .room
                .do_send(Say {
                    from: me,
                    text: line.to_owned(),
                })
                .await;
        }
    }

    async fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    let listener = TcpListener::bind(&addr).await?;
    let system = ActorSystem::new();
    let room = system.spawn(Room::default());
    println!(
        "chat server on {addr}; connect with `nc {}`",
        addr.replace(':', " ")
    );

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let (reader, writer) = stream.into_split();
                system.spawn_with_capacity(
                    Session { room: room.clone(), reader: Some(reader), writer },
                    SESSION_MAILBOX,
                );
                tracing::info!(%peer, "client connected");
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("shutting down");
    system.shutdown().await;
    Ok(())
}

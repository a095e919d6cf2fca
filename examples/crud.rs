//! An in-memory user store as an actor: create, read, update, delete and
//! list users from many concurrent tasks, with no locks. The actor owns the
//! map; every operation is a message handled one at a time.
//!
//! Run: `cargo run --example crud`

#![allow(clippy::print_stdout)] // An example talks to its user.

use std::collections::BTreeMap;

use shoal::actor::{Actor, ActorSystem, Context, Handler, Message};

#[derive(Debug, Clone, PartialEq)]
struct User {
    id: u64,
    name: String,
    email: String,
}

#[derive(Debug, thiserror::Error)]
enum StoreError {
    #[error("no user with id {0}")]
    NotFound(u64),
    #[error("the email {0} is already taken")]
    EmailTaken(String),
}

#[derive(Default)]
struct UserStore {
    users: BTreeMap<u64, User>,
    next_id: u64,
}

impl Actor for UserStore {}

impl UserStore {
    fn email_taken(&self, email: &str, except: Option<u64>) -> bool {
        self.users
            .values()
            .any(|u| u.email == email && Some(u.id) != except)
    }
}

struct Create {
    name: String,
    email: String,
}
impl Message for Create {
    type Result = Result<User, StoreError>;
}
impl Handler<Create> for UserStore {
    async fn handle(&mut self, msg: Create, _ctx: &mut Context<Self>) -> Result<User, StoreError> {
        if self.email_taken(&msg.email, None) {
            return Err(StoreError::EmailTaken(msg.email));
        }
        self.next_id += 1;
        let user = User {
            id: self.next_id,
            name: msg.name,
            email: msg.email,
        };
        self.users.insert(user.id, user.clone());
        Ok(user)
    }
}

struct Get(u64);
impl Message for Get {
    type Result = Option<User>;
}
impl Handler<Get> for UserStore {
    async fn handle(&mut self, msg: Get, _ctx: &mut Context<Self>) -> Option<User> {
        self.users.get(&msg.0).cloned()
    }
}

struct UpdateEmail {
    id: u64,
    email: String,
}
impl Message for UpdateEmail {
    type Result = Result<User, StoreError>;
}
impl Handler<UpdateEmail> for UserStore {
    async fn handle(
        &mut self,
        msg: UpdateEmail,
        _ctx: &mut Context<Self>,
    ) -> Result<User, StoreError> {
        if self.email_taken(&msg.email, Some(msg.id)) {
            return Err(StoreError::EmailTaken(msg.email));
        }
        let user = self
            .users
            .get_mut(&msg.id)
            .ok_or(StoreError::NotFound(msg.id))?;
        user.email = msg.email;
        Ok(user.clone())
    }
}

struct Delete(u64);
impl Message for Delete {
    type Result = Result<User, StoreError>;
}
impl Handler<Delete> for UserStore {
    async fn handle(&mut self, msg: Delete, _ctx: &mut Context<Self>) -> Result<User, StoreError> {
        self.users.remove(&msg.0).ok_or(StoreError::NotFound(msg.0))
    }
}

struct List;
impl Message for List {
    type Result = Vec<User>;
}
impl Handler<List> for UserStore {
    async fn handle(&mut self, _: List, _ctx: &mut Context<Self>) -> Vec<User> {
        self.users.values().cloned().collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let system = ActorSystem::new();
    let store = system.spawn(UserStore::default());
    system.register("users", &store)?;

    let alice = store
        .send(Create {
            name: "Alice".into(),
            email: "alice@example.com".into(),
        })
        .await??;
    println!("created {alice:?}");

    // Many tasks write at once; the actor serialises them, no lock needed.
    let writers: Vec<_> = (0..100)
        .map(|i| {
            let store = system.lookup::<UserStore>("users").expect("registered");
            tokio::spawn(async move {
                store
                    .send(Create {
                        name: format!("user-{i}"),
                        email: format!("user-{i}@example.com"),
                    })
                    .await
            })
        })
        .collect();
    for w in writers {
        w.await???;
    }

    let dup = store
        .send(Create {
            name: "Mallory".into(),
            email: "alice@example.com".into(),
        })
        .await?;
    println!("duplicate email refused: {}", dup.unwrap_err());

    let updated = store
        .send(UpdateEmail {
            id: alice.id,
            email: "alice@shoal.dev".into(),
        })
        .await??;
    println!("updated {updated:?}");
    println!("read back {:?}", store.send(Get(alice.id)).await?);
    println!("deleted {:?}", store.send(Delete(alice.id)).await??);
    println!(
        "deleting again: {}",
        store.send(Delete(alice.id)).await?.unwrap_err()
    );
    println!("{} users left", store.send(List).await?.len());

    system.shutdown().await;
    Ok(())
}

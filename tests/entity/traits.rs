//! Entity traits: one behaviour with its own handlers and state, composed
//! into two entity types and called through each one's client.

use serde::{Deserialize, Serialize};
use shoal::Node;
use shoal::entity::{
    Activity, ActivityContext, Composes, Entity, EntityError, EntityTrait, Handlers, Rpc,
    RpcContext, Visibility,
};

/// An audit log, reusable by any entity.
struct Auditable;

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuditLog {
    entries: Vec<String>,
}

impl EntityTrait for Auditable {
    const NAME: &'static str = "Auditable";
    type State = AuditLog;
    fn handlers<E: Composes<Self>>(h: &mut Handlers<E>) {
        h.activity(Record).rpc(Entries).activity(Purge);
    }
}

struct Record;
impl<E: Composes<Auditable>> Activity<E> for Record {
    const NAME: &'static str = "audit.record";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = String;
    type Output = usize;
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, E>, entry: String) -> Result<usize, String> {
        let log = ctx.trait_state_mut::<Auditable>();
        log.entries.push(entry);
        Ok(log.entries.len())
    }
}

struct Entries;
impl<E: Composes<Auditable>> Rpc<E> for Entries {
    const NAME: &'static str = "audit.entries";
    type Params = ();
    type Output = Vec<String>;
    async fn run(&self, ctx: &RpcContext<'_, E>, (): ()) -> Vec<String> {
        ctx.trait_state::<Auditable>().entries.clone()
    }
}

/// Protected: for the entity and its traits, not for clients.
struct Purge;
impl<E: Composes<Auditable>> Activity<E> for Purge {
    const NAME: &'static str = "audit.purge";
    const VISIBILITY: Visibility = Visibility::Protected;
    type Params = ();
    type Output = ();
    type Error = String;
    async fn run(&self, ctx: &mut ActivityContext<'_, E>, (): ()) -> Result<(), String> {
        ctx.trait_state_mut::<Auditable>().entries.clear();
        Ok(())
    }
}

/// First composing type: an account whose own activity also audits.
struct Account;
#[derive(Default, Serialize, Deserialize)]
struct AccountState {
    balance: i64,
    #[serde(default)]
    audit: AuditLog,
}
impl Entity for Account {
    const NAME: &'static str = "AuditedAccount";
    type State = AccountState;
    fn handlers(h: &mut Handlers<Self>) {
        h.activity(Deposit).compose::<Auditable>();
    }
}
impl Composes<Auditable> for Account {
    fn trait_state(state: &AccountState) -> &AuditLog {
        &state.audit
    }
    fn trait_state_mut(state: &mut AccountState) -> &mut AuditLog {
        &mut state.audit
    }
}
struct Deposit;
impl Activity<Account> for Deposit {
    const NAME: &'static str = "deposit";
    const VISIBILITY: Visibility = Visibility::Public;
    type Params = i64;
    type Output = i64;
    type Error = String;
    async fn run(
        &self,
        ctx: &mut ActivityContext<'_, Account>,
        amount: i64,
    ) -> Result<i64, String> {
        ctx.state_mut().balance += amount;
        ctx.trait_state_mut::<Auditable>()
            .entries
            .push(format!("deposit {amount}"));
        Ok(ctx.state().balance)
    }
}

/// Second composing type, with nothing else in common.
struct Order;
#[derive(Default, Serialize, Deserialize)]
struct OrderState {
    status: String,
    #[serde(default)]
    audit: AuditLog,
}
impl Entity for Order {
    const NAME: &'static str = "AuditedOrder";
    type State = OrderState;
    fn handlers(h: &mut Handlers<Self>) {
        h.compose::<Auditable>();
    }
}
impl Composes<Auditable> for Order {
    fn trait_state(state: &OrderState) -> &AuditLog {
        &state.audit
    }
    fn trait_state_mut(state: &mut OrderState) -> &mut AuditLog {
        &mut state.audit
    }
}

#[tokio::test]
async fn a_trait_composed_into_two_entity_types_is_callable_through_each_client() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Node::builder()
            .data_dir(dir.path())
            .register(Account)
            .register(Order)
            .start()
    };
    let node = start().await.unwrap();
    let account = node.client::<Account>("a-1");
    let order = node.client::<Order>("o-1");
    assert_eq!(account.call(Deposit, 50).await.unwrap(), Ok(50));
    assert_eq!(
        account
            .call(Record, "checked by ops".to_owned())
            .await
            .unwrap(),
        Ok(2)
    );
    assert_eq!(
        order.call(Record, "created".to_owned()).await.unwrap(),
        Ok(1)
    );
    assert_eq!(
        account.call(Entries, ()).await.unwrap(),
        vec!["deposit 50".to_owned(), "checked by ops".to_owned()]
    );
    assert_eq!(
        order.call(Entries, ()).await.unwrap(),
        vec!["created".to_owned()]
    );
    // Protected trait handlers are not for clients.
    let err = account.call(Purge, ()).await.unwrap_err();
    assert!(
        matches!(
            err,
            EntityError::NotCallable {
                visibility: Visibility::Protected,
                ..
            }
        ),
        "{err}"
    );
    node.shutdown().await.unwrap();

    tracing::info!("--- the trait's state is part of each entity's state: it persists");
    let node = start().await.unwrap();
    assert_eq!(
        node.client::<Order>("o-1").call(Entries, ()).await.unwrap(),
        vec!["created".to_owned()]
    );
    assert_eq!(
        node.client::<Account>("a-1")
            .call(Entries, ())
            .await
            .unwrap()
            .len(),
        2
    );
    node.shutdown().await.unwrap();
}

//! The CouchShare reconciler: observe (endpoints, credentials, what CouchDB holds), decide with
//! [`plan_share`], execute its steps in order, report the plan's status.
//!
//! The parts: `endpoints` (source and target to places), `checks` (before anything is
//! written), `replication_user` (the credentials stage), `steps` (observe and execute against
//! CouchDB), `onchange` (a share with strategy OnChange, run by the `engine`), `revoke` (revoke,
//! withdraw, cleanup) with `stop` and `purge`, and `places` (where a share's ends are). What
//! other kinds need of shares is in `plan::share::refs` and `plan::access`; nothing here is
//! used from another kind's folder.

mod checks;
mod endpoints;
pub(crate) mod engine;
mod onchange;
mod places;
mod purge;
mod replication_user;
mod revoke;
mod steps;
mod stop;

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::api::{CouchShare, CouchShareStatus, ShareCredentials, ShareStrategy, condition};
use crate::controller::runtime::context::Context;
use crate::controller::runtime::error::Error;
use crate::controller::runtime::finalize::reconcile_with_finalizer;
use crate::controller::runtime::status::NewCondition;
use crate::controller::runtime::tail::{Note, Outcome, Pass};
use crate::controller::shared::servers::{resolve, secret_value};
use crate::plan::share::{
    EndpointAuth, EndpointStyle, ShareIntent, ShareOutcome, ShareRefusal, is_failing, plan_share, validate_share,
};
use crate::plan::share::{owner, replicator_db};
use endpoints::{Consent, Sources, managing_server, remote_client, sources, target};
use places::Place;
use steps::{execute, observe};

/// Reconciles one CouchShare.
pub async fn reconcile(share: Arc<CouchShare>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_with_finalizer(share, &ctx, |s| apply(s, &ctx), |s| revoke::cleanup(s, &ctx)).await
}

async fn apply(share: Arc<CouchShare>, ctx: &Context) -> Result<Action, Error> {
    let mut pass = Pass::begin(share.as_ref());
    // A revoked share is never resurrected: nothing is written again.
    if pass.status.revoked {
        return Ok(Action::await_change());
    }
    if share.spec.revoke.as_ref().is_some_and(|r| r.revoked) {
        revoke::revoke(&share, ctx).await?;
        pass.status.revoked = true;
        pass.status.state = Some("revoked".into());
        pass.status.changes_pending = None;
        pass.status.replications.clear();
        pass.status.on_change = None;
        let revoked = NewCondition {
            type_: condition::READY,
            status: false,
            reason: "Revoked".into(),
            message: "the share was revoked and cleaned up".into(),
        };
        let outcome = Outcome::new(revoked, Action::await_change())
            .with_event(Note::normal("Revoked", "replications stopped, sharing document removed"));
        let replications = pass.status.replications.clone();
        return recorded(ctx, &share, &replications, pass.finish(ctx, share.as_ref(), Ok(outcome)).await);
    }
    let result = ensure(&share, ctx, &mut pass.status).await;
    // A refused share owns no replication user: no `_security` admits its name (see
    // `access::share_admitted`) until a pass passes its checks again.
    if result.as_ref().is_err_and(Error::refuses) {
        pass.status.replication_user = None;
    }
    // Not (or no longer) permitted: whatever ran while it was is stopped, in revocation order.
    if matches!(result, Err(Error::NotPermitted(_))) {
        onchange::stop(ctx, &share).await?;
        pass.status.on_change = None;
        revoke::withdraw(&share, ctx).await?;
        pass.status.replications.clear();
        pass.status.changes_pending = None;
        pass.status.sharing_document_id = None;
        pass.status.state = Some("stopped".into());
    }
    // An Event when replication starts failing or recovers, not for every step of starting up
    // (unknown, pending, running): the status shows those.
    let unhealthy = |s: &Option<String>| s.as_deref().is_some_and(is_failing);
    let previous_state = pass.current().and_then(|s| s.state.clone());
    if pass.status.state != previous_state
        && (unhealthy(&pass.status.state) || unhealthy(&previous_state))
        && let Some(state) = pass.status.state.clone()
    {
        let note = format!("replication is now {state}");
        pass.events.push(if unhealthy(&pass.status.state) {
            Note::warning("ReplicationState", note)
        } else {
            Note::normal("ReplicationState", note)
        });
    }
    let outcome = result.map(|settled| match settled {
        // CouchDB's replicator wakes it when a replication ends or fails (see `replicator_feed`);
        // the resync is the safety net.
        Settled::Replicating => Outcome::new(
            NewCondition::ready("Replicating", "every replication is running or completed"),
            Action::requeue(ctx.resync()),
        ),
        // The scheduler watch and the replicator feed wake it (see `ensure`); the resync is
        // the safety net.
        Settled::Pending { reason, message } => Outcome::new(
            NewCondition { type_: condition::READY, status: false, reason: reason.into(), message },
            Action::requeue(ctx.resync()),
        ),
        Settled::Done(outcome) => outcome,
    });
    let replications = pass.status.replications.clone();
    recorded(ctx, &share, &replications, pass.finish(ctx, share.as_ref(), outcome).await)
}

/// Records what a pass wrote of `share`'s replications for its triggers (see `triggers::shown`),
/// and gives back the pass's result.
fn recorded(
    ctx: &Context,
    share: &CouchShare,
    replications: &[crate::api::ReplicationStatus],
    action: Result<Action, Error>,
) -> Result<Action, Error> {
    ctx.replicator_feeds.shown.record(share, action.is_ok().then_some(replications));
    action
}

/// How a pass that did not fail ends.
enum Settled {
    /// Every replication is running or completed, or there is nothing to replicate.
    Replicating,
    /// Not there yet.
    Pending { reason: &'static str, message: String },
    /// An on-change share, as its engine reports it.
    Done(Outcome),
}

/// Whether an endpoint resolved, or waits for something that announces itself.
fn ok_or_waiting<T>(resolved: &Result<T, Error>) -> bool {
    resolved.as_ref().err().is_none_or(Error::waits_for_trigger)
}

fn refused(refusal: ShareRefusal) -> Error {
    match refusal {
        ShareRefusal::InvalidSelector(m) => Error::InvalidSelector(m),
        ShareRefusal::InvalidSharingDocument(m) => Error::InvalidSpec(m),
        ShareRefusal::Refused(r) => Error::Refused(r),
    }
}

/// One pass: observe, plan, execute, and the plan's status into `status`. Waiting is an error
/// (retried with backoff), so a pass that returns ends replicating or pending.
async fn ensure(share: &CouchShare, ctx: &Context, status: &mut CouchShareStatus) -> Result<Settled, Error> {
    let ns = share.namespace().unwrap_or_default();
    let me = owner(share);
    let sharing_body = share.spec.sharing_document.as_ref().map(|sd| sd.body.as_ref());
    validate_share(share.spec.selector.as_ref(), sharing_body, share.spec.mode, &me).map_err(refused)?;
    // Endpoints in another namespace only with their consent: refused before anything is written.
    let (sources, target) = (sources(ctx, share, Consent::Check).await, target(ctx, share, Consent::Check).await);
    // Waiting for its CouchDatabases to be created, and for nothing else: its replication user
    // first, so that they let it in with their first `_security`, and the share's next pass,
    // once they have, is its last before replicating.
    if (sources.is_err() || target.is_err()) && ok_or_waiting(&sources) && ok_or_waiting(&target) {
        replication_user::ahead_of_databases(ctx, share, status).await?;
    }
    let (sources, target) = (sources?, target?);
    let (fan_in, waiting): (Vec<(Option<String>, Place)>, Vec<String>) = match sources {
        Sources::One(p) => (vec![(None, p)], vec![]),
        Sources::FanIn { ready, waiting } => (ready.into_iter().map(|(user, p)| (Some(user), p)).collect(), waiting),
    };
    checks::distinct_ends(fan_in.iter().map(|(_, p)| p), &target)?;
    let mut places: Vec<&Place> = vec![&target];
    places.extend(fan_in.iter().map(|(_, p)| p));
    // A remote that no client can be built for is refused before anything is written.
    for place in &places {
        if let Place::Remote { base_url, auth, .. } = place {
            remote_client(ctx, base_url, auth)?;
        }
    }
    let server_ref = managing_server(share, &places)?;
    let connected = resolve(ctx, &ns, &server_ref).await?;
    let ready = crate::controller::runtime::status::condition_state(&status.conditions, condition::READY);
    let replicating = ready.as_ref().is_some_and(|(s, reason)| s == "True" && reason == "Replicating");
    // Pending on CouchDB's replicator: a pass checked the user's access, then wrote the
    // replication documents its status lists.
    let written =
        replicating || ready.as_ref().is_some_and(|(s, reason)| s == "False" && reason == "ReplicationPending");
    let listed = checks::before_writing(ctx, share, &connected, replicating).await?;
    status.server = Some(format!("{}/{}", server_ref.namespace.clone().unwrap_or_default(), server_ref.name));
    let url = connected.server.spec.url.clone();
    let caps = connected.couch.capabilities().await.map_err(|e| Error::couch("reading capabilities", &url, e))?;
    let (local_auth, access_missing) = match share.spec.credentials {
        ShareCredentials::Scoped => {
            let (auth, rewritten) = replication_user::ensure_replication_user(ctx, share, &connected).await?;
            // The databases its replications already use (running, or written after that
            // check), with this same user.
            let shown: Vec<&str> = if written && !rewritten {
                status.replications.iter().flat_map(|r| [r.source.as_str(), r.target.as_str()]).collect()
            } else {
                vec![]
            };
            let missing = replication_user::access_missing(ctx, share, &connected, &places, &auth, &shown).await?;
            status.replication_user = Some(auth.username.clone());
            (auth, missing)
        }
        ShareCredentials::Admin => {
            status.replication_user = None;
            let secret = &connected.server.spec.admin_credentials.secret_ref;
            let server_ns = connected.server.namespace().unwrap_or_default();
            let auth = EndpointAuth {
                username: secret_value(ctx, &server_ns, &secret.name, &secret.username_key).await?,
                password: secret_value(ctx, &server_ns, &secret.name, &secret.password_key).await?,
            };
            (auth, vec![])
        }
    };
    let intent = ShareIntent {
        owner: me,
        mode: share.spec.mode,
        continuous: share.spec.continuous,
        selector: share.spec.selector.clone(),
        sharing_document: share.spec.sharing_document.as_ref().map(|sd| (sd.id.clone(), sd.body.clone())),
        replicator: replicator_db(share),
        style: if caps.auth_object_in_endpoints { EndpointStyle::AuthObject } else { EndpointStyle::BasicHeader },
        local_base: connected
            .server
            .spec
            .replication_url
            .clone()
            .unwrap_or_else(|| url.clone())
            .trim_end_matches('/')
            .to_string(),
        local_auth,
        sources: fan_in.iter().map(|(user, p)| (user.clone(), p.end())).collect(),
        target: target.end(),
        waiting,
        budget: connected.server.status.as_ref().and_then(|s| s.replication_budget.as_ref()).map(|b| b.total),
    };
    if share.spec.strategy == ShareStrategy::OnChange {
        if let Some(database) = access_missing.first() {
            return Err(Error::Waiting { what: format!("the replication user's access to {database}") });
        }
        let names = fan_in.iter().map(|(_, p)| p.database().to_string()).collect();
        return onchange::ensure(ctx, share, &connected, intent, names, status).await.map(Settled::Done);
    }
    if ctx.engines.running(&onchange::engine_key(share)) {
        onchange::stop(ctx, share).await?;
        status.on_change = None;
    }
    let observed = observe(ctx, &connected, &intent, access_missing, listed).await?;
    let plan = plan_share(&intent, &observed).map_err(refused)?;
    execute(ctx, &connected, &intent, &plan.steps).await?;
    if let Some(report) = plan.report {
        let before = status.replications.len();
        for r in &report.replications {
            let state = r.state.as_deref().unwrap_or("unknown");
            ctx.metrics.replication(
                &intent.owner.namespace,
                &intent.owner.name,
                &r.id,
                state,
                r.changes_pending,
                r.doc_write_failures,
            );
        }
        status.replications = report.replications;
        status.state = Some(report.state);
        status.changes_pending = report.changes_pending;
        status.sharing_document_id = report.sharing_document_id;
        // Said when the number of replications changes, not on every pass.
        if let Some((wanted, total)) = plan.over_budget
            && before != wanted
        {
            let note = format!(
                "{wanted} replications exceed the server's budget of {total} jobs (replicator/max_jobs × nodes)"
            );
            ctx.event(share, true, "ReplicationBudgetExceeded", note).await;
        }
    }
    let me = kube::runtime::reflector::ObjectRef::from_obj(share);
    ctx.scheduler_watch.forget(&me);
    // Jobs that have not started (or fail), and one-shots that have not ended: the scheduler
    // watch wakes the share when they move (CouchDB writes a one-shot's end into its document
    // seconds after its scheduler says it), and the replicator feed when one ends.
    let one_shot_running = !intent.continuous
        && matches!(plan.outcome, ShareOutcome::Replicating)
        && status.replications.iter().any(|r| r.state.as_deref() != Some("completed"));
    if one_shot_running || matches!(plan.outcome, ShareOutcome::Pending { .. }) {
        let seen = status.replications.iter().map(|r| (r.id.clone(), r.state.clone())).collect();
        let server = super::ServerKey::of(&connected.server);
        let waited = (seen, !intent.continuous);
        let wake = (ctx.share_trigger.clone(), &ctx.stores.shares, &ctx.replicator_feeds.shown);
        ctx.scheduler_watch.wait(server, &connected.couch, &intent.replicator, me, waited, wake);
    }
    match plan.outcome {
        ShareOutcome::Waiting(what) => Err(Error::Waiting { what }),
        ShareOutcome::Replicating => Ok(Settled::Replicating),
        ShareOutcome::Pending { reason, message } => Ok(Settled::Pending { reason, message }),
    }
}

//! The dry run of a CouchUser: [`plan_user`] against the `_users` document as it is.

use super::{PreviewError, name_of};
use crate::api::CouchUser;
use crate::couch::CouchClient;
use crate::plan::ownership::Owner;
use crate::plan::user::{OWNER_FIELD, ObservedUser, UserIntent, UserOutcome, per_user_database_name, plan_user};

/// Appends what the operator would do for `user`. The password is not known here (it is in a
/// Secret): an existing user is not reported as changing it.
pub(super) async fn preview_user(
    couch: &CouchClient,
    user: &CouchUser,
    lines: &mut Vec<String>,
) -> Result<(), PreviewError> {
    let username = user.couch_username().to_string();
    let namespace = user.metadata.namespace.clone().unwrap_or_default();
    let doc = couch.get_user(&username).await?;
    let recorded: Option<Owner> =
        doc.as_ref().and_then(|d| d.extra.get(OWNER_FIELD).cloned()).and_then(|o| serde_json::from_value(o).ok());
    // Without the cluster there is no UID: a user recorded for a resource of the same
    // namespace and name counts as this one's.
    let ours = recorded.as_ref().is_some_and(|o| o.namespace == namespace && o.name == name_of(user));
    let me = Owner {
        kind: "CouchUser".into(),
        namespace,
        name: name_of(user),
        uid: recorded.as_ref().filter(|_| ours).map(|o| o.uid.clone()).unwrap_or_default(),
    };
    let intent = UserIntent {
        me,
        username: username.clone(),
        roles: user.spec.roles.clone(),
        password_fingerprint: "unknown".into(),
        applied_fingerprint: Some("unknown".into()),
        previously_owned: ours,
        adopt: user.spec.adopt,
        adopt_refused: None,
        earlier_claimant: None,
    };
    let observed = ObservedUser {
        exists: doc.is_some(),
        roles: doc.as_ref().map(|d| d.roles.clone()).unwrap_or_default(),
        owner: recorded.clone(),
        owner_alive: recorded.is_some() && !ours,
    };
    let name = name_of(user);
    let roles = &user.spec.roles;
    lines.push(match plan_user(&intent, &observed) {
        Err(refusal) => format!("! CouchUser {name}: {refusal}"),
        Ok(plan) => match plan.outcome {
            UserOutcome::Created | UserOutcome::Recreated => {
                format!("+ CouchUser {name}: create user {username} with roles {roles:?}")
            }
            UserOutcome::Adopted => format!("~ CouchUser {name}: adopt user {username}, roles {roles:?}, password set"),
            UserOutcome::Updated | UserOutcome::PasswordChanged => {
                let have = observed.roles.clone();
                format!("~ CouchUser {name}: roles of {username}: {have:?} -> {roles:?}")
            }
            UserOutcome::Unchanged => format!("= CouchUser {name}: user {username} unchanged (password not compared)"),
        },
    });
    if user.spec.per_user_database {
        let db = per_user_database_name(crate::plan::user::DEFAULT_USERDB_PREFIX, &username);
        if !couch.database_exists(&db).await? {
            lines.push(format!("+ CouchUser {name}: create per-user database {db}"));
        }
    }
    Ok(())
}

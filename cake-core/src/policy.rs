//! The permission table of DESIGN.md ("Permission model", seed 000) as one pure function.
//!
//! Every route that touches a session asks [`decide`] first; nothing else in the code base
//! decides who may do what to a session. Answers 404 ([`Denial::Hidden`]), not 403, for
//! someone else's private session, so its existence is never revealed. Admins get no view into
//! other users' private sessions, and deletion stays owner-scoped.

use crate::session::Visibility;
use crate::user::{Actor, UserId};
use crate::{CoreError, error::Resource};

/// What an actor wants to do to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// See it in a list, get it, observe its events and messages, use read-only OpenCode routes.
    View,
    /// Prompt, abort, reply to permissions, change title or visibility, OpenCode write routes.
    Write,
    /// Delete it (destructive).
    Delete,
    /// Broker a credential into the session; `credential_owner` owns the credential.
    BrokerCredential {
        /// Who owns the credential to be brokered.
        credential_owner: UserId,
    },
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Nobody is signed in (401).
    Unauthenticated,
    /// The session must not be revealed (404).
    Hidden,
    /// The session may be seen, but not changed by this actor (403).
    Forbidden,
}

/// The answer of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, and how to say so.
    Deny(Denial),
}

impl Decision {
    /// Turns the decision into a `Result` carrying the error a client should see.
    pub fn into_result(self) -> Result<(), CoreError> {
        match self {
            Decision::Allow => Ok(()),
            Decision::Deny(Denial::Unauthenticated) => Err(CoreError::Unauthenticated),
            Decision::Deny(Denial::Hidden) => Err(CoreError::NotFound(Resource::Session)),
            Decision::Deny(Denial::Forbidden) => Err(CoreError::Forbidden("only the session's owner may do this")),
        }
    }
}

/// Decides whether `actor` (or an anonymous caller, `None`) may perform `action` on a session
/// owned by `owner` with `visibility`.
pub fn decide(actor: Option<&Actor>, owner: UserId, visibility: Visibility, action: Action) -> Decision {
    let Some(actor) = actor else {
        return Decision::Deny(Denial::Unauthenticated);
    };
    let is_owner = actor.id == owner;
    if !is_owner && visibility.is_private() {
        return Decision::Deny(Denial::Hidden);
    }
    let allowed = match action {
        Action::View => true,
        Action::Write | Action::Delete => is_owner,
        Action::BrokerCredential { credential_owner } => is_owner && credential_owner == actor.id,
    };
    if allowed { Decision::Allow } else { Decision::Deny(Denial::Forbidden) }
}

/// Whether `actor` may administer the installation (providers, organisation defaults).
pub fn can_administer(actor: Option<&Actor>) -> Result<(), CoreError> {
    match actor {
        None => Err(CoreError::Unauthenticated),
        Some(a) if a.is_admin() => Ok(()),
        Some(_) => Err(CoreError::Forbidden("only administrators may do this")),
    }
}

/// Requires a signed-in actor.
pub fn signed_in(actor: Option<&Actor>) -> Result<&Actor, CoreError> {
    actor.ok_or(CoreError::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::Role;
    use uuid::Uuid;

    #[derive(Clone, Copy, Debug)]
    enum Who {
        Owner,
        OwnerAdmin,
        Other,
        OtherAdmin,
        Anonymous,
    }

    /// DESIGN.md's permission table, every cell: (who, visibility, action, expected).
    #[test]
    fn permission_table() {
        use Decision::*;
        use Denial::*;
        use Visibility::*;
        use Who::*;
        let owner = UserId(Uuid::from_u128(1));
        let other = UserId(Uuid::from_u128(2));
        let own_cred = Action::BrokerCredential { credential_owner: owner };
        let foreign_cred = Action::BrokerCredential { credential_owner: other };
        let rows: Vec<(Who, Visibility, Action, Decision)> = vec![
            // see in list, get, observe
            (Owner, Public, Action::View, Allow),
            (Owner, Private, Action::View, Allow),
            (Other, Public, Action::View, Allow),
            (Other, Private, Action::View, Deny(Hidden)),
            (Anonymous, Public, Action::View, Deny(Unauthenticated)),
            (Anonymous, Private, Action::View, Deny(Unauthenticated)),
            // prompt, abort, title/visibility, OpenCode writes
            (Owner, Public, Action::Write, Allow),
            (Owner, Private, Action::Write, Allow),
            (Other, Public, Action::Write, Deny(Forbidden)),
            (Other, Private, Action::Write, Deny(Hidden)),
            (Anonymous, Public, Action::Write, Deny(Unauthenticated)),
            (Anonymous, Private, Action::Write, Deny(Unauthenticated)),
            // delete
            (Owner, Public, Action::Delete, Allow),
            (Owner, Private, Action::Delete, Allow),
            (Other, Public, Action::Delete, Deny(Forbidden)),
            (Other, Private, Action::Delete, Deny(Hidden)),
            (Anonymous, Public, Action::Delete, Deny(Unauthenticated)),
            (Anonymous, Private, Action::Delete, Deny(Unauthenticated)),
            // broker a credential: only the credential's owner, who must own the session
            (Owner, Public, own_cred, Allow),
            (Owner, Private, own_cred, Allow),
            (Owner, Public, foreign_cred, Deny(Forbidden)),
            (Owner, Private, foreign_cred, Deny(Forbidden)),
            (Other, Public, foreign_cred, Deny(Forbidden)),
            (Other, Private, foreign_cred, Deny(Hidden)),
            (Anonymous, Public, own_cred, Deny(Unauthenticated)),
            (Anonymous, Private, own_cred, Deny(Unauthenticated)),
            // admins get no view into others' private sessions; deletion stays owner-scoped
            (OwnerAdmin, Private, Action::Delete, Allow),
            (OtherAdmin, Public, Action::View, Allow),
            (OtherAdmin, Private, Action::View, Deny(Hidden)),
            (OtherAdmin, Public, Action::Write, Deny(Forbidden)),
            (OtherAdmin, Public, Action::Delete, Deny(Forbidden)),
            (OtherAdmin, Private, Action::Delete, Deny(Hidden)),
        ];
        for (who, vis, action, expected) in rows {
            let actor = match who {
                Owner => Some(Actor { id: owner, role: Role::Member }),
                OwnerAdmin => Some(Actor { id: owner, role: Role::Admin }),
                Other => Some(Actor { id: other, role: Role::Member }),
                OtherAdmin => Some(Actor { id: other, role: Role::Admin }),
                Anonymous => None,
            };
            assert_eq!(decide(actor.as_ref(), owner, vis, action), expected, "{who:?} {vis:?} {action:?}");
        }
    }

    #[test]
    fn decisions_map_to_errors() {
        assert!(Decision::Allow.into_result().is_ok());
        assert!(matches!(Decision::Deny(Denial::Hidden).into_result(), Err(CoreError::NotFound(Resource::Session))));
        assert!(matches!(Decision::Deny(Denial::Forbidden).into_result(), Err(CoreError::Forbidden(_))));
        assert!(matches!(Decision::Deny(Denial::Unauthenticated).into_result(), Err(CoreError::Unauthenticated)));
    }

    #[test]
    fn administration_needs_admin() {
        let member = Actor { id: UserId(Uuid::nil()), role: Role::Member };
        let admin = Actor { id: UserId(Uuid::nil()), role: Role::Admin };
        assert!(matches!(can_administer(None), Err(CoreError::Unauthenticated)));
        assert!(matches!(can_administer(Some(&member)), Err(CoreError::Forbidden(_))));
        assert!(can_administer(Some(&admin)).is_ok());
    }
}

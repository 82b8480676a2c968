//! Who may use the console, and the CSRF tokens that bind every action to
//! the signed-in operator's session.

use std::fmt;

use hmac::{Hmac, Mac};
use http::request::Parts;
use serde::Serialize;
use sha2::Sha256;

/// What a signed-in person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// May see every page, and nothing else.
    Viewer,
    /// May also reconcile and retry.
    Operator,
}

impl Role {
    /// Whether this role may take actions.
    pub fn may_act(self) -> bool {
        self == Self::Operator
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
        }
    }
}

/// A person the app has authenticated, as the console sees them.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    name: String,
    role: Role,
    session: String,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The session id is a credential of the app's: not printed.
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// A principal named `name` (written to the audit table) with `role`,
    /// signed in under `session`: an identifier of the app's login session
    /// (for example its session id), to which the console binds its CSRF
    /// tokens. Give each login its own session value.
    pub fn new(name: impl Into<String>, role: Role, session: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            role,
            session: session.into(),
        }
    }

    /// The name recorded in the audit table.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What they may do.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// The app's decision on who may view and who may act. The console calls it
/// on every request; `None` refuses the request (401). There is no default
/// and no anonymous access: a console cannot be built without one.
///
/// Closures `Fn(&http::request::Parts) -> Option<Principal>` implement it,
/// so an app whose own authentication layer puts its user in the request
/// extensions can map that user to a principal:
///
/// ```
/// use idem_console::{Principal, Role};
///
/// #[derive(Clone)]
/// struct User { name: String, admin: bool, session: String }
///
/// let authorize = |req: &http::request::Parts| {
///     let user = req.extensions.get::<User>()?;
///     let role = if user.admin { Role::Operator } else { Role::Viewer };
///     Some(Principal::new(user.name.clone(), role, user.session.clone()))
/// };
/// # fn takes(_: impl idem_console::Authorize) {}
/// # takes(authorize);
/// ```
pub trait Authorize: Send + Sync + 'static {
    /// Who sent this request, or `None` when nobody is signed in.
    fn authorize(&self, request: &Parts) -> Option<Principal>;
}

impl<F> Authorize for F
where
    F: Fn(&Parts) -> Option<Principal> + Send + Sync + 'static,
{
    fn authorize(&self, request: &Parts) -> Option<Principal> {
        self(request)
    }
}

/// CSRF tokens: HMAC-SHA256 of the principal's name and session under a
/// secret the console holds. A token is valid only for the session it was
/// made for; forms carry it in a hidden `csrf` field, API clients in the
/// `X-CSRF-Token` header.
#[derive(Clone)]
pub(crate) struct Csrf {
    secret: [u8; 32],
}

impl Csrf {
    pub(crate) fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    fn mac(&self, who: &Principal) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(b"idem-console csrf\0");
        mac.update(who.name.as_bytes());
        mac.update(b"\0");
        mac.update(who.session.as_bytes());
        mac
    }

    pub(crate) fn token(&self, who: &Principal) -> String {
        hex::encode(self.mac(who).finalize().into_bytes())
    }

    /// Constant-time check of a presented token.
    pub(crate) fn verify(&self, who: &Principal, presented: &str) -> bool {
        match hex::decode(presented.trim()) {
            Ok(raw) => self.mac(who).verify_slice(&raw).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_the_session_and_the_secret() {
        let csrf = Csrf::new([7; 32]);
        let alice = Principal::new("alice", Role::Operator, "s1");
        let token = csrf.token(&alice);
        assert!(csrf.verify(&alice, &token));
        assert!(!csrf.verify(&Principal::new("alice", Role::Operator, "s2"), &token));
        assert!(!csrf.verify(&Principal::new("bob", Role::Operator, "s1"), &token));
        assert!(!Csrf::new([8; 32]).verify(&alice, &token));
        assert!(!csrf.verify(&alice, ""));
        assert!(!csrf.verify(&alice, "zz"));
    }
}

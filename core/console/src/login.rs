//! A minimal login for `idem serve`: one operator name and password, an
//! in-memory session cookie, and the console mounted behind it.
//!
//! An app that has its own authentication mounts [`Console::router`]
//! behind it instead; this module is what the stand-alone binary (and the
//! browser tests) use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use hmac::{Hmac, Mac};
use maud::{DOCTYPE, html};
use serde::Deserialize;
use sha2::Sha256;

use crate::{Console, Ledger, Principal, Role};

/// The session cookie's name.
pub const COOKIE: &str = "idem_console_session";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// One account and its sessions.
pub struct SingleOperator {
    name: String,
    password: String,
    role: Role,
    secure_cookie: bool,
    sessions: Mutex<HashMap<String, Instant>>,
    key: [u8; 32],
}

impl std::fmt::Debug for SingleOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleOperator")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl SingleOperator {
    /// An account `name` with `password` and `role`.
    ///
    /// # Errors
    ///
    /// A message when the password is shorter than 8 characters: there is
    /// no anonymous or empty-password mode.
    pub fn new(
        name: impl Into<String>,
        password: impl Into<String>,
        role: Role,
    ) -> Result<Self, String> {
        let password = password.into();
        if password.chars().count() < 8 {
            return Err("the console password must have at least 8 characters".into());
        }
        Ok(Self {
            name: name.into(),
            password,
            role,
            secure_cookie: false,
            sessions: Mutex::new(HashMap::new()),
            key: rand::random(),
        })
    }

    /// Marks the session cookie `Secure` (serve behind HTTPS).
    #[must_use]
    pub fn secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    fn password_ok(&self, name: &str, password: &str) -> bool {
        // Compare MACs, not the texts: constant time whatever the lengths.
        let mac = |s: &str| {
            let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
            m.update(s.as_bytes());
            m
        };
        let expected = mac(&self.password).finalize().into_bytes();
        let name_ok = mac(&self.name)
            .verify_slice(&mac(name).finalize().into_bytes())
            .is_ok();
        mac(password).verify_slice(&expected).is_ok() && name_ok
    }

    fn session_of(&self, headers: &HeaderMap) -> Option<String> {
        let cookies = headers.get_all(header::COOKIE);
        let id = cookies
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_owned())?;
        let mut sessions = self.sessions.lock().ok()?;
        let now = Instant::now();
        sessions.retain(|_, started| now.duration_since(*started) < SESSION_TTL);
        sessions.contains_key(&id).then_some(id)
    }

    fn principal(&self, headers: &HeaderMap) -> Option<Principal> {
        self.session_of(headers)
            .map(|session| Principal::new(self.name.clone(), self.role, session))
    }

    fn cookie(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
    }
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

fn login_page(error: bool) -> maud::Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in · idem console" }
                style { "body{font-family:system-ui,sans-serif;margin:3rem auto;max-width:24rem}label{display:block;margin:.6rem 0 .2rem}input{width:100%;padding:.3rem}button{margin-top:1rem;padding:.4rem 1rem}.error{color:#b42318}" }
            }
            body {
                main {
                    h1 { "Sign in to the idem console" }
                    @if error { p.error role="alert" { "Wrong name or password." } }
                    form method="post" action="/login" {
                        label for="name" { "Name" }
                        input id="name" name="name" type="text" autocomplete="username" required;
                        label for="password" { "Password" }
                        input id="password" name="password" type="password" autocomplete="current-password" required;
                        button type="submit" id="sign-in" { "Sign in" }
                    }
                }
            }
        }
    }
}

async fn show_login() -> impl IntoResponse {
    login_page(false)
}

async fn do_login(
    State(account): State<Arc<SingleOperator>>,
    Form(form): Form<LoginForm>,
) -> Response {
    if !account.password_ok(&form.name, &form.password) {
        return (StatusCode::UNAUTHORIZED, login_page(true)).into_response();
    }
    let id = hex::encode(rand::random::<[u8; 32]>());
    if let Ok(mut sessions) = account.sessions.lock() {
        sessions.insert(id.clone(), Instant::now());
    }
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        account.cookie(&id, SESSION_TTL.as_secs()),
    );
    res
}

async fn do_logout(State(account): State<Arc<SingleOperator>>, headers: HeaderMap) -> Response {
    if let Some(id) = account.session_of(&headers)
        && let Ok(mut sessions) = account.sessions.lock()
    {
        sessions.remove(&id);
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, account.cookie("", 0));
    res
}

/// Browsers without a session are sent to the login page; other clients get
/// the console's own 401.
async fn to_login(
    State(account): State<Arc<SingleOperator>>,
    req: Request,
    next: Next,
) -> Response {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html && req.method() == http::Method::GET && account.principal(req.headers()).is_none()
    {
        return Redirect::to("/login").into_response();
    }
    next.run(req).await
}

/// The app `idem serve` runs: `/login`, `/logout`, and the console at `/`
/// behind the account's session cookie.
pub fn app(ledger: Ledger, account: SingleOperator) -> Router {
    let account = Arc::new(account);
    let hook = account.clone();
    let console = Console::new(ledger, move |req: &http::request::Parts| {
        hook.principal(&req.headers)
    })
    .router()
    .layer(middleware::from_fn_with_state(account.clone(), to_login));
    Router::new()
        .route("/login", get(show_login).post(do_login))
        .route("/logout", axum::routing::post(do_logout))
        .with_state(account)
        .merge(console)
}

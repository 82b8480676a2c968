//! The axum router: authorization and CSRF middleware, HTML pages, JSON API.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use idem::{Clock, IdempotencyKey, OperationState};
use serde::Deserialize;

use crate::auth::{Authorize, Csrf, Principal};
use crate::error::ConsoleError;
use crate::html;
use crate::ledger::{AttentionFilter, Ledger, RetryRequest};

/// The header API clients send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field pages send the CSRF token in.
pub const CSRF_FIELD: &str = "csrf";
const MAX_FORM: usize = 16 * 1024;

pub(crate) struct Inner {
    pub(crate) ledger: Ledger,
    pub(crate) authorize: Box<dyn Authorize>,
    pub(crate) csrf: Csrf,
    pub(crate) base: String,
    pub(crate) clock: Arc<dyn Clock>,
}

type Shared = Arc<Inner>;

/// What a page knows about the request: who, their token, the mount path.
pub(crate) struct Ctx {
    pub(crate) who: Principal,
    pub(crate) token: String,
    pub(crate) base: String,
}

impl Ctx {
    /// The listing's address: the mount path itself (axum's `nest` serves
    /// a nested `/` at `/console`, not `/console/`), or `/` at the root.
    pub(crate) fn home(&self) -> String {
        if self.base.is_empty() {
            "/".to_owned()
        } else {
            self.base.clone()
        }
    }

    fn new(c: &Inner, who: Principal) -> Self {
        Self {
            token: c.csrf.token(&who),
            who,
            base: c.base.clone(),
        }
    }
}

pub(crate) fn router(inner: Inner) -> Router {
    let shared = Arc::new(inner);
    Router::new()
        .route("/", get(attention_page))
        .route("/ops/{key}", get(operation_page))
        .route("/ops/{key}/retry", get(retry_page).post(retry_form))
        .route("/ops/{key}/reconcile", post(reconcile_form))
        .route("/inbound", get(inbound_page))
        .route("/audit", get(audit_page))
        .route("/api/csrf", get(api_csrf))
        .route("/api/operations", get(api_list))
        .route("/api/operations/{key}", get(api_timeline))
        .route("/api/operations/{key}/retry", post(api_retry))
        .route("/api/operations/{key}/reconcile", post(api_reconcile))
        .route("/api/inbound", get(api_inbound))
        .route("/api/audit", get(api_audit))
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut res = (status, format!("{message}\n")).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Every request: the app's hook must name a principal (401 otherwise).
/// Every request that is not GET/HEAD: the principal must be allowed to act
/// and present this session's CSRF token, in the `X-CSRF-Token` header or
/// the form's `csrf` field (403 otherwise).
async fn guard(State(c): State<Shared>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let Some(who) = c.authorize.authorize(&parts) else {
        return refuse(StatusCode::UNAUTHORIZED, "authentication required");
    };
    let body = if matches!(parts.method, Method::GET | Method::HEAD) {
        body
    } else {
        if !who.role().may_act() {
            return refuse(
                StatusCode::FORBIDDEN,
                "your role may view the console but not act",
            );
        }
        let header_token = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let (token, body) = match header_token {
            Some(token) => (Some(token), body),
            None if is_form => {
                let Ok(bytes) = to_bytes(body, MAX_FORM).await else {
                    return refuse(StatusCode::PAYLOAD_TOO_LARGE, "form too large");
                };
                let fields: Vec<(String, String)> =
                    serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
                let token = fields
                    .into_iter()
                    .find(|(k, _)| k == CSRF_FIELD)
                    .map(|(_, v)| v);
                (token, Body::from(bytes))
            }
            None => (None, body),
        };
        if !token.is_some_and(|t| c.csrf.verify(&who, &t)) {
            return refuse(StatusCode::FORBIDDEN, "missing or invalid CSRF token");
        }
        body
    };
    parts.extensions.insert(who);
    let mut res = next.run(Request::from_parts(parts, body)).await;
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    res
}

/// Parses an age such as `90s`, `30m`, `12h`, `7d` or `2w`.
///
/// # Errors
///
/// [`ConsoleError::BadInput`] for anything else.
pub fn parse_age(text: &str) -> Result<Duration, ConsoleError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let bad = || ConsoleError::BadInput(format!("age {text:?}: use a number and s, m, h, d or w"));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(n.checked_mul(unit).ok_or_else(bad)?))
}

/// Parses a comma-separated list of states.
///
/// # Errors
///
/// [`ConsoleError::BadInput`] for a name that is not a state.
pub fn parse_states(text: &str) -> Result<Vec<OperationState>, ConsoleError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<OperationState>()
                .map_err(|_| ConsoleError::BadInput(format!("unknown state {s:?}")))
        })
        .collect()
}

fn parse_key(text: &str) -> Result<IdempotencyKey, ConsoleError> {
    text.parse()
        .map_err(|e| ConsoleError::BadInput(format!("invalid key: {e}")))
}

/// The listing's query string (pages and API alike).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    pub(crate) state: Option<String>,
    pub(crate) provider: Option<String>,
    pub(crate) shop: Option<String>,
    pub(crate) age: Option<String>,
    pub(crate) page: Option<u32>,
    pub(crate) per_page: Option<u32>,
}

impl ListQuery {
    fn filter(&self) -> Result<AttentionFilter, ConsoleError> {
        let nonempty = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(AttentionFilter {
            states: match nonempty(&self.state) {
                Some(s) => parse_states(&s)?,
                None => Vec::new(),
            },
            provider: nonempty(&self.provider),
            shop: nonempty(&self.shop),
            older_than: nonempty(&self.age).map(|a| parse_age(&a)).transpose()?,
            page: self.page.unwrap_or(1),
            per_page: self.per_page.unwrap_or(0),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    page: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RetryForm {
    confirm: Option<String>,
    force: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RetryJson {
    confirm: Option<String>,
    #[serde(default)]
    force: bool,
}

fn page_error(ctx: &Ctx, e: &ConsoleError) -> Response {
    (e.status(), html::error_page(ctx, e)).into_response()
}

async fn attention_page(
    State(c): State<Shared>,
    Extension(who): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Response {
    let ctx = Ctx::new(&c, who);
    let result = match q.filter() {
        Ok(f) => c.ledger.attention(&f, c.clock.now()).await.map(|p| (f, p)),
        Err(e) => Err(e),
    };
    match result {
        Ok((f, page)) => html::attention(&ctx, &q, &f, &page).into_response(),
        Err(e) => page_error(&ctx, &e),
    }
}

async fn operation_page(
    State(c): State<Shared>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
) -> Response {
    let ctx = Ctx::new(&c, who);
    let result = match parse_key(&key) {
        Ok(key) => c.ledger.timeline(&key, c.clock.now()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(t) => html::operation(&ctx, &t).into_response(),
        Err(e) => page_error(&ctx, &e),
    }
}

async fn retry_page(
    State(c): State<Shared>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
) -> Response {
    let ctx = Ctx::new(&c, who);
    let result = match parse_key(&key) {
        Ok(key) => c.ledger.timeline(&key, c.clock.now()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(t) => html::retry_confirm(&ctx, &t, None).into_response(),
        Err(e) => page_error(&ctx, &e),
    }
}

async fn retry_form(
    State(c): State<Shared>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
    Form(form): Form<RetryForm>,
) -> Response {
    let ctx = Ctx::new(&c, who);
    let key = match parse_key(&key) {
        Ok(key) => key,
        Err(e) => return page_error(&ctx, &e),
    };
    let request = RetryRequest {
        confirm: form.confirm.clone(),
        force: form
            .force
            .as_deref()
            .is_some_and(|f| f == "on" || f == "true"),
    };
    let now = c.clock.now();
    match c.ledger.retry(ctx.who.name(), &key, &request, now).await {
        Ok(outcome) => html::retry_done(&ctx, &outcome).into_response(),
        Err(
            e @ (ConsoleError::ConfirmationRequired { .. } | ConsoleError::ForceRequired { .. }),
        ) => match c.ledger.timeline(&key, now).await {
            Ok(t) => (e.status(), html::retry_confirm(&ctx, &t, Some(&e))).into_response(),
            Err(e) => page_error(&ctx, &e),
        },
        Err(e) => page_error(&ctx, &e),
    }
}

async fn reconcile_form(
    State(c): State<Shared>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
) -> Response {
    let ctx = Ctx::new(&c, who);
    let key = match parse_key(&key) {
        Ok(key) => key,
        Err(e) => return page_error(&ctx, &e),
    };
    match c
        .ledger
        .reconcile(ctx.who.name(), &key, c.clock.now())
        .await
    {
        Ok(outcome) => html::reconcile_done(&ctx, &outcome).into_response(),
        Err(e) => page_error(&ctx, &e),
    }
}

async fn inbound_page(
    State(c): State<Shared>,
    Extension(who): Extension<Principal>,
    Query(q): Query<PageQuery>,
) -> Response {
    let ctx = Ctx::new(&c, who);
    match c
        .ledger
        .inbound(q.page.unwrap_or(1), 0, c.clock.now())
        .await
    {
        Ok(page) => html::inbound(&ctx, &page).into_response(),
        Err(e) => page_error(&ctx, &e),
    }
}

async fn audit_page(State(c): State<Shared>, Extension(who): Extension<Principal>) -> Response {
    let ctx = Ctx::new(&c, who);
    match c.ledger.audit(None, 200).await {
        Ok(rows) => html::audit(&ctx, &rows).into_response(),
        Err(e) => page_error(&ctx, &e),
    }
}

fn api_error(e: &ConsoleError) -> Response {
    let mut body = serde_json::json!({ "error": e.to_string(), "code": e.code() });
    if let ConsoleError::ConfirmationRequired { warning, .. }
    | ConsoleError::ForceRequired { warning, .. } = e
    {
        body["warning"] = serde_json::Value::String(warning.clone());
    }
    (e.status(), Json(body)).into_response()
}

fn api<T: serde::Serialize>(result: Result<T, ConsoleError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => api_error(&e),
    }
}

async fn api_csrf(State(c): State<Shared>, Extension(who): Extension<Principal>) -> Response {
    Json(serde_json::json!({
        "token": c.csrf.token(&who),
        "header": CSRF_HEADER,
        "name": who.name(),
        "role": who.role(),
    }))
    .into_response()
}

async fn api_list(State(c): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    let result = match q.filter() {
        Ok(f) => c.ledger.attention(&f, c.clock.now()).await,
        Err(e) => Err(e),
    };
    api(result)
}

async fn api_timeline(State(c): State<Shared>, Path(key): Path<String>) -> Response {
    let result = match parse_key(&key) {
        Ok(key) => c.ledger.timeline(&key, c.clock.now()).await,
        Err(e) => Err(e),
    };
    api(result)
}

async fn api_retry(
    State(c): State<Shared>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
    body: Option<Json<RetryJson>>,
) -> Response {
    let Json(body) = body.unwrap_or_default();
    let result = match parse_key(&key) {
        Ok(key) => {
            let request = RetryRequest {
                confirm: body.confirm,
                force: body.force,
            };
            c.ledger
                .retry(who.name(), &key, &request, c.clock.now())
                .await
        }
        Err(e) => Err(e),
    };
    api(result)
}

async fn api_reconcile(
    State(c): State<Shared>,
    Extension(who): Extension<Principal>,
    Path(key): Path<String>,
) -> Response {
    let result = match parse_key(&key) {
        Ok(key) => c.ledger.reconcile(who.name(), &key, c.clock.now()).await,
        Err(e) => Err(e),
    };
    api(result)
}

async fn api_inbound(State(c): State<Shared>, Query(q): Query<PageQuery>) -> Response {
    api(c
        .ledger
        .inbound(q.page.unwrap_or(1), 0, c.clock.now())
        .await)
}

async fn api_audit(State(c): State<Shared>) -> Response {
    api(c.ledger.audit(None, 200).await)
}

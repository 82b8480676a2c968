//! `idem_lint`: a dylint library with one lint, [`HTTP_CALL_OUTSIDE_ADAPTER`].
//!
//! The lint walks each expression, resolves the callee the way clippy's `disallowed_methods`
//! does, and hands every decision to `idem_lint_policy` (plain Rust, tested on stable).

#![feature(rustc_private)]
#![warn(unused_extern_crates)]

extern crate rustc_ast;
extern crate rustc_errors;
extern crate rustc_hir;
extern crate rustc_middle;
extern crate rustc_span;

use idem_lint_policy::{Policy, Suggestion, suggest_adapter};
use rustc_ast::LitKind;
use rustc_errors::{Diag, DiagCtxtHandle, Diagnostic, Level};
use rustc_hir::def::{DefKind, Res};
use rustc_hir::{Expr, ExprKind, Node};
use rustc_lint::{LateContext, LateLintPass, LintContext};
use rustc_middle::ty::{self, Instance};
use rustc_span::Span;
use rustc_span::def_id::{DefId, LOCAL_CRATE};

dylint_linting::impl_late_lint! {
    /// ### What it does
    ///
    /// Flags every call whose callee resolves into an HTTP client crate (`reqwest` or
    /// `reqwest_middleware` by default) in code that is not on the allow-list: by default the
    /// adapter crates `idem_stripe`, `idem_twilio`, `idem_gbp`, `idem_meta` and the module
    /// `idem::executor`.
    ///
    /// It sees method calls (`client.post(url)`), path calls (`reqwest::get(url)`,
    /// `reqwest::Client::post(&client, url)`), functions passed as values
    /// (`urls.map(reqwest::get)`), calls through re-exports (the callee's defining crate is what
    /// counts, not the path used to name it), and trait methods that resolve to an impl in those
    /// crates (`<reqwest::Client as Default>::default()`, `Default::default()` inferred as a
    /// `reqwest::Client`, `client.clone()`).
    ///
    /// The message names the adapter to use. When a string literal at the call (or earlier in
    /// the same method chain) is a URL of a service idem has an adapter for, the message names
    /// that adapter; otherwise it lists them all.
    ///
    /// ### Why is this bad?
    ///
    /// A write sent past the adapters carries no stored idempotency key. When the worker crashes
    /// or times out and runs again, the request goes out a second time: the customer is charged
    /// twice, texted twice, the post is published twice. The adapters (and the executor under
    /// them) are the only code that stores the key before the request leaves the process.
    ///
    /// ### Configuration
    ///
    /// In the checked workspace's `dylint.toml` (each list replaces its default):
    ///
    /// ```toml
    /// [idem_lint]
    /// # crate names, or module paths inside a crate
    /// allowed = ["idem_stripe", "idem_twilio", "idem_gbp", "idem_meta", "idem::executor"]
    /// http_crates = ["reqwest", "reqwest_middleware"]
    /// ```
    ///
    /// ### Known problems
    ///
    /// - The lint judges call sites. A generic function from another crate that calls reqwest
    ///   on a value the worker passes in (for example `tower::ServiceExt::oneshot(client, req)`)
    ///   is not seen at the call; getting that client (`Client::new`, `builder`, `default`) is.
    ///   The dependency-graph gate in `.ci/lint.sh` closes the rest: a worker crate cannot reach
    ///   reqwest except through an allowed crate.
    /// - Other HTTP clients (`hyper`'s client, `ureq`, ...) are only flagged when added to
    ///   `http_crates`.
    /// - Every reqwest function counts, including harmless ones such as `Error::is_timeout`.
    ///   Worker code gets typed errors from the adapters and has no reason to touch reqwest.
    /// - `allowed` names crates as rustc sees them. Integration tests and examples of an adapter
    ///   package are crates of their own and are not covered by the adapter's entry.
    ///
    /// ### Example
    ///
    /// ```rust,ignore
    /// let client = reqwest::Client::new();
    /// client
    ///     .post("https://api.stripe.com/v1/payment_intents")
    ///     .form(&[("amount", "2000"), ("currency", "usd")])
    ///     .send()
    ///     .await?;
    /// ```
    ///
    /// Use instead:
    ///
    /// ```rust,ignore
    /// // The adapter stores the idempotency key on the ledger row before the request leaves.
    /// let intent = stripe
    ///     .create_payment_intent(&key, CreatePaymentIntent::new(2000, "usd"))
    ///     .await?;
    /// ```
    pub HTTP_CALL_OUTSIDE_ADAPTER,
    Deny,
    "direct external HTTP call (reqwest, reqwest-middleware) outside an idem adapter crate",
    HttpCallOutsideAdapter::new()
}

/// The `[idem_lint]` table of `dylint.toml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Crate names or module paths where direct HTTP calls are allowed.
    allowed: Option<Vec<String>>,
    /// Crates whose functions count as external HTTP calls.
    http_crates: Option<Vec<String>>,
}

struct HttpCallOutsideAdapter {
    policy: Policy,
}

impl HttpCallOutsideAdapter {
    fn new() -> Self {
        let config: Config = dylint_linting::config_or_default(env!("CARGO_PKG_NAME"));
        let http_crates = config.http_crates.unwrap_or_else(|| {
            idem_lint_policy::DEFAULT_HTTP_CRATES
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        });
        let allowed = config.allowed.unwrap_or_else(|| {
            idem_lint_policy::DEFAULT_ALLOWED
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        });
        Self {
            policy: Policy::new(http_crates, allowed),
        }
    }
}

impl<'tcx> LateLintPass<'tcx> for HttpCallOutsideAdapter {
    fn check_expr(&mut self, cx: &LateContext<'tcx>, expr: &'tcx Expr<'tcx>) {
        // `.await`, `?` and `for` expand to calls of their own; the call they wrap is what counts.
        if expr.span.desugaring_kind().is_some() {
            return;
        }
        let Some((named, resolved, span)) = callee(cx, expr) else {
            return;
        };
        let tcx = cx.tcx;
        let is_http = |id: DefId| {
            self.policy
                .is_external_http_call(tcx.crate_name(id.krate).as_str())
        };
        let flagged = if is_http(resolved) {
            resolved
        } else if is_http(named) {
            named
        } else {
            return;
        };

        let site_crate = tcx.crate_name(LOCAL_CRATE);
        let module = tcx.parent_module(expr.hir_id).to_def_id();
        let module_path: Vec<String> = tcx
            .def_path(module)
            .data
            .iter()
            .filter_map(|d| d.data.get_opt_name())
            .map(|s| s.to_string())
            .collect();
        let module_path: Vec<&str> = module_path.iter().map(String::as_str).collect();
        if self
            .policy
            .is_allowed_site(site_crate.as_str(), &module_path)
        {
            return;
        }

        let suggestion = url_hints(cx, expr)
            .iter()
            .map(|url| suggest_adapter(Some(url)))
            .find(|s| matches!(s, Suggestion::Adapter { .. }))
            .unwrap_or(Suggestion::Unknown);
        let callee_path = tcx.def_path_str(flagged);
        let message = idem_lint_policy::message(&callee_path, suggestion);
        let span = if span.from_expansion() {
            span.source_callsite()
        } else {
            span
        };
        cx.emit_span_lint(
            HTTP_CALL_OUTSIDE_ADAPTER,
            span,
            Lint(|diag: &mut Diag<'_, ()>| {
                diag.primary_message(message);
                diag.span(span);
                diag.note(
                    "requests sent past an adapter carry no stored idempotency key, so a retry \
                     after a crash or timeout sends the write twice",
                );
                diag.help(idem_lint_policy::help());
            }),
        );
    }
}

/// A diagnostic built by a closure (rustc's `emit_span_lint` takes a `Diagnostic`).
struct Lint<F>(F);

impl<'a, F: FnOnce(&mut Diag<'_, ()>)> Diagnostic<'a, ()> for Lint<F> {
    fn into_diag(self, dcx: DiagCtxtHandle<'a>, level: Level) -> Diag<'a, ()> {
        let mut diag = Diag::new(dcx, level, "");
        (self.0)(&mut diag);
        diag
    }
}

/// The function an expression calls or names: (as named, as resolved, span to report).
///
/// "As resolved" follows trait methods to the impl chosen for the concrete types, so
/// `Default::default()` producing a `reqwest::Client` resolves into reqwest.
fn callee<'tcx>(cx: &LateContext<'tcx>, expr: &'tcx Expr<'tcx>) -> Option<(DefId, DefId, Span)> {
    let typeck = cx.typeck_results();
    let (named, span, args) = match &expr.kind {
        ExprKind::MethodCall(segment, ..) => {
            let id = typeck.type_dependent_def_id(expr.hir_id)?;
            (id, segment.ident.span, typeck.node_args(expr.hir_id))
        }
        ExprKind::Path(qpath) => match cx.qpath_res(qpath, expr.hir_id) {
            Res::Def(DefKind::Fn | DefKind::AssocFn, id) => {
                let args = match typeck.node_type(expr.hir_id).kind() {
                    ty::FnDef(_, args) => *args,
                    _ => typeck.node_args(expr.hir_id),
                };
                (id, expr.span, args)
            }
            Res::Def(DefKind::Ctor(..), id) => return Some((id, id, expr.span)),
            _ => return None,
        },
        _ => return None,
    };
    let resolved = match Instance::try_resolve(cx.tcx, cx.typing_env(), named, args) {
        Ok(Some(instance)) => instance.def_id(),
        _ => named,
    };
    Some((named, resolved, span))
}

/// String literals at the call site that may be URLs: the call's arguments and, for a method
/// chain such as `client.post(URL).json(..).send()`, the arguments of earlier calls in the chain.
fn url_hints<'tcx>(cx: &LateContext<'tcx>, expr: &'tcx Expr<'tcx>) -> Vec<String> {
    let mut found = Vec::new();
    match &expr.kind {
        ExprKind::MethodCall(..) => chain_literals(expr, &mut found, 0),
        ExprKind::Path(..) => {
            if let Node::Expr(parent) = cx.tcx.parent_hir_node(expr.hir_id)
                && let ExprKind::Call(func, args) = &parent.kind
                && func.hir_id == expr.hir_id
            {
                for arg in *args {
                    literal(arg, &mut found);
                }
            }
        }
        _ => {}
    }
    found
}

fn chain_literals(expr: &Expr<'_>, found: &mut Vec<String>, depth: usize) {
    if depth > 16 {
        return;
    }
    match &expr.kind {
        ExprKind::MethodCall(_, receiver, args, _) => {
            for arg in *args {
                literal(arg, found);
            }
            chain_literals(receiver, found, depth + 1);
        }
        ExprKind::Call(_, args) => {
            for arg in *args {
                literal(arg, found);
            }
        }
        _ => {}
    }
}

fn literal(expr: &Expr<'_>, found: &mut Vec<String>) {
    match &expr.kind {
        ExprKind::Lit(lit) => {
            if let LitKind::Str(sym, _) = lit.node {
                found.push(sym.to_string());
            }
        }
        ExprKind::AddrOf(_, _, inner) => literal(inner, found),
        _ => {}
    }
}

#[test]
fn ui_worker_direct() {
    dylint_testing::ui_test_example(env!("CARGO_PKG_NAME"), "worker_direct");
}

#[test]
fn ui_worker_through_adapter() {
    dylint_testing::ui_test_example(env!("CARGO_PKG_NAME"), "worker_adapter");
}

#[test]
fn ui_allowed_crate() {
    dylint_testing::ui::Test::example(env!("CARGO_PKG_NAME"), "allowed_crate")
        .dylint_toml("[idem_lint]\nallowed = [\"allowed_crate\"]\n")
        .run();
}

#[test]
fn ui_allowed_module_only() {
    dylint_testing::ui::Test::example(env!("CARGO_PKG_NAME"), "allowed_module")
        .dylint_toml("[idem_lint]\nallowed = [\"allowed_module::executor\"]\n")
        .run();
}

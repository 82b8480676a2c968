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

extern crate rustc_lint;
extern crate rustc_session;

use std::collections::HashSet;

use idem_lint_policy::{DenyEntry, Policy, Suggestion};
use rustc_ast::LitKind;
use rustc_errors::{Diag, DiagCtxtHandle, Diagnostic, Level};
use rustc_hir::def::{DefKind, Res};
use rustc_hir::def_id::{CRATE_DEF_INDEX, LocalDefId};
use rustc_hir::{
    Body, Expr, ExprKind, FieldDef, FnRetTy, ImplItem, ImplItemImplKind, ImplItemKind, Item,
    ItemKind, Node, QPath, UnOp,
};
use rustc_lint::{LateContext, LateLintPass, LintContext};
use rustc_middle::ty::{self, Instance, Ty, TyCtxt};
use rustc_span::Span;
use rustc_span::def_id::{DefId, LOCAL_CRATE};

dylint_linting::dylint_library!();

/// Registers both lints and their pass (what `dylint_linting::impl_late_lint!` does for one).
#[allow(clippy::no_mangle_with_rust_abi)]
#[unsafe(no_mangle)]
pub fn register_lints(sess: &rustc_session::Session, lint_store: &mut rustc_lint::LintStore) {
    dylint_linting::init_config(sess);
    lint_store.register_lints(&[HTTP_CALL_OUTSIDE_ADAPTER, HTTP_CLIENT_LEAK]);
    lint_store.register_late_pass(|_| Box::new(IdemLint::new()));
}

dylint_linting::declare_lint! {
    /// ### What it does
    ///
    /// Flags, in code that is not on the allow-list (the adapter crates, which say so in their
    /// `Cargo.toml` with `[package.metadata.idem] adapter = true`, and by default the module
    /// `idem::executor`),
    /// every use of an HTTP client or provider SDK on the deny list of `dylint.toml` (reqwest,
    /// reqwest-middleware, ureq, hyper's and hyper-util's clients, isahc, surf, attohttpc, curl,
    /// awc, async-stripe, the Twilio crates, octocrab, ...):
    ///
    /// - calls whose callee resolves into a denied crate or client module: method calls, path
    ///   calls, functions passed as values, calls through re-exports, and trait methods that
    ///   resolve to an impl there (`<reqwest::Client as Default>::default()`, `client.clone()`);
    /// - any value whose type is or contains a denied type, however it was made: built inside
    ///   generic std code (`None.unwrap_or_default()`), returned by another crate
    ///   (`leaky::client()`), read from a field, or about to be driven by generic code such as
    ///   `tower::ServiceExt::oneshot`;
    /// - function and closure parameters of such a type.
    ///
    /// The message names the adapter to use (from a URL literal at the call when there is one).
    ///
    /// ### Why is this bad?
    ///
    /// A write sent past the adapters carries no stored idempotency key. When the worker crashes
    /// or times out and runs again, the request goes out a second time: the customer is charged
    /// twice, texted twice, the post is published twice.
    ///
    /// ### Configuration
    ///
    /// The `[idem_lint]` table of the checked workspace's `dylint.toml` (`allowed`, `deny`; each
    /// replaces its default, which is idem's own `dylint.toml`, compiled into the library).
    /// Adapter crates are not listed there: the crate being compiled is allowed when its own
    /// manifest (cargo's `CARGO_MANIFEST_DIR`) has `[package.metadata.idem] adapter = true` and
    /// it is that package's library; a manifest that cannot be read allows nothing.
    pub HTTP_CALL_OUTSIDE_ADAPTER,
    Deny,
    "direct use of an HTTP client or provider SDK outside an idem adapter crate"
}

dylint_linting::declare_lint! {
    /// ### What it does
    ///
    /// Flags the public API of an allowed crate (an adapter, `idem::executor`) that hands an
    /// HTTP client out: `pub use` of a denied crate or of one of its items, and public
    /// functions, methods, fields, type aliases, constants, statics and associated types whose
    /// type is or contains a denied type. Taking a client in (a parameter) is not a leak.
    ///
    /// ### Why is this bad?
    ///
    /// Code outside the allow-list that gets the client from an allowed crate passes the
    /// dependency gate (its only route to the client runs through an allowed crate) and
    /// clippy's path bans (it never names the client crate), and can send writes with no key.
    pub HTTP_CLIENT_LEAK,
    Deny,
    "an allowed crate's public API hands out an HTTP client or re-exports a client crate"
}

dylint_linting::impl_lint_pass!(IdemLint => [HTTP_CALL_OUTSIDE_ADAPTER, HTTP_CLIENT_LEAK]);

/// The `[idem_lint]` table of `dylint.toml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Crate names or module paths where HTTP clients may be used.
    allowed: Option<Vec<String>>,
    /// Extra whole crates to deny (kept from the first configuration format).
    http_crates: Option<Vec<String>>,
    /// The HTTP clients and provider SDKs.
    deny: Option<Vec<DenyConfig>>,
    /// Packages that hand no client out: the gate does not follow them, the lint does not look
    /// into their types' generic arguments.
    vetted: Option<Vec<VettedConfig>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyConfig {
    package: String,
    lib: Option<String>,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    modules: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VettedConfig {
    package: String,
    /// Printed by the dependency gate.
    #[serde(default)]
    #[allow(dead_code)]
    reason: String,
}

impl DenyConfig {
    fn entry(&self) -> DenyEntry {
        let lib = self.lib.as_deref().map_or_else(
            || idem_lint_policy::crate_name(&self.package),
            idem_lint_policy::crate_name,
        );
        DenyEntry {
            package: self.package.clone(),
            lib,
            features: self.features.clone(),
            modules: self
                .modules
                .iter()
                .map(|m| {
                    m.trim()
                        .trim_start_matches("::")
                        .split("::")
                        .map(|s| idem_lint_policy::crate_name(s))
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                })
                .filter(|m| !m.is_empty())
                .collect(),
        }
    }
}

struct IdemLint {
    policy: Policy,
    /// Crates (rustc names) whose types are not looked into (`vetted` in dylint.toml).
    vetted: Vec<String>,
    /// Spans already reported, so one expression gets one diagnostic.
    reported: HashSet<Span>,
}

impl IdemLint {
    fn new() -> Self {
        let config: Config = dylint_linting::config_or_default(env!("CARGO_PKG_NAME"));
        let defaults = idem_lint_policy::default_config();
        let mut deny: Vec<DenyEntry> = match &config.deny {
            Some(list) => list.iter().map(DenyConfig::entry).collect(),
            None => defaults.deny.clone(),
        };
        for c in config.http_crates.iter().flatten() {
            deny.push(DenyEntry::crate_only(c));
        }
        let allowed = config.allowed.unwrap_or(defaults.allowed);
        let vetted = match &config.vetted {
            Some(list) => list
                .iter()
                .map(|v| idem_lint_policy::crate_name(&v.package))
                .collect(),
            None => defaults
                .vetted
                .iter()
                .map(|v| idem_lint_policy::crate_name(v))
                .collect(),
        };
        Self {
            policy: Policy::with_deny(deny, allowed),
            vetted,
            reported: HashSet::new(),
        }
    }

    /// Whether the item `id` belongs to a denied client (crate and, where limited, module).
    fn denied_def(&self, tcx: TyCtxt<'_>, id: DefId) -> bool {
        let krate = tcx.crate_name(id.krate);
        let path: Vec<String> = tcx
            .def_path(id)
            .data
            .iter()
            .filter_map(|d| d.data.get_opt_name())
            .map(|s| s.to_string())
            .collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        self.policy.is_denied_item(krate.as_str(), &path)
    }

    /// The first denied type inside `ty`: the type itself, its generic arguments, references,
    /// slices, arrays and tuples (not the arguments of a `vetted` crate's types, which hand no
    /// client out), and for an opaque `impl Trait` type defined locally, its hidden type.
    fn denied_in_ty<'tcx>(&self, tcx: TyCtxt<'tcx>, ty: Ty<'tcx>, depth: usize) -> Option<DefId> {
        if depth > 16 {
            return None;
        }
        let args_of = |args: ty::GenericArgsRef<'tcx>| -> Option<DefId> {
            args.types()
                .find_map(|t| self.denied_in_ty(tcx, t, depth + 1))
        };
        match ty.kind() {
            ty::Adt(adt, args) => {
                let did = adt.did();
                if self.denied_def(tcx, did) {
                    return Some(did);
                }
                let krate = tcx.crate_name(did.krate);
                if self.vetted.iter().any(|v| v == krate.as_str()) {
                    return None;
                }
                args_of(args)
            }
            ty::Foreign(id) if self.denied_def(tcx, *id) => Some(*id),
            ty::Ref(_, inner, _) | ty::Slice(inner) | ty::Array(inner, _) => {
                self.denied_in_ty(tcx, *inner, depth + 1)
            }
            ty::RawPtr(inner, _) => self.denied_in_ty(tcx, *inner, depth + 1),
            ty::Tuple(items) => items
                .iter()
                .find_map(|t| self.denied_in_ty(tcx, t, depth + 1)),
            ty::Alias(alias) => {
                if let ty::AliasTyKind::Opaque { def_id } = alias.kind {
                    let def_id: DefId = def_id.into();
                    if self.denied_def(tcx, def_id) {
                        return Some(def_id);
                    }
                    // A vetted crate's `impl Future` (fantoccini's `connect`) carries its
                    // connector type in its arguments; like its structs, it hands no client out.
                    let krate = tcx.crate_name(def_id.krate);
                    if self.vetted.iter().any(|v| v == krate.as_str()) {
                        return None;
                    }
                    if depth < 4 && def_id.is_local() {
                        let hidden = tcx
                            .type_of(def_id)
                            .instantiate_identity()
                            .skip_normalization();
                        if let Some(id) = self.denied_in_ty(tcx, hidden, depth + 1) {
                            return Some(id);
                        }
                    }
                }
                args_of(alias.args)
            }
            _ => None,
        }
    }

    /// Whether the code at `hir_id` is on the allow-list.
    fn allowed_here(&self, cx: &LateContext<'_>, hir_id: rustc_hir::HirId) -> bool {
        let tcx = cx.tcx;
        let site_crate = tcx.crate_name(LOCAL_CRATE);
        let module = tcx.parent_module(hir_id).to_def_id();
        let module_path: Vec<String> = tcx
            .def_path(module)
            .data
            .iter()
            .filter_map(|d| d.data.get_opt_name())
            .map(|s| s.to_string())
            .collect();
        let module_path: Vec<&str> = module_path.iter().map(String::as_str).collect();
        self.policy
            .is_allowed_site(site_crate.as_str(), &module_path)
    }

    /// Whether the callee of `expr` (a call or method call, or a path naming a function) is
    /// denied, and which item it is.
    fn denied_callee<'tcx>(
        &self,
        cx: &LateContext<'tcx>,
        expr: &'tcx Expr<'tcx>,
    ) -> Option<(DefId, Span)> {
        let (named, resolved, span) = callee(cx, expr)?;
        [resolved, named]
            .into_iter()
            .find(|id| self.denied_def(cx.tcx, *id))
            .map(|id| (id, span))
    }

    fn emit(
        &mut self,
        cx: &LateContext<'_>,
        lint: &'static rustc_lint::Lint,
        span: Span,
        message: String,
        note: &'static str,
        help: String,
    ) {
        let span = if span.from_expansion() {
            span.source_callsite()
        } else {
            span
        };
        if !self.reported.insert(span) {
            return;
        }
        cx.emit_span_lint(
            lint,
            span,
            Lint(move |diag: &mut Diag<'_, ()>| {
                diag.primary_message(message);
                diag.span(span);
                diag.note(note);
                diag.help(help);
            }),
        );
    }

    fn suggestion<'tcx>(&self, cx: &LateContext<'tcx>, expr: &'tcx Expr<'tcx>) -> Suggestion {
        url_hints(cx, expr)
            .iter()
            .map(|url| self.policy.suggest_adapter(Some(url)))
            .find(|s| matches!(s, Suggestion::Adapter { .. }))
            .unwrap_or(Suggestion::Unknown)
    }

    /// A value of a client type outside the allow-list.
    fn report_value(
        &mut self,
        cx: &LateContext<'_>,
        span: Span,
        ty_def: DefId,
        suggestion: Suggestion,
    ) {
        let ty_path = cx.tcx.def_path_str(ty_def);
        let message = match suggestion {
            Suggestion::Adapter { service, package } => format!(
                "HTTP client value of type `{ty_path}` outside an idem adapter: {service} writes go through `{package}`"
            ),
            Suggestion::Unknown => format!(
                "HTTP client value of type `{ty_path}` outside an idem adapter: use the adapter for the service"
            ),
        };
        self.emit(
            cx,
            HTTP_CALL_OUTSIDE_ADAPTER,
            span,
            message,
            NOTE,
            self.policy.help(),
        );
    }

    /// A leak from an allowed crate's public API: `item` (a local item, or `None` for a
    /// `pub use`) hands out `what`.
    fn report_leak(&mut self, cx: &LateContext<'_>, span: Span, item: Option<DefId>, what: DefId) {
        let tcx = cx.tcx;
        let what_path = if what.index == CRATE_DEF_INDEX {
            tcx.crate_name(what.krate).to_string()
        } else {
            tcx.def_path_str(what)
        };
        let message = match item {
            Some(item) => format!(
                "`{}::{}` hands out `{what_path}` from an allowed crate's public API: code outside the adapters can send with it, past the ledger",
                tcx.crate_name(LOCAL_CRATE),
                tcx.def_path_str(item),
            ),
            None => format!(
                "`pub use` re-exports `{what_path}` from an allowed crate's public API: code outside the adapters can send with it, past the ledger"
            ),
        };
        self.emit(
            cx,
            HTTP_CLIENT_LEAK,
            span,
            message,
            "the dependency gate and clippy's path bans do not see a client handed out by an allowed crate",
            "keep the client private: expose typed operations, and take settings in (for example `idem::executor::HttpSettings`) rather than handing a client out".to_owned(),
        );
    }

    /// Whether `id` can be named from other crates.
    fn exported(cx: &LateContext<'_>, id: LocalDefId) -> bool {
        if cx.effective_visibilities.is_exported(id) {
            return true;
        }
        // `use` items: public, in a module that is exported (or the crate root).
        let tcx = cx.tcx;
        if !tcx.visibility(id).is_public() {
            return false;
        }
        let module = tcx.parent_module_from_def_id(id);
        module.to_def_id().is_crate_root()
            || cx
                .effective_visibilities
                .is_exported(module.to_local_def_id())
    }

    /// Whether leaks are checked at `hir_id`: allowed code, not a denied crate itself.
    fn leak_checked(&self, cx: &LateContext<'_>, hir_id: rustc_hir::HirId) -> bool {
        let krate = cx.tcx.crate_name(LOCAL_CRATE);
        !self.policy.is_denied_crate(krate.as_str()) && self.allowed_here(cx, hir_id)
    }
}

const NOTE: &str = "requests sent past an adapter carry no stored idempotency key, so a retry \
                    after a crash or timeout sends the write twice";

impl<'tcx> LateLintPass<'tcx> for IdemLint {
    fn check_crate(&mut self, cx: &LateContext<'tcx>) {
        // The crate being compiled is an adapter when its own manifest says so; the adapters
        // of its workspace are named in suggestions. Read once per crate, before any check.
        let krate = cx.tcx.crate_name(LOCAL_CRATE);
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
        self.policy
            .allow_adapter_crate(manifest_dir.as_deref(), krate.as_str());
        if let Some(dir) = &manifest_dir {
            self.policy.add_workspace_adapters(dir);
        }
    }

    fn check_expr(&mut self, cx: &LateContext<'tcx>, expr: &'tcx Expr<'tcx>) {
        // `.await`, `?` and `for` expand to calls of their own; the call they wrap is what counts.
        if expr.span.desugaring_kind().is_some() {
            return;
        }
        let tcx = cx.tcx;

        // 1. A call into a denied crate.
        if let Some((flagged, span)) = self.denied_callee(cx, expr) {
            if self.allowed_here(cx, expr.hir_id) {
                return;
            }
            let suggestion = self.suggestion(cx, expr);
            let message = idem_lint_policy::message(&tcx.def_path_str(flagged), suggestion);
            self.emit(
                cx,
                HTTP_CALL_OUTSIDE_ADAPTER,
                span,
                message,
                NOTE,
                self.policy.help(),
            );
            return;
        }

        // 2. A value of a denied type, however it was made.
        if !self.is_value_source(cx, expr) {
            return;
        }
        let Some(ty) = cx.typeck_results().expr_ty_opt(expr) else {
            return;
        };
        let Some(ty_def) = self.denied_in_ty(tcx, ty, 0) else {
            return;
        };
        if self.allowed_here(cx, expr.hir_id) {
            return;
        }
        let suggestion = self.suggestion(cx, expr);
        self.report_value(cx, expr.span, ty_def, suggestion);
    }

    fn check_body(&mut self, cx: &LateContext<'tcx>, body: &Body<'tcx>) {
        // 3. Parameters of a client type (a function handed a client by generic code).
        for param in body.params {
            if param.span.desugaring_kind().is_some() {
                continue;
            }
            let Some(ty) = cx.typeck_results().node_type_opt(param.hir_id) else {
                continue;
            };
            let Some(ty_def) = self.denied_in_ty(cx.tcx, ty, 0) else {
                continue;
            };
            if self.allowed_here(cx, param.hir_id) {
                continue;
            }
            self.report_value(cx, param.ty_span, ty_def, Suggestion::Unknown);
        }
    }

    fn check_item(&mut self, cx: &LateContext<'tcx>, item: &'tcx Item<'tcx>) {
        let tcx = cx.tcx;
        let id = item.owner_id.def_id;
        if !self.leak_checked(cx, item.hir_id()) || !Self::exported(cx, id) {
            return;
        }
        match &item.kind {
            ItemKind::Use(path, _) => {
                for res in path.res.present_items() {
                    let Res::Def(_, target) = res else { continue };
                    let whole_crate = target.index == CRATE_DEF_INDEX
                        && self
                            .policy
                            .is_denied_crate(tcx.crate_name(target.krate).as_str());
                    if whole_crate || self.denied_def(tcx, target) {
                        self.report_leak(cx, item.span, None, target);
                        break;
                    }
                }
            }
            ItemKind::Fn { sig, .. } => {
                let output = tcx
                    .fn_sig(id)
                    .instantiate_identity()
                    .skip_normalization()
                    .skip_binder()
                    .output();
                if let Some(what) = self.denied_in_ty(tcx, output, 0) {
                    self.report_leak(
                        cx,
                        ret_span(sig.decl.output, item.span),
                        Some(id.to_def_id()),
                        what,
                    );
                }
            }
            ItemKind::TyAlias(_, _, ty)
            | ItemKind::Const(_, _, ty, _)
            | ItemKind::Static(_, _, ty, _) => {
                let t = tcx.type_of(id).instantiate_identity().skip_normalization();
                if let Some(what) = self.denied_in_ty(tcx, t, 0) {
                    self.report_leak(cx, ty.span, Some(id.to_def_id()), what);
                }
            }
            _ => {}
        }
    }

    fn check_impl_item(&mut self, cx: &LateContext<'tcx>, item: &'tcx ImplItem<'tcx>) {
        let tcx = cx.tcx;
        let id = item.owner_id.def_id;
        if !self.leak_checked(cx, item.hir_id()) {
            return;
        }
        match (&item.kind, item.impl_kind) {
            // Inherent methods: what they return. (A trait impl's method signature is the
            // trait's, e.g. reqwest-middleware's `Middleware::handle`.)
            (ImplItemKind::Fn(sig, _), ImplItemImplKind::Inherent { .. }) => {
                if !Self::exported(cx, id) {
                    return;
                }
                let output = tcx
                    .fn_sig(id)
                    .instantiate_identity()
                    .skip_normalization()
                    .skip_binder()
                    .output();
                if let Some(what) = self.denied_in_ty(tcx, output, 0) {
                    self.report_leak(
                        cx,
                        ret_span(sig.decl.output, item.span),
                        Some(id.to_def_id()),
                        what,
                    );
                }
            }
            // Associated types of trait impls on an exported local type (`type Target = Client`).
            (ImplItemKind::Type(ty), ImplItemImplKind::Trait { .. }) => {
                let impl_def = tcx.parent(id.to_def_id());
                let self_ty = tcx
                    .type_of(impl_def)
                    .instantiate_identity()
                    .skip_normalization();
                let exported_self = match self_ty.kind() {
                    ty::Adt(adt, _) => adt
                        .did()
                        .as_local()
                        .is_some_and(|l| cx.effective_visibilities.is_exported(l)),
                    _ => false,
                };
                if !exported_self {
                    return;
                }
                let t = tcx.type_of(id).instantiate_identity().skip_normalization();
                if let Some(what) = self.denied_in_ty(tcx, t, 0) {
                    self.report_leak(cx, ty.span, Some(id.to_def_id()), what);
                }
            }
            _ => {}
        }
    }

    fn check_field_def(&mut self, cx: &LateContext<'tcx>, field: &'tcx FieldDef<'tcx>) {
        let tcx = cx.tcx;
        if !self.leak_checked(cx, field.hir_id)
            || !cx.effective_visibilities.is_exported(field.def_id)
        {
            return;
        }
        let t = tcx
            .type_of(field.def_id)
            .instantiate_identity()
            .skip_normalization();
        if let Some(what) = self.denied_in_ty(tcx, t, 0) {
            self.report_leak(cx, field.ty.span, Some(field.def_id.to_def_id()), what);
        }
    }
}

impl IdemLint {
    /// Whether `expr` is where a value comes from (a call, a field, an index, a constant, a
    /// dereference) rather than a use of a local or a wrapper around another expression, and
    /// is not already reported through its callee or the call it is the receiver of.
    fn is_value_source<'tcx>(&self, cx: &LateContext<'tcx>, expr: &'tcx Expr<'tcx>) -> bool {
        let source = match &expr.kind {
            ExprKind::Call(func, _) => self.denied_callee(cx, func).is_none(),
            ExprKind::MethodCall(..)
            | ExprKind::Field(..)
            | ExprKind::Index(..)
            | ExprKind::Struct(..) => true,
            ExprKind::Unary(UnOp::Deref, inner) => !is_local(cx, inner),
            ExprKind::Path(qpath) => matches!(
                cx.qpath_res(qpath, expr.hir_id),
                Res::Def(
                    DefKind::Const { .. } | DefKind::Static { .. } | DefKind::AssocConst { .. },
                    _
                )
            ),
            _ => false,
        };
        if !source {
            return false;
        }
        // The receiver of a denied method call is reported with that call.
        if let Node::Expr(parent) = cx.tcx.parent_hir_node(expr.hir_id)
            && let ExprKind::MethodCall(_, receiver, ..) = &parent.kind
            && receiver.hir_id == expr.hir_id
            && self.denied_callee(cx, parent).is_some()
        {
            return false;
        }
        true
    }
}

fn is_local(cx: &LateContext<'_>, expr: &Expr<'_>) -> bool {
    matches!(&expr.kind, ExprKind::Path(qpath @ QPath::Resolved(..)) if matches!(cx.qpath_res(qpath, expr.hir_id), Res::Local(_)))
}

fn ret_span(output: FnRetTy<'_>, fallback: Span) -> Span {
    match output {
        FnRetTy::Return(ty) => ty.span,
        FnRetTy::DefaultReturn(_) => fallback,
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
fn ui_generic_evasion() {
    dylint_testing::ui_test_example(env!("CARGO_PKG_NAME"), "generic_evasion");
}

#[test]
fn ui_hyper_client_not_server() {
    dylint_testing::ui_test_example(env!("CARGO_PKG_NAME"), "hyper_client_server");
}

#[test]
fn ui_leaky_adapter() {
    dylint_testing::ui::Test::example(env!("CARGO_PKG_NAME"), "leaky_adapter")
        .dylint_toml("[idem_lint]\nallowed = [\"leaky_adapter\"]\n")
        .run();
}

#[test]
fn ui_allowed_module_only() {
    dylint_testing::ui::Test::example(env!("CARGO_PKG_NAME"), "allowed_module")
        .dylint_toml("[idem_lint]\nallowed = [\"allowed_module::executor\"]\n")
        .run();
}

//! The pages, as compiled maud templates. Plain HTML forms; no script.

use maud::{DOCTYPE, Markup, html};

use crate::error::ConsoleError;
use crate::ledger::{AttentionFilter, Page, ReconcileOutcome, RetryOutcome, Timeline};
use crate::view::{AuditEntry, InboundView, OperationView};
use crate::web::{CSRF_FIELD, Ctx, ListQuery};

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1a1a1a;background:#fafafa}
header{background:#1f3a5f;color:#fff;padding:.6rem 1.2rem;display:flex;gap:2rem;align-items:center;flex-wrap:wrap}
header a{color:#fff}header .who{margin-left:auto}
main{padding:1rem 1.2rem;max-width:80rem}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5rem 0 1rem}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top;font-size:.92rem}
th{background:#eef1f5}
code{font-size:.9em}
.state{font-weight:600;padding:0 .3rem;border-radius:3px}
.state-failed{background:#fde2e1}.state-unknown{background:#fff1c2}.state-sending{background:#e3ecff}
.state-succeeded{background:#dcf5e3}.state-superseded{background:#eee}
.warning{border:2px solid #b54708;background:#fffaeb;padding:.6rem 1rem;margin:1rem 0}
.error{border:2px solid #b42318;background:#fef3f2;padding:.6rem 1rem;margin:1rem 0}
.ok{border:2px solid #067647;background:#ecfdf3;padding:.6rem 1rem;margin:1rem 0}
form.filters{display:flex;gap:1rem;flex-wrap:wrap;align-items:end;background:#fff;padding:.6rem;border:1px solid #ccc}
form.filters label{display:flex;flex-direction:column;font-size:.85rem}
button{padding:.35rem .8rem;font-size:.95rem}
.actions{display:flex;gap:1rem;flex-wrap:wrap;align-items:start}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;background:#fff;padding:.6rem;border:1px solid #ccc}
dt{font-weight:600}dd{margin:0}
";

fn layout(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    let base = &ctx.base;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · idem console" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "idem console" }
                    nav aria-label="Main" {
                        a href={ (base) "/" } { "Needs attention" } " · "
                        a href={ (base) "/inbound" } { "Inbound in flight" } " · "
                        a href={ (base) "/audit" } { "Audit log" }
                    }
                    span.who { "Signed in as " strong { (ctx.who.name()) } " (" (ctx.who.role().as_str()) ")" }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn state(op: &OperationView) -> Markup {
    html! {
        span class={ "state state-" (op.state) } {
            (op.state)
            @if op.lease_expired { " (lease expired)" }
        }
    }
}

fn opt(v: Option<&str>) -> Markup {
    html! { @match v { Some(v) => (v), None => "–" } }
}

fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(ctx.token); }
}

pub(crate) fn error_page(ctx: &Ctx, e: &ConsoleError) -> Markup {
    layout(
        ctx,
        "Refused",
        html! {
            div.error role="alert" { p { (e.to_string()) } }
            p { a href={ (ctx.base) "/" } { "Back to the operations needing attention" } }
        },
    )
}

fn selected(q: &Option<String>, v: &str) -> bool {
    q.as_deref().unwrap_or("") == v
}

pub(crate) fn attention(
    ctx: &Ctx,
    q: &ListQuery,
    f: &AttentionFilter,
    page: &Page<OperationView>,
) -> Markup {
    let base = &ctx.base;
    let link = |n: u32| {
        let mut parts = vec![format!("page={n}")];
        for (name, v) in [
            ("state", &q.state),
            ("provider", &q.provider),
            ("shop", &q.shop),
            ("age", &q.age),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                parts.push(format!(
                    "{name}={}",
                    serde_urlencoded::to_string([("v", v)])
                        .unwrap_or_default()
                        .trim_start_matches("v=")
                ));
            }
        }
        format!("{base}/?{}", parts.join("&"))
    };
    let states: Vec<&str> = f.effective_states().iter().map(|s| s.as_str()).collect();
    layout(
        ctx,
        "Operations needing attention",
        html! {
            p { "Failed and unknown operations, and sending ones whose worker's lease ran out. Newest change first." }
            form.filters method="get" action={ (base) "/" } aria-label="Filter operations" {
                label for="f-state" { "State"
                    select id="f-state" name="state" {
                        option value="" selected[selected(&q.state, "")] { "all needing attention" }
                        @for s in ["failed", "unknown", "sending"] {
                            option value=(s) selected[selected(&q.state, s)] { (s) }
                        }
                    }
                }
                label for="f-provider" { "Provider"
                    input id="f-provider" name="provider" type="text" value=(q.provider.as_deref().unwrap_or("")) placeholder="stripe";
                }
                label for="f-shop" { "Shop"
                    input id="f-shop" name="shop" type="text" value=(q.shop.as_deref().unwrap_or("")) placeholder="joes-bikes";
                }
                label for="f-age" { "Unchanged for at least"
                    input id="f-age" name="age" type="text" value=(q.age.as_deref().unwrap_or("")) placeholder="1h, 2d";
                }
                button type="submit" id="apply-filter" { "Filter" }
            }
            table id="operations" {
                caption { "States shown: " (states.join(", ")) "; page " (page.page) }
                thead { tr {
                    th scope="col" { "Key" } th scope="col" { "Provider" } th scope="col" { "Operation" }
                    th scope="col" { "State" } th scope="col" { "Claims" } th scope="col" { "Status" }
                    th scope="col" { "Unchanged for" } th scope="col" { "Note" }
                } }
                tbody {
                    @for op in &page.items {
                        tr {
                            td { a href={ (base) "/ops/" (op.key) } { code { (op.key) } } }
                            td { (op.provider) } td { (op.operation) } td { (state(op)) }
                            td { (op.claims) }
                            td { (opt(op.response_status.map(|s| s.to_string()).as_deref())) }
                            td { (op.age) }
                            td { (opt(op.note.as_deref())) }
                        }
                    }
                    @if page.items.is_empty() {
                        tr { td colspan="8" { "Nothing needs attention with these filters." } }
                    }
                }
            }
            nav aria-label="Pages" {
                @if page.page > 1 { a rel="prev" href=(link(page.page - 1)) { "← Previous page" } " " }
                @if page.has_next { a rel="next" href=(link(page.page + 1)) { "Next page →" } }
            }
        },
    )
}

fn audit_table(ctx: &Ctx, rows: &[AuditEntry], caption: &str) -> Markup {
    html! {
        table id="audit" {
            caption { (caption) }
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" }
                th scope="col" { "Key" } th scope="col" { "Before" } th scope="col" { "After" }
                th scope="col" { "Outcome" } th scope="col" { "Details" }
            } }
            tbody {
                @for r in rows {
                    tr {
                        td { (r.at) } td { (r.actor) } td { (r.action) }
                        td { @match &r.key { Some(k) => a href={ (ctx.base) "/ops/" (k) } { code { (k) } }, None => "–" } }
                        td { (opt(r.state_before.as_deref())) } td { (opt(r.state_after.as_deref())) }
                        td { (r.outcome) } td { (opt(r.detail.as_deref())) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="8" { "No actions recorded." } } }
            }
        }
    }
}

fn details(op: &OperationView) -> Markup {
    html! {
        dl {
            dt { "Key" } dd { code { (op.key) } }
            dt { "Provider" } dd { (op.provider) }
            dt { "Operation" } dd { (op.operation) }
            dt { "State" } dd { (state(op)) }
            dt { "Claims" } dd { (op.claims) }
            dt { "Recorded" } dd { (op.created_at) }
            dt { "First attempt" } dd { (opt(op.first_sent_at.as_deref())) }
            dt { "Last change" } dd { (op.updated_at) " (" (op.age) " ago)" }
            dt { "Lease until" } dd { (opt(op.lease_expires_at.as_deref())) }
            dt { "Provider status" } dd { (opt(op.response_status.map(|s| s.to_string()).as_deref())) }
            dt { "Provider id" } dd { (opt(op.provider_id.as_deref())) }
            dt { "May have taken effect since" } dd { (opt(op.maybe_applied_at.as_deref())) }
            dt { "Compacted" } dd { (opt(op.compacted_at.as_deref())) }
            dt { "Stored body" } dd { @match op.response_body_len { Some(n) => { (n) " bytes (not shown)" }, None => "–" } }
            dt { "Note" } dd { (opt(op.note.as_deref())) }
            dt { "Checkpoint" } dd { (opt(op.checkpoint.as_deref())) }
            dt { "Superseded by" } dd { (opt(op.superseded_by.as_deref())) }
        }
    }
}

fn reconcile_button(ctx: &Ctx, t: &Timeline, label: &str) -> Markup {
    html! {
        @if t.reconcilable && ctx.who.role().may_act() && matches!(t.operation.state.as_str(), "unknown" | "sending") {
            form method="post" action={ (ctx.base) "/ops/" (t.operation.key) "/reconcile" } {
                (csrf(ctx))
                button type="submit" id="reconcile" { (label) }
            }
        }
    }
}

pub(crate) fn operation(ctx: &Ctx, t: &Timeline) -> Markup {
    let op = &t.operation;
    layout(
        ctx,
        &format!("Operation {}", op.key),
        html! {
            (details(op))
            @if ctx.who.role().may_act() {
                div.actions {
                    (reconcile_button(ctx, t, &format!("Reconcile with {}", op.provider)))
                    @if op.retryable {
                        form method="get" action={ (ctx.base) "/ops/" (op.key) "/retry" } {
                            button type="submit" id="retry" { "Retry with a new key…" }
                        }
                    }
                }
                @if !t.reconcilable && op.state == "unknown" {
                    p { "No reconciliation is registered for " (op.provider) ": check at the provider by hand before retrying." }
                }
            }
            table id="timeline" {
                caption { "Timeline" }
                thead { tr { th scope="col" { "When" } th scope="col" { "What" } } }
                tbody { @for e in &t.events { tr { td { (e.at) } td { (e.what) } } } }
            }
            table id="attempts" {
                caption { "Attempts of this record" }
                thead { tr {
                    th scope="col" { "Key" } th scope="col" { "State" } th scope="col" { "Claims" }
                    th scope="col" { "Status" } th scope="col" { "Provider id" } th scope="col" { "Note" }
                } }
                tbody { @for a in &t.attempts { tr {
                    td { a href={ (ctx.base) "/ops/" (a.key) } { code { (a.key) } } }
                    td { (state(a)) } td { (a.claims) }
                    td { (opt(a.response_status.map(|s| s.to_string()).as_deref())) }
                    td { (opt(a.provider_id.as_deref())) } td { (opt(a.note.as_deref())) }
                } } }
            }
            (audit_table(ctx, &t.audit, "Console actions on this key"))
        },
    )
}

pub(crate) fn retry_confirm(ctx: &Ctx, t: &Timeline, error: Option<&ConsoleError>) -> Markup {
    let op = &t.operation;
    let next = format!("v{}", u64::from(op.attempt) + 1);
    let typed = op.confirm_by_typing;
    layout(
        ctx,
        &format!("Retry {}?", op.key),
        html! {
            @if let Some(e) = error { div.error role="alert" { p { (e.to_string()) } } }
            (details(op))
            @match op.state.as_str() {
                _ if typed && op.state != "succeeded" => div.warning role="alert" {
                    p { strong { "This write may already have happened." } }
                    p { "The request was sent to " (op.provider) " and its answer was lost. Retrying sends it again under a new key ("
                        (next) "), so the customer may get it twice." }
                    @if t.reconcilable {
                        p { "Reconcile first: it asks " (op.provider) " what happened and settles the row without sending anything." }
                        (reconcile_button(ctx, t, "Reconcile first"))
                    } @else {
                        p { "No reconciliation is registered for " (op.provider) ": check there by hand first." }
                    }
                },
                "succeeded" => div.warning role="alert" {
                    p { strong { "This operation succeeded." } " Retrying makes the write happen a second time. Tick “force” and type the key to go on." }
                },
                _ => p { "The attempt " code { (op.key) } " becomes superseded and the next attempt (" (next)
                    ") is recorded as pending. Store the new key on the record and re-run the job: the worker sends it once." },
            }
            form method="post" action={ (ctx.base) "/ops/" (op.key) "/retry" } {
                (csrf(ctx))
                @if typed {
                    p {
                        label for="confirm" { "Type the key " code { (op.key) } " to confirm" }
                        br;
                        input id="confirm" name="confirm" type="text" autocomplete="off" required size="60";
                    }
                } @else {
                    input type="hidden" name="confirm" value=(op.key);
                }
                @if op.state == "succeeded" {
                    p { input id="force" name="force" type="checkbox"; " " label for="force" { "Force: retry an operation that succeeded" } }
                }
                button type="submit" id="confirm-retry" { "Retry with key " (next) }
                " "
                a href={ (ctx.base) "/ops/" (op.key) } { "Cancel" }
            }
        },
    )
}

pub(crate) fn retry_done(ctx: &Ctx, o: &RetryOutcome) -> Markup {
    layout(
        ctx,
        "Retried",
        html! {
            div.ok role="status" {
                p { code { (o.before.key) } " is now " strong { (o.after.state) } "." }
                p { "Next attempt: " code #next-key { (o.next) } }
                p { "Store the new key on the record and re-run the job; the worker sends it once." }
            }
            p { "Before: " (state(&o.before)) " → after: " (state(&o.after)) }
            p { a href={ (ctx.base) "/ops/" (o.before.key) } { "Back to the operation" } " · " a href={ (ctx.base) "/audit" } { "Audit log" } }
        },
    )
}

pub(crate) fn reconcile_done(ctx: &Ctx, o: &ReconcileOutcome) -> Markup {
    let verdict = match o.verdict {
        "applied" => "Applied: the provider has it; the operation is now succeeded.",
        "not_applied" => {
            "Not applied: the provider proves nothing happened; the same key may be sent again."
        }
        _ => "Undetermined: the provider's answer proves neither; the operation stays unknown.",
    };
    layout(
        ctx,
        "Reconciled",
        html! {
            div.ok role="status" {
                p #verdict { strong { (verdict) } }
                p { (o.note) }
                @if let Some(id) = &o.provider_id { p { "Provider id: " code { (id) } } }
            }
            p { "Before: " (state(&o.before)) " → after: " (state(&o.after)) }
            p { a href={ (ctx.base) "/ops/" (o.before.key) } { "Back to the operation" } " · " a href={ (ctx.base) "/audit" } { "Audit log" } }
        },
    )
}

pub(crate) fn inbound(ctx: &Ctx, page: &Page<InboundView>) -> Markup {
    layout(
        ctx,
        "Inbound records in flight",
        html! {
            p { "Requests to your own endpoints that hold a record without an answer yet. "
                "A stuck one's request died (its lease ran out): the next retry with the same key takes it over." }
            table id="inbound" {
                caption { "In flight, oldest first; page " (page.page) }
                thead { tr {
                    th scope="col" { "Endpoint" } th scope="col" { "Actor" } th scope="col" { "Client key" }
                    th scope="col" { "State" } th scope="col" { "Age" } th scope="col" { "Lease until" }
                } }
                tbody {
                    @for r in &page.items { tr {
                        td { (r.endpoint) } td { (r.actor) } td { code { (r.key) } }
                        td { @if r.stuck { strong { "stuck" } } @else { "in flight" } }
                        td { (r.age) } td { (opt(r.lease_expires_at.as_deref())) }
                    } }
                    @if page.items.is_empty() { tr { td colspan="6" { "No inbound record is in flight." } } }
                }
            }
            nav aria-label="Pages" {
                @if page.page > 1 { a rel="prev" href={ (ctx.base) "/inbound?page=" (page.page - 1) } { "← Previous page" } " " }
                @if page.has_next { a rel="next" href={ (ctx.base) "/inbound?page=" (page.page + 1) } { "Next page →" } }
            }
        },
    )
}

pub(crate) fn audit(ctx: &Ctx, rows: &[AuditEntry]) -> Markup {
    layout(
        ctx,
        "Audit log",
        audit_table(ctx, rows, "Every console action, newest first"),
    )
}

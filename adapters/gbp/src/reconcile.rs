//! Reconciling a local post whose outcome is unknown: list the location's
//! posts and look for ours by content.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use idem::adapter::{Expect, Lookup, Settled, lookup_answer, lookup_failed};
use idem::executor::{ReadError, ReadResponse, Source};
use idem::ledger::{OperationState, Resolution};
use idem::{IdempotencyKey, OutboundRequest};
use serde::Deserialize;

use crate::client::{GbpClient, LocalPostCreated, OP_CREATE_LOCAL_POST};
use crate::error::{AdapterError, Error};
use crate::model::{LocalPost, LocationName};
use idem::time::parse_rfc3339;

/// What [`GbpClient::reconcile_local_post`] established.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reconciliation {
    /// Google has the post: the row is now `succeeded` (or already was) and
    /// stores the post. Running the job again answers from the ledger.
    Found(Box<LocalPostCreated>),
    /// No matching post exists, long enough after the attempt that Google
    /// cannot still be processing it: the row is back to `pending`, and
    /// [`GbpClient::create_local_post`] with the same key sends it again.
    NotFound,
    /// No matching post yet, but the attempt is recent and Google may still
    /// be processing it. The row stays `unknown`; reconcile again after
    /// `wait`.
    TooEarly {
        /// How long until a missing post may be taken as "never created".
        wait: Duration,
    },
    /// More than one post could be ours (identical content), posts match
    /// loosely but not exactly, or a listed post could not be read by this
    /// version (it could be ours, so nothing is concluded from its absence).
    /// The row stays `unknown`: a person decides (`store.resolve` or an
    /// operator bump).
    Ambiguous {
        /// The candidates' resource names.
        candidates: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    local_posts: Vec<serde_json::Value>,
    next_page_token: Option<String>,
}

/// One listed post: Google's JSON (stored on success) and its typed form
/// (`None` when this version cannot read it).
struct Listed {
    raw: serde_json::Value,
    post: Option<LocalPost>,
}

impl Listed {
    fn name(&self) -> String {
        match &self.post {
            Some(p) => p.name.clone().unwrap_or_default(),
            None => self.raw["name"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

enum Matched {
    One(usize),
    Nothing,
    Several(Vec<String>),
}

impl GbpClient {
    /// Settles a local post whose outcome is `unknown` (a timeout or 5xx
    /// after sending), by listing the location's posts
    /// (`accounts.locations.localPosts.list`, every page) and matching on
    /// content: the same `summary` and `topicType` (and `languageCode`, when
    /// `post` sets one), created no earlier than the first send minus the
    /// configured clock skew.
    ///
    /// Pass the same key, location and post that were given to
    /// [`create_local_post`](Self::create_local_post); they are checked
    /// against the ledger's fingerprint.
    ///
    /// * exactly one match: the row is resolved `succeeded` with that post;
    /// * none, and the settle time has passed since the outcome became
    ///   unknown: resolved "not applied" (back to `pending`);
    /// * none, too early: [`Reconciliation::TooEarly`], row unchanged;
    /// * several exact matches, or only loose ones (same topic, summary equal
    ///   up to case and white space): [`Reconciliation::Ambiguous`], row
    ///   unchanged.
    ///
    /// Limits: Google keeps no key for posts, so two posts with identical
    /// content created in the same window (by this key and by someone else)
    /// are indistinguishable, and a post deleted in Google's UI after it was
    /// created looks like one never created (the resend then posts it again).
    ///
    /// The list requests are plain reads
    /// ([`Executor::read`](idem::Executor::read)): no lease is taken and the
    /// row is left exactly as it is unless a verdict is reached (found, or
    /// not found after the settle time). Before a verdict is recorded the row
    /// is checked again: if another worker claimed, settled or bumped it
    /// while the posts were listed, nothing is recorded and
    /// [`Error::RecordChanged`] asks for another try. No `POST` is ever sent
    /// by this method.
    ///
    /// # Errors
    ///
    /// [`Error::KeyReused`] when the post differs from the one the key was
    /// sent with; [`Error::NotUnknown`] for a `pending` row,
    /// [`Error::Rejected`] for a `failed` one, [`Error::Superseded`],
    /// [`Error::InFlight`]; [`Error::LookupFailed`] when the posts cannot be
    /// listed (row unchanged); credential and store errors.
    pub async fn reconcile_local_post(
        &self,
        key: &IdempotencyKey,
        location: &LocationName,
        post: &LocalPost,
    ) -> Result<Reconciliation, Error> {
        let core = &self.inner.core;
        let fingerprint = self.create_post_request(location, post).fingerprint();
        let expect = Expect::operation(OP_CREATE_LOCAL_POST).fingerprint(&fingerprint);
        let op = match core.open_lookup(key, expect).await? {
            Lookup::Open(op) => op,
            Lookup::Succeeded(op) => {
                let body = op.response_body.unwrap_or_default();
                return Ok(Reconciliation::Found(found(key, &body, Source::Ledger)?));
            }
            Lookup::Pending(op) => {
                let (key, state) = (key.clone(), op.state);
                return Err(Error::NotUnknown { key, state });
            }
        };
        // The reads below leave the row untouched, so this is still the
        // moment the outcome became unknown (or the dead sender's lease ran
        // out) on every poll.
        let unknown_since = match op.state {
            OperationState::Sending => op.lease_expires_at.unwrap_or(op.updated_at),
            _ => op.updated_at,
        };
        let first_sent = op.first_sent_at;

        let listed = self.list_posts(key, location).await?;

        let skew = self.inner.reconcile.clock_skew;
        let settle = self.inner.reconcile.settle_time;
        match match_posts(&listed, post, first_sent, skew) {
            Matched::One(i) => {
                let name = listed[i].name();
                let body = Bytes::from(serde_json::to_vec(&listed[i].raw).unwrap_or_default());
                let resolution = Resolution::Succeeded {
                    status: 200,
                    body: body.clone(),
                    note: format!("found by reconciliation: {name}"),
                };
                if let Settled::AlreadySucceeded(op) = core.settle(key, &op, &resolution).await? {
                    return already(key, op);
                }
                tracing::info!(%key, post = %name, "local post reconciled: found");
                Ok(Reconciliation::Found(found(
                    key,
                    &body,
                    Source::Reconciled,
                )?))
            }
            Matched::Several(candidates) => {
                tracing::warn!(%key, candidates = candidates.len(), "local post reconciliation is ambiguous");
                Ok(Reconciliation::Ambiguous { candidates })
            }
            Matched::Nothing => {
                let now = core.executor().now();
                let ready_at = unknown_since + settle;
                if now < ready_at {
                    let wait = ready_at.duration_since(now).unwrap_or(Duration::ZERO);
                    return Ok(Reconciliation::TooEarly { wait });
                }
                let resolution = Resolution::NotApplied {
                    note: format!(
                        "reconciliation: no matching post among {} listed, {} s after the attempt",
                        listed.len(),
                        now.duration_since(unknown_since)
                            .unwrap_or_default()
                            .as_secs()
                    ),
                };
                if let Settled::AlreadySucceeded(op) = core.settle(key, &op, &resolution).await? {
                    return already(key, op);
                }
                tracing::info!(%key, "local post reconciled: not created; the record is pending again");
                Ok(Reconciliation::NotFound)
            }
        }
    }

    /// Lists every page of the location's posts, as plain reads
    /// ([`Executor::read`](idem::Executor::read)): no ledger row, no lease.
    async fn list_posts(
        &self,
        key: &IdempotencyKey,
        location: &LocationName,
    ) -> Result<Vec<Listed>, Error> {
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        for _ in 0..self.inner.reconcile.max_pages {
            let mut url = self.posts_url(location);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("pageSize", "100");
                if let Some(t) = &page_token {
                    q.append_pair("pageToken", t);
                }
            }
            let answer = self.read_authed(key, &OutboundRequest::get(url)).await?;
            let page: ListPage = lookup_answer(key, &answer, "listing the location's posts")?;
            for raw in page.local_posts {
                // A post this version cannot read is kept as such: it could
                // be ours, so it never counts as evidence of absence.
                let post = serde_json::from_value(raw.clone()).ok();
                out.push(Listed { raw, post });
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => page_token = Some(t),
                _ => return Ok(out),
            }
        }
        let max = self.inner.reconcile.max_pages;
        let reason = format!("more than {max} pages of posts; raise reconcile_max_pages");
        Err(lookup_failed(key, reason, None))
    }

    /// Reads with the current token; on 401 refreshes the token once and
    /// reads again. A credential failure changes nothing on the record.
    async fn read_authed(
        &self,
        key: &IdempotencyKey,
        request: &OutboundRequest,
    ) -> Result<ReadResponse, Error> {
        let executor = self.inner.core.executor();
        let failed = |e: ReadError| lookup_failed(key, format!("listing posts: {e}"), None);
        let token_failed = |source| AdapterError::Token {
            key: key.clone(),
            source,
        };
        let token = self.inner.tokens.token().await.map_err(token_failed)?;
        let first = executor
            .read(
                &self.inner.read,
                request.clone().bearer_auth(token.secret()),
            )
            .await
            .map_err(failed)?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        tracing::info!("Google answered 401 to a read; refreshing the access token once");
        let fresh = self.inner.tokens.refresh().await.map_err(token_failed)?;
        let second = executor
            .read(
                &self.inner.read,
                request.clone().bearer_auth(fresh.secret()),
            )
            .await
            .map_err(failed)?;
        if second.status == StatusCode::UNAUTHORIZED {
            return Err(AdapterError::Unauthenticated { key: key.clone() }.into());
        }
        Ok(second)
    }
}

fn already(key: &IdempotencyKey, op: idem::Operation) -> Result<Reconciliation, Error> {
    let body = op.response_body.unwrap_or_default();
    Ok(Reconciliation::Found(found(key, &body, Source::Ledger)?))
}

fn found(
    key: &IdempotencyKey,
    body: &[u8],
    source: Source,
) -> Result<Box<LocalPostCreated>, Error> {
    let post: LocalPost = idem::adapter::decode_json(key, body)?;
    Ok(Box::new(LocalPostCreated {
        key: key.clone(),
        post,
        source,
    }))
}

fn normalize(s: &str) -> String {
    s.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn match_posts(
    listed: &[Listed],
    wanted: &LocalPost,
    first_sent: Option<SystemTime>,
    skew: Duration,
) -> Matched {
    let window_start = first_sent.map(|t| t.checked_sub(skew).unwrap_or(t));
    let in_window = |created: Option<&str>| {
        match (window_start, created.and_then(parse_rfc3339)) {
            (Some(start), Some(created)) => created >= start,
            // No time to compare: it cannot be excluded.
            _ => true,
        }
    };
    let readable = |i: usize| listed[i].post.as_ref();
    let candidates: Vec<usize> = (0..listed.len())
        .filter(|&i| {
            readable(i).is_some_and(|p| {
                p.topic_type == wanted.topic_type && in_window(p.create_time.as_deref())
            })
        })
        .collect();
    let exact: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| {
            readable(i).is_some_and(|p| {
                p.summary == wanted.summary
                    && (wanted.language_code.is_none() || p.language_code == wanted.language_code)
            })
        })
        .collect();
    let names = |ids: &[usize]| ids.iter().map(|&i| listed[i].name()).collect::<Vec<_>>();
    match exact.len() {
        1 => return Matched::One(exact[0]),
        0 => {}
        _ => return Matched::Several(names(&exact)),
    }
    let want = normalize(wanted.summary.as_deref().unwrap_or_default());
    let loose: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| {
            readable(i).is_some_and(|p| normalize(p.summary.as_deref().unwrap_or_default()) == want)
        })
        .collect();
    if !loose.is_empty() {
        return Matched::Several(names(&loose));
    }
    // Absence is only proven if every post that could be ours was read.
    let unreadable: Vec<usize> = (0..listed.len())
        .filter(|&i| listed[i].post.is_none() && in_window(listed[i].raw["createTime"].as_str()))
        .collect();
    if unreadable.is_empty() {
        Matched::Nothing
    } else {
        Matched::Several(names(&unreadable))
    }
}

mod by_key {
    //! [`idem::reconcile::Reconcile`] for [`GbpClient`]; its verdicts are in the
    //! README ("Reconciliation from the key alone").

    use async_trait::async_trait;
    use idem::IdempotencyKey;
    use idem::adapter::{ToReconcile, record_to_reconcile};
    use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};

    use crate::client::{GbpClient, OP_CREATE_LOCAL_POST, PROVIDER_NAME};
    use crate::model::LocalPost;

    #[async_trait]
    impl Reconcile for GbpClient {
        fn provider(&self) -> &str {
            PROVIDER_NAME
        }

        async fn reconcile(
            &self,
            key: &IdempotencyKey,
        ) -> Result<ReconcileVerdict, ReconcileError> {
            let found = record_to_reconcile(self.executor(), PROVIDER_NAME, key, false).await?;
            let post = found.operation().operation == OP_CREATE_LOCAL_POST;
            Ok(match found {
                ToReconcile::Succeeded(op) => ReconcileVerdict::Applied {
                    provider_id: op
                        .response_body
                        .as_deref()
                        .filter(|_| post)
                        .and_then(|b| serde_json::from_slice::<LocalPost>(b).ok())
                        .and_then(|p| p.name),
                    note: "the record had already succeeded".to_owned(),
                },
                ToReconcile::Open(_) => ReconcileVerdict::Undetermined { note: note(post) },
            })
        }
    }

    fn note(post: bool) -> String {
        if post {
            "Google keeps no key for local posts and the record holds neither the location nor the \
             post, so nothing can be looked up from the key alone; call \
             GbpClient::reconcile_local_post with the original location and post"
                .to_owned()
        } else {
            "a review reply is naturally idempotent: run the same job again with the same key"
                .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TopicType;
    use std::time::UNIX_EPOCH;

    fn listed(name: &str, summary: &str, lang: &str, created: &str) -> Listed {
        let raw = serde_json::json!({
            "name": name, "summary": summary, "languageCode": lang,
            "topicType": "STANDARD", "createTime": created
        });
        Listed {
            post: Some(serde_json::from_value(raw.clone()).unwrap()),
            raw,
        }
    }

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn matches_by_content_after_the_first_send() {
        // 2024-01-01T00:00:00Z = 1704067200
        let posts = vec![
            listed("p/old", "Sale", "en", "2023-12-31T23:00:00Z"),
            listed("p/new", "Sale", "en", "2024-01-01T00:00:05Z"),
            listed("p/other", "Other", "en", "2024-01-01T00:00:06Z"),
        ];
        let wanted = LocalPost::standard("en", "Sale");
        let skew = Duration::from_secs(60);
        assert!(matches!(
            match_posts(&posts, &wanted, at(1_704_067_200), skew),
            Matched::One(1)
        ));
        // Without a first-send time the old identical post cannot be excluded.
        assert!(matches!(
            match_posts(&posts, &wanted, None, skew),
            Matched::Several(c) if c.len() == 2
        ));
        let other_lang = LocalPost::standard("de", "Sale");
        assert!(matches!(
            match_posts(&posts, &other_lang, at(1_704_067_200), skew),
            Matched::Several(_)
        ));
        let missing = LocalPost::standard("en", "Nothing like it");
        assert!(matches!(
            match_posts(&posts, &missing, at(1_704_067_200), skew),
            Matched::Nothing
        ));
        let event = LocalPost::new(TopicType::Event).with_summary("Sale");
        assert!(matches!(
            match_posts(&posts, &event, at(1_704_067_200), skew),
            Matched::Nothing
        ));
    }

    #[test]
    fn an_unreadable_post_in_the_window_is_not_absence() {
        let raw = serde_json::json!({"name": "p/odd", "summary": 5, "createTime": "2024-01-01T00:00:05Z"});
        assert!(serde_json::from_value::<LocalPost>(raw.clone()).is_err());
        let mut posts = vec![Listed { raw, post: None }];
        let wanted = LocalPost::standard("en", "Sale");
        assert!(matches!(
            match_posts(&posts, &wanted, at(1_704_067_200), Duration::ZERO),
            Matched::Several(c) if c == vec!["p/odd".to_owned()]
        ));
        // Created before the first send: it cannot be ours.
        assert!(matches!(
            match_posts(&posts, &wanted, at(1_704_067_300), Duration::ZERO),
            Matched::Nothing
        ));
        // A readable exact match still wins.
        posts.push(listed("p/ok", "Sale", "en", "2024-01-01T00:00:06Z"));
        assert!(matches!(
            match_posts(&posts, &wanted, at(1_704_067_200), Duration::ZERO),
            Matched::One(1)
        ));
    }

    #[test]
    fn loose_match_is_ambiguous_not_absent() {
        let posts = vec![listed("p/1", "Spring  SALE ", "en", "2024-01-01T00:00:05Z")];
        let wanted = LocalPost::standard("en", "Spring sale");
        assert!(matches!(
            match_posts(&posts, &wanted, at(1_704_067_200), Duration::ZERO),
            Matched::Several(c) if c == vec!["p/1".to_owned()]
        ));
    }
}

//! Per-job links: a signed, expiring token that lets whoever holds it read
//! one job (its status, its event log, its SSE stream, a page that follows
//! it) without the API token, so that a browser can follow the job it
//! started without the application proxying the stream. It grants nothing
//! else: no other job, no cancel, no retry.
//!
//! The token is `EXPIRES.MAC`: MAC is HMAC-SHA256 over the job id and
//! `EXPIRES` (Unix seconds), with a key derived from the API token, so
//! every server sharing the token accepts it and changing the token voids
//! every link. Without an API token every route is open anyway; the key is
//! then random per process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use errand_core::{JobId, Timestamp};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::state::AppState;

type HmacSha256 = Hmac<Sha256>;

/// The longest a link may live, and how long it lives unless asked.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(3600);

/// The query parameter a link's token travels in (an `EventSource` cannot
/// send headers).
pub const LINK_PARAM: &str = "link";

/// Signs and checks links.
pub struct LinkKey([u8; 32]);

impl LinkKey {
    pub fn new(api_token: Option<&str>) -> Self {
        let key = match api_token {
            Some(token) => {
                let mut derive =
                    HmacSha256::new_from_slice(token.as_bytes()).expect("any key length");
                derive.update(b"errand job link v1");
                derive.finalize().into_bytes().into()
            }
            None => rand::random(),
        };
        Self(key)
    }

    fn mac(&self, job_id: &str, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("any key length");
        mac.update(job_id.as_bytes());
        mac.update(b"|");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// A token for `job_id`, good until `expires` (Unix seconds).
    pub fn issue(&self, job_id: &str, expires: u64) -> String {
        let digest = self.mac(job_id, expires).finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{expires}.{hex}")
    }

    /// Whether `token` opens `job_id` at `now` (Unix seconds).
    pub fn check(&self, job_id: &str, token: &str, now: u64) -> bool {
        let Some((expires, hex)) = token.split_once('.') else {
            return false;
        };
        let Ok(expires) = expires.parse::<u64>() else {
            return false;
        };
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        // Constant time: a forger learns nothing from how long it took.
        let signed = bytes.is_some_and(|b| self.mac(job_id, expires).verify_slice(&b).is_ok());
        signed && now < expires
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The job a GET of `path` reads, when it is one a link may open: the
/// job, its event log, its stream, its follow page.
pub fn linkable_job(path: &str) -> Option<&str> {
    if let Some(id) = path.strip_prefix("/ui/follow/") {
        return Some(id).filter(|id| !id.is_empty() && !id.contains('/'));
    }
    let rest = path
        .strip_prefix("/api/commands/jobs/")
        .or_else(|| path.strip_prefix("/commands/jobs/"))?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let readable = matches!(tail, "" | "events" | "stream");
    (readable && !id.is_empty() && !matches!(id, "batch" | "cancel")).then_some(id)
}

/// The `link` parameter of a query string, if there is one.
pub fn link_in(query: Option<&str>) -> Option<String> {
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == LINK_PARAM)
        .map(|(_, value)| value.into_owned())
}

/// `POST /api/commands/jobs/{job_id}/links?ttl_secs=`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// How long the link works, in seconds (default 3600, at most 604800:
    /// a week).
    #[param(minimum = 1, maximum = 604800)]
    pub ttl_secs: Option<f64>,
}

/// A link to one job, and the URLs it opens (paths on this server; add
/// `?link=TOKEN`, as these do).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobLink {
    pub job_id: JobId,
    /// Goes in the `link` query parameter.
    pub token: String,
    pub expires: Timestamp,
    /// The job (`GET`), as `/api/commands/jobs/{job_id}` answers.
    pub job_url: String,
    /// Its event log.
    pub events_url: String,
    /// Its SSE stream, for an `EventSource`.
    pub stream_url: String,
    /// A page that follows the job live, for a browser.
    pub page_url: String,
}

/// A signed, expiring, read-only link to one job, for a browser to follow
/// it without the API token.
#[utoipa::path(post, path = "/api/commands/jobs/{job_id}/links", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id"), LinkQuery),
    responses((status = 201, body = JobLink), (status = 404, body = errand_api::ErrorBody),
        (status = 422, body = errand_api::ErrorBody)))]
pub async fn create_link(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    Query(query): Query<LinkQuery>,
) -> Result<(StatusCode, Json<JobLink>), ApiError> {
    let ttl = match query.ttl_secs {
        None => DEFAULT_LINK_TTL,
        // Compared as sent: a hair over the week is over it, though a
        // Duration would round it to the week.
        Some(secs) => (1.0..=MAX_LINK_TTL.as_secs_f64())
            .contains(&secs)
            .then(|| Duration::from_secs_f64(secs))
            .ok_or_else(|| {
                ApiError::InvalidInput(format!(
                    "ttl_secs must be from 1 to 604800 (a week), got {secs}"
                ))
            })?,
    };
    let job = state.store.get(&JobId::from(job_id)).await?;
    let expires = now_secs() + ttl.as_secs();
    let token = state.links.issue(job.job_id.as_str(), expires);
    let query = format!("?{LINK_PARAM}={token}");
    let id = &job.job_id;
    let link = JobLink {
        job_url: format!("/api/commands/jobs/{id}{query}"),
        events_url: format!("/api/commands/jobs/{id}/events{query}"),
        stream_url: format!("/api/commands/jobs/{id}/stream{query}"),
        page_url: format!("/ui/follow/{id}{query}"),
        expires: Timestamp::from_micros(expires as i64 * 1_000_000),
        token,
        job_id: job.job_id,
    };
    Ok((StatusCode::CREATED, Json(link)))
}

/// The `link` query parameter, for the OpenAPI document: the routes a
/// link opens read it in the authentication layer, not their handlers.
pub struct LinkParam;

impl utoipa::IntoParams for LinkParam {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Type};
        vec![ParameterBuilder::new()
            .name(LINK_PARAM)
            .parameter_in(ParameterIn::Query)
            .required(utoipa::openapi::Required::False)
            .description(Some(
                "A token from `POST /api/commands/jobs/{job_id}/links`: opens this job without the API token.",
            ))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_its_job_until_it_expires_and_nothing_else() {
        let key = LinkKey::new(Some("token"));
        let token = key.issue("job-a", 1_000);
        assert!(key.check("job-a", &token, 999));
        assert!(!key.check("job-a", &token, 1_000), "expired");
        assert!(!key.check("job-b", &token, 999), "another job");
        assert!(
            !LinkKey::new(Some("other")).check("job-a", &token, 999),
            "another token"
        );
        let later = token.replacen("1000.", "2000.", 1);
        assert!(!key.check("job-a", &later, 999), "an expiry pushed back");
        for bad in ["", "1000", "x.y", "1000.zz", "1000.", "-1.00"] {
            assert!(!key.check("job-a", bad, 0), "{bad:?}");
        }
    }

    #[test]
    fn only_reads_of_one_job_are_linkable() {
        assert_eq!(linkable_job("/api/commands/jobs/abc"), Some("abc"));
        assert_eq!(linkable_job("/api/commands/jobs/abc/stream"), Some("abc"));
        assert_eq!(linkable_job("/api/commands/jobs/abc/events"), Some("abc"));
        assert_eq!(linkable_job("/commands/jobs/abc"), Some("abc"));
        assert_eq!(linkable_job("/ui/follow/abc"), Some("abc"));
        for not in [
            "/api/commands/jobs/abc/retry",
            "/api/commands/jobs/abc/links",
            "/api/commands/jobs",
            "/api/commands/jobs/",
            "/api/commands/jobs/batch",
            "/api/events",
            "/ui/jobs/abc",
            "/ui/follow/abc/x",
        ] {
            assert_eq!(linkable_job(not), None, "{not}");
        }
    }
}

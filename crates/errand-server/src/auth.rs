//! Who may use the server (bearer token or dashboard session), and which
//! requests a browser may not have been tricked into sending.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;
use crate::session::same_secret;
use crate::state::AppState;

/// Paths open without a token: liveness, and the dashboard's login page
/// with its stylesheet.
const OPEN_PATHS: [&str; 5] = [
    "/api/health",
    "/health",
    "/ui/login",
    "/ui/assets/errand.css",
    // The page a per-job link opens runs it.
    "/ui/assets/follow.js",
];

/// The dashboard's session cookie (see `session`): a signed session id,
/// never the token.
pub const COOKIE_NAME: &str = "errand_session";

/// The bearer token a request carries.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The dashboard session cookie a request carries (how browsers'
/// `EventSource` and forms authenticate).
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|header| header.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
}

/// Whether `headers` carry the configured token or a live session of it
/// (always, when no token is configured).
pub fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.config.api_token else {
        return true;
    };
    match bearer(headers) {
        Some(token) => same_secret(token.as_bytes(), expected.as_bytes()),
        None => session_cookie(headers)
            .is_some_and(|cookie| state.sessions.check(expected, cookie).is_some()),
    }
}

/// The worker protocol's paths.
pub const WORKER_PATHS: &str = "/api/worker/";

/// Whether `headers` may use the worker protocol: the worker token when
/// one is set (and only it), else the API token; never a dashboard
/// session, which is a browser's.
pub fn authorized_worker(state: &AppState, headers: &HeaderMap) -> bool {
    let config = &state.config;
    let Some(expected) = config.worker_token.as_ref().or(config.api_token.as_ref()) else {
        return true;
    };
    bearer(headers).is_some_and(|token| same_secret(token.as_bytes(), expected.as_bytes()))
}

/// The client's address, when the server knows it (not in tests that
/// call the router directly).
pub fn client_ip(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let cors = &state.config.cors_origins;
    if let Err(refused) = check_same_origin(cors, request.method(), request.headers()) {
        return refused.into_response();
    }
    let path = request.uri().path();
    if OPEN_PATHS.contains(&path) {
        return next.run(request).await;
    }
    let client = client_ip(&request);
    if let Some(wait) = client.and_then(|ip| state.sessions.guessing_too_fast(ip)) {
        return ApiError::TooManyGuesses(wait.as_secs().max(1)).into_response();
    }
    let allowed = if path.starts_with(WORKER_PATHS) {
        authorized_worker(&state, request.headers())
    } else {
        authorized(&state, request.headers())
    };
    if allowed || opened_by_link(&state, &request) {
        return next.run(request).await;
    }
    if let (Some(ip), Some(_)) = (client, bearer(request.headers())) {
        state.sessions.wrong_guess(ip);
    }
    // A person at the dashboard is sent to log in; a program gets the 401.
    let browsing =
        (path == "/" || path.starts_with("/ui")) && !request.headers().contains_key("hx-request");
    if browsing {
        let next = serde_urlencoded::to_string([("next", path)]).expect("strings encode");
        return Redirect::to(&format!("/ui/login?{next}")).into_response();
    }
    ApiError::Unauthorized.into_response()
}

/// Whether the request reads the one job its `link` parameter opens.
fn opened_by_link(state: &AppState, request: &Request) -> bool {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return false;
    }
    let Some(job_id) = crate::links::linkable_job(request.uri().path()) else {
        return false;
    };
    crate::links::link_in(request.uri().query())
        .is_some_and(|token| state.links.check(job_id, &token, crate::links::now_secs()))
}

/// Refuses a state-changing request that a page of another origin made a
/// browser send (cross-site request forgery), including a page on another
/// port of the same host, which SameSite cookies do not tell apart.
///
/// Only requests without `Authorization` are checked: a bearer token is
/// never sent by a browser on its own, and origins listed for CORS are
/// allowed. Browsers say where a request comes from in `Sec-Fetch-Site`
/// (recent ones) or `Origin`; a request with neither is not a browser's
/// cross-origin request (curl, scripts) and passes.
pub fn check_same_origin(
    cors_origins: &[String],
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || bearer(headers).is_some()
    {
        return Ok(());
    }
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    let listed = origin.is_some_and(|origin| cors_origins.iter().any(|o| o == origin));
    if listed {
        return Ok(());
    }
    let refuse = |from: &str| {
        Err(ApiError::CrossSite(format!(
            "refused a {method} sent from {from}: a page of another origin cannot act on this server (list it in cors_origins to allow it)"
        )))
    };
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin" | "none") => return Ok(()),
        Some(site) => return refuse(origin.unwrap_or(site)),
        None => {}
    }
    let Some(origin) = origin else {
        return Ok(());
    };
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        refuse(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let headers = headers(&[("cookie", "theme=dark; errand_session=abc.1.ff; x=y")]);
        assert_eq!(session_cookie(&headers), Some("abc.1.ff"));
    }

    #[test]
    fn unsafe_requests_from_another_origin_or_port_are_refused() {
        let listed = vec!["https://app.example".to_owned()];
        let post = Method::POST;
        let check =
            |pairs: &[(&'static str, &str)]| check_same_origin(&listed, &post, &headers(pairs));
        assert!(check(&[("sec-fetch-site", "same-origin")]).is_ok());
        assert!(check(&[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://localhost:8000")
        ])
        .is_err());
        assert!(check(&[("sec-fetch-site", "cross-site")]).is_err());
        assert!(check(&[
            ("origin", "http://localhost:5055"),
            ("host", "localhost:5055")
        ])
        .is_ok());
        assert!(check(&[
            ("origin", "http://localhost:8000"),
            ("host", "localhost:5055")
        ])
        .is_err());
        assert!(check(&[]).is_ok(), "curl sends neither header");
        assert!(check(&[
            ("sec-fetch-site", "cross-site"),
            ("authorization", "Bearer t")
        ])
        .is_ok());
        assert!(check(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://app.example")
        ])
        .is_ok());
        let get = check_same_origin(
            &listed,
            &Method::GET,
            &headers(&[("sec-fetch-site", "cross-site")]),
        );
        assert!(get.is_ok());
    }
}

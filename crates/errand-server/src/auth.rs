//! Bearer-token authentication (SPEC §4.3).

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Paths open without a token: liveness, and the dashboard's login page
/// with its stylesheet.
const OPEN_PATHS: [&str; 4] = [
    "/api/health",
    "/health",
    "/ui/login",
    "/ui/assets/errand.css",
];

/// The cookie the dashboard's login page sets: the token, hex-encoded (a
/// token may hold characters a cookie cannot).
pub const COOKIE_NAME: &str = "errand_token";

pub fn cookie_value(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The token a request carries: `Authorization: Bearer`, or the
/// dashboard's cookie (which is how browsers' `EventSource` sends it).
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().as_bytes().to_vec());
    bearer.or_else(|| {
        let cookies = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let hex = cookies
            .flat_map(|header| header.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))?;
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect()
    })
}

/// Whether `headers` carry the configured token (always, when none is).
pub fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    match &state.config.api_token {
        None => true,
        Some(expected) => presented(headers).is_some_and(|t| same(&t, expected.as_bytes())),
    }
}

pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if OPEN_PATHS.contains(&path) || authorized(&state, request.headers()) {
        return next.run(request).await;
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

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cookie_carries_the_token_and_bearer_wins() {
        let mut headers = axum::http::HeaderMap::new();
        let cookie = format!(
            "theme=dark; {}={}",
            super::COOKIE_NAME,
            super::cookie_value("a b;c")
        );
        headers.insert(axum::http::header::COOKIE, cookie.parse().unwrap());
        assert_eq!(super::presented(&headers), Some(b"a b;c".to_vec()));
        headers.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer other".parse().unwrap(),
        );
        assert_eq!(super::presented(&headers), Some(b"other".to_vec()));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(super::same(b"secret", b"secret"));
        assert!(!super::same(b"secret", b"secreT"));
        assert!(!super::same(b"secret", b"secret2"));
    }
}

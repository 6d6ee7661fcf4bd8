//! The login page: the bearer token, typed once, opens a session kept in
//! an HttpOnly, SameSite=Strict cookie (signed and expiring, never the
//! token: see `session`) that the dashboard's pages and SSE streams send.

use axum::extract::{Form, State};

use crate::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{page, Section, Session};
use crate::auth::{authorized, session_cookie, COOKIE_NAME};
use crate::session::{same_secret, SESSION_LENGTH};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    #[serde(default)]
    next: String,
}

#[derive(Debug, Deserialize)]
pub struct Login {
    token: String,
    #[serde(default)]
    next: String,
}

/// Only a local dashboard path, so the login page can send nobody
/// elsewhere, and nothing that cannot stand in a `Location` header (a CR
/// or LF would split it).
fn destination(next: &str) -> &str {
    let local = next.starts_with("/ui") && !next.starts_with("//");
    let plain = next.bytes().all(|b| b.is_ascii_graphic()) && !next.contains('\\');
    if local && plain {
        next
    } else {
        "/ui"
    }
}

fn form(next: &str, problem: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Log in" }
        form.panel method="post" action="/ui/login" {
            p { "This server needs its API token (" code { "ERRAND_API_TOKEN" } ")." }
            @if let Some(problem) = problem { p.error-box role="alert" { (problem) } }
            label for="token" { "Token" }
            " "
            input #token type="password" name="token" autocomplete="current-password" required autofocus;
            input type="hidden" name="next" value=(next);
            " "
            button type="submit" { "Log in" }
        }
    };
    page("Log in", Section::Jobs, Session::Open, body)
}

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Next>,
) -> Response {
    if state.config.api_token.is_none() || authorized(&state, &headers) {
        return Redirect::to(destination(&query.next)).into_response();
    }
    form(destination(&query.next), None).into_response()
}

/// `Secure` when the browser reached us over HTTPS (directly, or through
/// a proxy that says so), so the cookie never travels in clear after.
fn secure(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    if https {
        "; Secure"
    } else {
        ""
    }
}

pub async fn submit(
    State(state): State<AppState>,
    connection: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(login): Form<Login>,
) -> Response {
    let next = destination(&login.next).to_owned();
    let Some(expected) = &state.config.api_token else {
        return Redirect::to(&next).into_response();
    };
    let client = connection.map(|axum::Extension(axum::extract::ConnectInfo(a))| a.ip());
    if let Some(wait) = client.and_then(|ip| state.sessions.guessing_too_fast(ip)) {
        let page = form(
            &next,
            Some(&format!(
                "Too many wrong tokens from your address; try again in {} s.",
                wait.as_secs().max(1)
            )),
        );
        return (StatusCode::TOO_MANY_REQUESTS, page).into_response();
    }
    if !same_secret(login.token.trim().as_bytes(), expected.as_bytes()) {
        if let Some(ip) = client {
            state.sessions.wrong_guess(ip);
        }
        let page = form(&next, Some("That token is not right."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        state.sessions.issue(expected),
        SESSION_LENGTH.as_secs(),
        secure(&headers)
    );
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, next)],
    )
        .into_response()
}

/// Ends the session (it is refused from now on, not only forgotten by
/// this browser).
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let (Some(token), Some(cookie)) = (&state.config.api_token, session_cookie(&headers)) {
        state.sessions.revoke(token, cookie);
    }
    let cookie = format!(
        "{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(&headers)
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/ui/login".to_owned()),
        ],
    )
        .into_response()
}

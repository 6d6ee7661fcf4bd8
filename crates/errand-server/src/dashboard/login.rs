//! The login page: the bearer token, typed once, kept in an HttpOnly,
//! SameSite=Strict cookie that the dashboard's pages and SSE streams send.

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{page, Section, Session};
use crate::auth::{authorized, cookie_value, COOKIE_NAME};
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

/// Only a dashboard path, so the login page cannot send anyone elsewhere.
fn destination(next: &str) -> &str {
    if next.starts_with("/ui") && !next.starts_with("//") {
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

pub async fn submit(State(state): State<AppState>, Form(login): Form<Login>) -> Response {
    let next = destination(&login.next).to_owned();
    let Some(expected) = &state.config.api_token else {
        return Redirect::to(&next).into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {}", login.token.trim())
            .parse()
            .unwrap_or(header::HeaderValue::from_static("")),
    );
    if !authorized(&state, &headers) {
        let page = form(&next, Some("That token is not right."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000",
        cookie_value(expected)
    );
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, next)],
    )
        .into_response()
}

pub async fn logout() -> Response {
    let cookie = format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/ui/login".to_owned()),
        ],
    )
        .into_response()
}

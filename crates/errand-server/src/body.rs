//! The JSON body extractor: clear 400/413 errors in errand's error format,
//! and a nesting limit so a hostile body cannot exhaust the stack.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON request body of type `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        check_content_type(req.headers())?;
        let limit = state.config.body_limit;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        // Every request body is an object. serde would also fill a struct
        // from an array of its fields in order, which no client means.
        if !value.is_object() {
            return Err(ApiError::BadRequest(format!(
                "the body must be a JSON object, got {}",
                kind_of(&value)
            )));
        }
        let depth = depth(&value);
        if depth > state.config.max_json_depth {
            return Err(ApiError::BadRequest(format!(
                "the body nests {depth} levels deep; at most {} are allowed",
                state.config.max_json_depth
            )));
        }
        // The path names the field that does not fit (`slots`,
        // `outcomes[3].attempt`), which serde's own message does not.
        serde_path_to_error::deserialize(value)
            .map(JsonBody)
            .map_err(|e| match e.path().to_string().as_str() {
                "." => ApiError::BadRequest(format!(
                    "the body does not fit the request: {}",
                    e.inner()
                )),
                path => ApiError::BadRequest(format!(
                    "the body does not fit the request at {path}: {}",
                    e.inner()
                )),
            })
    }
}

/// A JSON route takes JSON: a form or `text/plain` body, which a page on
/// another site can send without asking (no CORS preflight), is refused.
/// No Content-Type at all is allowed, for `curl -d` users; browsers
/// always send one with a body.
fn check_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    // `curl -d` sends application/x-www-form-urlencoded, a type any page
    // may post cross-site, so it is refused too, with a hint for curl.
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "the body must be JSON (Content-Type: application/json), not {essence:?}; with curl, add -H 'Content-Type: application/json'"
    )))
}

/// Nesting depth of a JSON value: a scalar is 1.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

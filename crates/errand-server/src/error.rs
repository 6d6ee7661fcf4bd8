//! Every error the API returns, mapped to its status and stable code in
//! one place. Internal details are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use errand_api::{ErrorBody, ErrorDetail};
use errand_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("no job with id {0}")]
    JobNotFound(String),
    #[error("no schedule named {0:?}")]
    ScheduleNotFound(String),
    #[error("command {0} has no limits")]
    LimitNotFound(String),
    #[error("no route {0}")]
    RouteNotFound(String),
    #[error("{0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("{0}")]
    IllegalTransition(String),
    #[error("{0}")]
    IdempotencyConflict(String),
    #[error("{0}")]
    CrossSite(String),
    #[error("too many wrong tokens from this client; try again in {0} s")]
    TooManyGuesses(u64),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnknownCommand(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    TooManyStreams(String),
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::JobNotFound(_)
            | ApiError::ScheduleNotFound(_)
            | ApiError::LimitNotFound(_)
            | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::IllegalTransition(_) | ApiError::IdempotencyConflict(_) => {
                StatusCode::CONFLICT
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::CrossSite(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyGuesses(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnknownCommand(_) | ApiError::InvalidInput(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::JobNotFound(_) => "job_not_found",
            ApiError::ScheduleNotFound(_) => "schedule_not_found",
            ApiError::LimitNotFound(_) => "limit_not_found",
            ApiError::RouteNotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::IllegalTransition(_) => "illegal_transition",
            ApiError::IdempotencyConflict(_) => "idempotency_conflict",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::CrossSite(_) => "cross_site_request",
            ApiError::TooManyGuesses(_) => "too_many_guesses",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnknownCommand(_) => "unknown_command",
            ApiError::InvalidInput(_) => "invalid_input",
            ApiError::TooManyStreams(_) => "too_many_streams",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(id) => ApiError::JobNotFound(id.into_string()),
            StoreError::ScheduleNotFound(name) => ApiError::ScheduleNotFound(name),
            StoreError::LimitNotFound(command) => ApiError::LimitNotFound(command),
            StoreError::Conflict { .. } | StoreError::LeaseLost { .. } => {
                ApiError::IllegalTransition(err.to_string())
            }
            StoreError::Invalid(msg) => ApiError::BadRequest(msg),
            StoreError::Unavailable(msg) => ApiError::StoreUnavailable(msg),
            StoreError::Backend(msg) => ApiError::Internal(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error; see the server log".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message,
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"errand\""),
                );
            }
            ApiError::TooManyGuesses(secs) => {
                headers.insert(axum::http::header::RETRY_AFTER, (*secs).into());
            }
            _ => {}
        }
        response
    }
}

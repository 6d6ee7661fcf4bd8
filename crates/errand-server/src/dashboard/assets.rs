//! The dashboard's static files, compiled into the binary: no CDN, the
//! machine may be offline. htmx and its SSE extension are vendored from
//! their npm packages with their licences (0BSD) beside them.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &str)] = &[
    (
        "errand.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/errand.css"),
    ),
    (
        "errand.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/errand.js"),
    ),
    (
        "follow.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/follow.js"),
    ),
    (
        "htmx-2.0.11.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/vendor/htmx-2.0.11.min.js"),
    ),
    (
        "htmx-ext-sse-2.2.4.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/vendor/htmx-ext-sse-2.2.4.min.js"),
    ),
];

pub async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Names carry versions (the stylesheet is small): an hour.
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "errand", description = "A durable command queue for long-running work behind web APIs. \
        Every route is also served without the /api prefix."),
    paths(
        crate::jobs::submit, crate::jobs::submit_batch, crate::jobs::get_job, crate::jobs::list_jobs,
        crate::jobs::cancel_job, crate::jobs::retry_job, crate::jobs::job_events,
        crate::sse::job_stream, crate::sse::global_feed,
        crate::info::commands, crate::info::stats, crate::info::workers, crate::info::registry_debug,
        crate::info::health, crate::info::ready, crate::metrics::render, openapi_json,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "errand", description = "A durable command queue for long-running work behind web APIs. \
        Every route is also served without the /api prefix."),
    paths(
        crate::jobs::submit, crate::jobs::submit_batch, crate::jobs::get_job, crate::jobs::list_jobs,
        crate::jobs::cancel_job, crate::jobs::cancel_many, crate::jobs::retry_job, crate::jobs::job_events,
        crate::links::create_link,
        crate::sse::job_stream, crate::sse::global_feed,
        crate::info::commands, crate::info::stats, crate::info::workers, crate::info::registry_debug,
        crate::info::health, crate::info::ready, crate::metrics::render, openapi_json,
        crate::queues::list_queues, crate::queues::pause, crate::queues::resume,
        crate::limits::list_limits, crate::limits::put, crate::limits::delete,
        crate::schedules::list_schedules, crate::schedules::get_schedule, crate::schedules::put,
        crate::schedules::delete, crate::schedules::pause, crate::schedules::resume,
        crate::protocol::register, crate::protocol::claim, crate::protocol::heartbeat,
        crate::protocol::updates, crate::protocol::finish, crate::protocol::deregister,
    ),
    modifiers(&BearerAuth),
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

/// This document, as this server answers: with bearer auth required
/// where it is (only when a token is configured, and never for health),
/// and with the errors every route can give.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
) -> Result<Json<serde_json::Value>, crate::ApiError> {
    let config = &state.config;
    let doc = document(
        config.api_token.is_some(),
        config.worker_token.is_some() || config.api_token.is_some(),
    );
    let mut doc = serde_json::to_value(doc).expect("the document serializes");
    let commands = state.store.commands().await?;
    describe_submits(&mut doc, &commands);
    describe_claims(&mut doc);
    describe_schedules(&mut doc);
    describe_events(&mut doc);
    describe_webhooks(&mut doc, &config.webhooks);
    Ok(Json(doc))
}

/// A claim's `limits` give the room of commands it names: with limits, it
/// must name its `commands` (a claim of any command could not keep them).
fn describe_claims(doc: &mut serde_json::Value) {
    doc["components"]["schemas"]["ClaimRequest"]["anyOf"] = serde_json::json!([
        {"not": {"required": ["limits"]}},
        {"properties": {"limits": {"maxProperties": 0}}},
        {"required": ["commands"], "properties": {"commands": {"type": "array"}}},
    ]);
}

/// An event's `data` has one closed form per change, decided in the core.
fn describe_events(doc: &mut serde_json::Value) {
    let schemas = &mut doc["components"]["schemas"];
    schemas["ChangeData"] = errand_core::change::data_schema();
    schemas["JobEvent"]["properties"]["data"] =
        serde_json::json!({"$ref": "#/components/schemas/ChangeData"});
}

/// A submit's webhook as this server takes it: only null without a
/// webhook secret (a submit naming one is refused), else a URL on the
/// allow-list, as a pattern.
fn describe_webhooks(doc: &mut serde_json::Value, config: &crate::webhooks::WebhookConfig) {
    let options = &mut doc["components"]["schemas"]["SubmitOptions"]["properties"];
    let Some(options) = options.as_object_mut() else {
        return;
    };
    if !config.enabled() {
        options.insert(
            "webhook".into(),
            serde_json::json!({"type": "null", "description": "Webhooks are off on this server (it has no webhook secret)."}),
        );
        return;
    }
    let webhook = &mut doc["components"]["schemas"]["Webhook"]["properties"]["url"];
    webhook["pattern"] = serde_json::Value::String(config.allow.url_pattern());
}

/// A schedule's job is a submit whose options leave `run_at` and
/// `idempotency_key` out (null at most): each tick gives its own.
fn describe_schedules(doc: &mut serde_json::Value) {
    doc["components"]["schemas"]["ScheduleRequest"]["properties"]["job"] = serde_json::json!({
        "allOf": [
            {"$ref": "#/components/schemas/SubmitRequest"},
            {"properties": {"options": {"anyOf": [
                {"type": "null"},
                {"properties": {
                    "run_at": {"type": "null"},
                    "idempotency_key": {"type": "null"},
                }},
            ]}}},
        ],
        "description": "The job each tick submits, as a submit takes it, without run_at or idempotency_key.",
    });
}

/// Replaces the generic submit body (any command, any object as input)
/// with what this server accepts now: one branch per registered command,
/// its input held to the command's own JSON Schema, so that a client
/// generated from the document (or a fuzzer) knows exactly which submits
/// succeed. Each command may be named in full (`app.name`, no `app`) or by
/// name with its `app`.
fn describe_submits(doc: &mut serde_json::Value, commands: &[errand_store::CommandInfo]) {
    use serde_json::{json, Value};
    let schemas = &mut doc["components"]["schemas"];
    let generic = schemas["SubmitRequest"].take();
    let properties = &generic["properties"];
    let (context, tags, options) = (
        json!({"type": ["object", "null"]}),
        properties["tags"].clone(),
        properties["options"].clone(),
    );
    let mut branches = Vec::new();
    for command in commands {
        let prefix = command.full_name();
        let own = hoist_definitions(schemas, &prefix, command.input_schema.clone());
        // Whatever the command's schema says, a job's input is an object.
        let input = json!({"allOf": [{"type": "object"}, own]});
        let branch = |name: Value, app: Value, required: &[&str]| {
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": required,
                "properties": {
                    "command": name, "app": app, "input": input,
                    "context": context, "tags": tags, "options": options,
                },
            })
        };
        branches.push(branch(
            json!({"const": prefix}),
            json!({"type": "null"}),
            &["command", "input"],
        ));
        branches.push(branch(
            json!({"const": command.name}),
            json!({"const": command.app}),
            &["command", "app", "input"],
        ));
    }
    let mut submit = if branches.is_empty() {
        // No worker has registered a command: no submit can succeed.
        json!({"not": {}})
    } else {
        json!({"anyOf": branches})
    };
    submit["description"] = json!(
        "A registered command (`app.name`, or `name` with `app`), its input per the command's schema, and options."
    );
    schemas["SubmitRequest"] = submit;
    // run_at and delay_secs together are refused.
    let options = &mut schemas["SubmitOptions"];
    options["not"] = json!({
        "required": ["run_at", "delay_secs"],
        "properties": {"run_at": {"type": "string"}, "delay_secs": {"type": "number"}},
    });
}

/// A command's schema with its `$defs` moved into the document's
/// components (as `app.name.Def`) and its references pointed there: in
/// the document, `#/$defs/...` would name the document's root.
fn hoist_definitions(
    schemas: &mut serde_json::Value,
    prefix: &str,
    mut schema: serde_json::Value,
) -> serde_json::Value {
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        if let Some(serde_json::Value::Object(defs)) = object.remove("$defs") {
            for (name, mut def) in defs {
                rewrite_refs(&mut def, prefix);
                schemas[format!("{prefix}.{name}")] = def;
            }
        }
    }
    rewrite_refs(&mut schema, prefix);
    schema
}

fn rewrite_refs(value: &mut serde_json::Value, prefix: &str) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, inner) in object.iter_mut() {
                match (key.as_str(), inner) {
                    ("$ref", serde_json::Value::String(target)) => {
                        if let Some(name) = target.strip_prefix("#/$defs/") {
                            *target = format!("#/components/schemas/{prefix}.{name}");
                        }
                    }
                    (_, inner) => rewrite_refs(inner, prefix),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                rewrite_refs(item, prefix);
            }
        }
        _ => {}
    }
}

/// The document for a server with or without a token for its API
/// (`api_token`) and for its worker protocol (`worker_token`: its own, or
/// the API's).
pub fn document(api_token: bool, worker_token: bool) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::HttpMethod;
    let mut doc = ApiDoc::openapi();
    let doc_has_token = api_token || worker_token;
    if doc_has_token {
        doc.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    } else if let Some(components) = doc.components.as_mut() {
        components.security_schemes.clear();
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let open = path == "/api/health";
        let with_token = if path.starts_with(crate::auth::WORKER_PATHS) {
            worker_token
        } else {
            api_token
        };
        for (method, operation) in [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
        ] {
            let Some(operation) = operation else { continue };
            if (open || !with_token) && doc_has_token {
                // Health answers without a token, and so does the API when
                // only the worker protocol has one.
                operation.security = Some(vec![SecurityRequirement::default()]);
            }
            let has_input = operation.parameters.as_ref().is_some_and(|p| !p.is_empty())
                || operation.request_body.is_some();
            let mut add = |status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error_response(description));
            };
            if has_input {
                add("400", "A parameter or the body is malformed");
            }
            let with_token = with_token && !open;
            if with_token {
                add("401", "No valid bearer token (or dashboard session)");
                add(
                    "429",
                    "Too many wrong tokens from this client; see Retry-After",
                );
            }
            if method != HttpMethod::Get {
                add(
                    "403",
                    "Sent by a page of another origin (cross-site request)",
                );
            }
            if operation.request_body.is_some() {
                add("413", "The body is larger than the server's body_limit");
                add("415", "The body's Content-Type is not JSON");
            }
            if path != "/api/health" && path != "/api/openapi.json" && path != "/metrics" {
                add("503", "The store is unavailable");
            }
        }
    }
    doc
}

fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// The repeatable `tag` query parameter of the job list and the global
/// feed (`tag=a&tag=b`: jobs carrying both). Written out here because a
/// form decoder reads one value per name, so the routes read it from the
/// raw query and their query structs leave it out. Its schema is one tag:
/// each occurrence is one.
pub struct TagParam;

impl utoipa::IntoParams for TagParam {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::PartialSchema;
        vec![ParameterBuilder::new()
            .name("tag")
            .parameter_in(ParameterIn::Query)
            .required(utoipa::openapi::Required::False)
            .description(Some(
                "Jobs carrying this tag; repeat it (`tag=a&tag=b`) for jobs carrying all of them.",
            ))
            .schema(Some(errand_core::labels::TagSchema::schema()))
            .build()]
    }
}

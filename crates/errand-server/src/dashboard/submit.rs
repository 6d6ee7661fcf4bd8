//! The submit form: pick a command, fill in a form generated from its
//! input JSON Schema, and get the API's own validation, each message next
//! to the field it names.

use std::collections::HashMap;

use axum::extract::{Form, State};

use crate::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use errand_api::{SubmitOptions, SubmitRequest};
use errand_store::{CommandDefaults, CommandInfo};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::layout::{page, prose, Section, Session};
use crate::error::ApiError;
use crate::jobs::build_job;
use crate::state::AppState;

/// Form fields for the input are named `input.FIELD`; an input without
/// declared properties is one JSON text area, `input_json`.
const FIELD: &str = "input.";
const RAW: &str = "input_json";

#[derive(Debug, Default, Deserialize)]
pub struct Chosen {
    #[serde(default)]
    command: String,
}

pub async fn show(State(state): State<AppState>, Query(chosen): Query<Chosen>) -> Response {
    let commands = match state.store.commands().await {
        Ok(commands) => commands,
        Err(err) => return super::jobs::trouble(&err),
    };
    render(
        Session::of(&state),
        &commands,
        &chosen.command,
        &HashMap::new(),
        &Problems::default(),
        StatusCode::OK,
    )
}

/// What was wrong, by field (`None`: about the whole submit).
#[derive(Default)]
struct Problems(HashMap<Option<String>, String>);

fn full_name(command: &CommandInfo) -> String {
    command.full_name()
}

fn render(
    session: Session,
    commands: &[CommandInfo],
    chosen: &str,
    values: &HashMap<String, String>,
    problems: &Problems,
    status: StatusCode,
) -> Response {
    let mut names: Vec<String> = commands.iter().map(full_name).collect();
    names.sort();
    names.dedup();
    let command = commands.iter().find(|c| full_name(c) == chosen);
    let body = html! {
        h1 { "Submit a job" }
        form.filters method="get" action="/ui/submit" {
            label {
                "Command"
                select name="command" onchange="this.form.submit()" {
                    option value="" { "choose…" }
                    @for name in &names { option value=(name) selected[name == chosen] { (name) } }
                }
            }
            noscript { button type="submit" { "Choose" } }
        }
        @if let Some(command) = command {
            form.panel method="post" action="/ui/submit" {
                @if let Some(description) = &command.description { p.muted { (prose(description)) } }
                @if let Some(problem) = problems.0.get(&None) { p.error-box role="alert" { (problem) } }
                input type="hidden" name="command" value=(chosen);
                (fields(&command.input_schema, values, problems))
                (option_fields(&command.defaults, values, problems))
                div.actions { button type="submit" { "Submit" } }
            }
        }
    };
    (status, page("Submit", Section::Submit, session, body)).into_response()
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .filter(|p| !p.is_empty())
}

fn fields(schema: &Value, values: &HashMap<String, String>, problems: &Problems) -> Markup {
    let Some(properties) = properties(schema) else {
        let problem = problems.0.get(&Some(String::new()));
        return html! {
            label for="input_json" { "Input (JSON)" }
            textarea #input_json name=(RAW) rows="8" aria-invalid=[problem.map(|_| "true")] {
                (values.get(RAW).map_or("{}", String::as_str))
            }
            @if let Some(problem) = problem { p.error-box role="alert" { (problem) } }
        };
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    html! {
        dl.fields {
            @for (name, property) in properties {
                @let id = format!("field-{name}");
                @let key = format!("{FIELD}{name}");
                @let is_required = required.contains(&name.as_str());
                @let problem = problems.0.get(&Some(name.clone()));
                @let default = property.get("default").map(|d| match d { Value::String(s) => s.clone(), other => other.to_string() });
                @let value = values.get(&key).cloned().or(default).unwrap_or_default();
                dt { label for=(id) { (name) @if is_required { " *" } } }
                dd {
                    (input(&id, &key, property, &value, is_required, problem.is_some()))
                    @if let Some(description) = property.get("description").and_then(Value::as_str) {
                        br; small.muted { (prose(description)) }
                    }
                    @if let Some(problem) = problem { p.error-box role="alert" { (problem) } }
                }
            }
        }
    }
}

fn input(
    id: &str,
    key: &str,
    property: &Value,
    value: &str,
    required: bool,
    invalid: bool,
) -> Markup {
    let invalid = invalid.then_some("true");
    if let Some(choices) = property.get("enum").and_then(Value::as_array) {
        return html! {
            select #(id) name=(key) required[required] aria-invalid=[invalid] {
                @if !required { option value="" { "—" } }
                @for choice in choices {
                    @let text = match choice { Value::String(s) => s.clone(), other => other.to_string() };
                    option value=(text) selected[text == value] { (text) }
                }
            }
        };
    }
    match property.get("type").and_then(Value::as_str) {
        Some("boolean") => html! {
            input #(id) type="checkbox" name=(key) value="true" checked[value == "true"] aria-invalid=[invalid];
        },
        Some(kind @ ("integer" | "number")) => html! {
            input #(id) type="number" name=(key) value=(value) step=(if kind == "integer" { "1" } else { "any" })
                required[required] aria-invalid=[invalid];
        },
        Some("string") => html! {
            input #(id) type="text" name=(key) value=(value) required[required] aria-invalid=[invalid];
        },
        _ => html! {
            textarea #(id) name=(key) rows="4" required[required] aria-invalid=[invalid]
                placeholder="JSON" { (value) }
        },
    }
}

/// The input as the schema's types say, or the fields that cannot be read.
fn read_input(schema: &Value, form: &HashMap<String, String>) -> Result<Value, Problems> {
    let Some(properties) = properties(schema) else {
        let text = form.get(RAW).map_or("{}", String::as_str);
        return serde_json::from_str(text).map_err(|e| {
            Problems(
                [(Some(String::new()), format!("not JSON: {e}"))]
                    .into_iter()
                    .collect(),
            )
        });
    };
    let mut input = Map::new();
    let mut problems = Problems::default();
    for (name, property) in properties {
        let kind = property.get("type").and_then(Value::as_str);
        let text = form.get(&format!("{FIELD}{name}")).map(|t| t.trim());
        let value = match (kind, text) {
            (Some("boolean"), text) => Some(Value::Bool(text == Some("true"))),
            (_, None | Some("")) => None,
            (Some("string"), Some(text)) => Some(Value::String(text.to_owned())),
            (Some("integer"), Some(text)) => match text.parse::<i64>() {
                Ok(n) => Some(Value::from(n)),
                Err(_) => {
                    problems.0.insert(
                        Some(name.clone()),
                        format!("{text:?} is not a whole number"),
                    );
                    None
                }
            },
            (Some("number"), Some(text)) => match text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Some(n) => Some(Value::Number(n)),
                None => {
                    problems
                        .0
                        .insert(Some(name.clone()), format!("{text:?} is not a number"));
                    None
                }
            },
            // An enum of strings, or anything else: JSON if it parses.
            (_, Some(text)) => {
                Some(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
            }
        };
        if let Some(value) = value {
            input.insert(name.clone(), value);
        }
    }
    if problems.0.is_empty() {
        Ok(Value::Object(input))
    } else {
        Err(problems)
    }
}

/// The submit options the form offers, as form field, label,
/// and what the API names the option in its messages.
const OPTIONS: [(&str, &str, &str); 4] = [
    ("option.delay_secs", "Delay (seconds)", "delay_secs"),
    ("option.priority", "Priority", "priority"),
    ("option.queue", "Queue", "queue"),
    ("option.max_attempts", "Max attempts", "max_attempts"),
];

fn option_fields(
    defaults: &CommandDefaults,
    values: &HashMap<String, String>,
    problems: &Problems,
) -> Markup {
    // Empty fields keep the command's defaults: shown as placeholders.
    let default_of = |name: &str| match name {
        "option.delay_secs" => "0".to_owned(),
        "option.priority" => defaults.priority.to_string(),
        "option.queue" => defaults.queue.clone(),
        _ => defaults.retry.max_attempts.to_string(),
    };
    let opened = OPTIONS
        .iter()
        .any(|(name, _, _)| values.get(*name).is_some_and(|v| !v.trim().is_empty()));
    html! {
        details.options open[opened] {
            summary { "Options" }
            dl.fields {
                @for (name, label, _) in OPTIONS {
                    @let id = name.replace('.', "-");
                    @let problem = problems.0.get(&Some(name.to_owned()));
                    dt { label for=(id) { (label) } }
                    dd {
                        input #(id) name=(name) value=[values.get(name)] placeholder=(default_of(name))
                            inputmode=[(name != "option.queue").then_some("decimal")]
                            aria-invalid=[problem.map(|_| "true")];
                        @if let Some(problem) = problem { p.error-box role="alert" { (problem) } }
                    }
                }
            }
        }
    }
}

/// The options typed in the form; empty fields are left to the command's
/// defaults.
fn read_options(form: &HashMap<String, String>) -> Result<Option<SubmitOptions>, Problems> {
    let mut problems = Problems::default();
    let mut options = SubmitOptions::default();
    let mut given = false;
    for (name, _, _) in OPTIONS {
        let Some(text) = form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
            continue;
        };
        given = true;
        let bad = |what: &str| format!("{text:?} is not {what}");
        let outcome = match name {
            "option.delay_secs" => text
                .parse::<f64>()
                .map(|v| options.delay_secs = Some(v))
                .map_err(|_| bad("a number of seconds")),
            "option.priority" => text
                .parse::<i32>()
                .map(|v| options.priority = Some(v))
                .map_err(|_| bad("a whole number")),
            "option.max_attempts" => text
                .parse::<u32>()
                .map(|v| options.max_attempts = Some(v))
                .map_err(|_| bad("a whole number of at least 1")),
            _ => {
                options.queue = Some(text.to_owned());
                Ok(())
            }
        };
        if let Err(message) = outcome {
            problems.0.insert(Some(name.to_owned()), message);
        }
    }
    match (problems.0.is_empty(), given) {
        (false, _) => Err(problems),
        (true, false) => Ok(None),
        (true, true) => Ok(Some(options)),
    }
}

/// `input/secs: "soon" is not of type "number"` belongs next to `secs`.
fn place(message: &str) -> Problems {
    // `options.delay_secs must be ≥ 0`, `options: max_attempts must be…`
    let unprefixed = ["options.", "options: "]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .unwrap_or(message);
    let option = OPTIONS
        .iter()
        .find(|(_, _, api)| unprefixed.starts_with(api))
        .map(|(name, _, _)| (*name).to_owned());
    let field = option.or_else(|| {
        message
            .strip_prefix("input/")
            .and_then(|rest| rest.split(['/', ':']).next())
            .map(str::to_owned)
    });
    let field = field.or_else(|| {
        // A missing required field: `input: "text" is a required property`.
        let quoted = message.strip_prefix("input: \"")?;
        quoted.split('"').next().map(str::to_owned)
    });
    Problems([(field, message.to_owned())].into_iter().collect())
}

pub async fn submit(
    State(state): State<AppState>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let chosen = form.get("command").cloned().unwrap_or_default();
    let commands = match state.store.commands().await {
        Ok(commands) => commands,
        Err(err) => return super::jobs::trouble(&err),
    };
    let Some(command) = commands.iter().find(|c| full_name(c) == chosen) else {
        let problems = Problems(
            [(None, format!("unknown command {chosen:?}"))]
                .into_iter()
                .collect(),
        );
        return render(
            Session::of(&state),
            &commands,
            &chosen,
            &form,
            &problems,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    let read = read_input(&command.input_schema, &form).and_then(|input| {
        let options = read_options(&form)?;
        Ok((input, options))
    });
    let (input, options) = match read {
        Ok(read) => read,
        Err(problems) => {
            return render(
                Session::of(&state),
                &commands,
                &chosen,
                &form,
                &problems,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    };
    let request = SubmitRequest {
        tags: Vec::new(),
        command: chosen.clone(),
        app: None,
        input,
        context: None,
        options,
    };
    let refused = |message: String| {
        render(
            Session::of(&state),
            &commands,
            &chosen,
            &form,
            &place(&message),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let job = match build_job(&state, request).await {
        Ok(job) => job,
        Err(ApiError::InvalidInput(message) | ApiError::UnknownCommand(message)) => {
            return refused(message)
        }
        Err(err) => return err.into_response(),
    };
    match state.store.submit(job).await {
        Ok(receipt) => Redirect::to(&format!("/ui/jobs/{}", receipt.job_id)).into_response(),
        Err(errand_store::StoreError::Invalid(message)) => refused(message),
        Err(err) => super::jobs::trouble(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fields_are_read_by_their_schema_types() {
        let schema = json!({"type": "object", "properties": {
            "secs": {"type": "number"}, "steps": {"type": "integer"}, "loud": {"type": "boolean"},
            "name": {"type": "string"}, "tags": {"type": "array"}, "left": {"type": "string"}
        }});
        let input = read_input(
            &schema,
            &form(&[
                ("input.secs", "1.5"),
                ("input.steps", "3"),
                ("input.loud", "true"),
                ("input.name", " x "),
                ("input.tags", "[\"a\"]"),
                ("input.left", ""),
            ]),
        )
        .map_err(|p| p.0)
        .unwrap();
        assert_eq!(
            input,
            json!({"secs": 1.5, "steps": 3, "loud": true, "name": "x", "tags": ["a"]})
        );
        let problems = read_input(&schema, &form(&[("input.steps", "two")])).unwrap_err();
        assert!(problems.0[&Some("steps".into())].contains("whole number"));
    }

    #[test]
    fn the_api_message_lands_next_to_its_field() {
        assert!(place("input/secs: \"soon\" is not of type \"number\"")
            .0
            .contains_key(&Some("secs".into())));
        assert!(place("input: \"times\" is a required property")
            .0
            .contains_key(&Some("times".into())));
        assert!(place("unknown command x.y").0.contains_key(&None));
    }
}

//! What a job can be found by: its tags and the plain values of its
//! context. Each is a label, a (key, value) pair of strings that the
//! stores index when the job is submitted, so that "the podcast jobs of
//! notebook 42" is an index lookup however many jobs the table holds.
//!
//! A tag `urgent` is the label (`tag`, `urgent`); a context
//! `{"notebook_id": 42}` gives (`context.notebook_id`, `42`). The key is
//! the list API's query parameter and the value its text, so a filter
//! reads the same in a URL, in the CLI and in the store.

use serde_json::Value;

/// The most tags one job may carry.
pub const MAX_TAGS: usize = 20;
/// The longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 100;
/// The longest context value that is indexed, in characters. A longer
/// value is kept in the context but cannot be filtered on, and a filter
/// asking for one is refused rather than answered with nothing.
pub const MAX_LABEL_VALUE_CHARS: usize = 256;
/// The label key of a job's tags.
pub const TAG_KEY: &str = "tag";
/// The prefix of a context key's label (`context.notebook_id`).
pub const CONTEXT_PREFIX: &str = "context.";

/// A tag as the OpenAPI document describes it (the value is a string).
#[cfg(feature = "openapi")]
pub struct TagSchema;

/// One thing a job can be found by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub key: String,
    pub value: String,
}

impl Label {
    pub fn tag(tag: impl Into<String>) -> Self {
        Self {
            key: TAG_KEY.to_owned(),
            value: tag.into(),
        }
    }

    /// The label of a context key's value, as a filter names it.
    pub fn context(key: &str, value: impl Into<String>) -> Self {
        Self {
            key: format!("{CONTEXT_PREFIX}{key}"),
            value: value.into(),
        }
    }
}

/// Checks a job's tags: at most [`MAX_TAGS`], each 1 to [`MAX_TAG_CHARS`]
/// characters with no control characters. Duplicates are allowed (and
/// kept once by [`normalize_tags`]).
pub fn validate_tags(tags: &[String]) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "a job has at most {MAX_TAGS} tags, got {}",
            tags.len()
        ));
    }
    for tag in tags {
        validate_tag(tag)?;
    }
    Ok(())
}

/// Checks one tag (also a filter's): see [`validate_tags`].
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let chars = tag.chars().count();
    if chars == 0 || chars > MAX_TAG_CHARS {
        return Err(format!(
            "a tag is 1 to {MAX_TAG_CHARS} characters, got {chars}: {tag:?}"
        ));
    }
    if tag.chars().any(char::is_control) {
        return Err(format!("a tag has no control characters: {tag:?}"));
    }
    Ok(())
}

/// The tags as stored: each once, in the order first given.
pub fn normalize_tags(tags: Vec<String>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !kept.contains(&tag) {
            kept.push(tag);
        }
    }
    kept
}

/// The text a context value is indexed and filtered by: a string as it
/// is, a number as JSON writes it, `true` or `false`. Objects, arrays,
/// null and values longer than [`MAX_LABEL_VALUE_CHARS`] are not indexed.
pub fn context_value_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null | Value::Array(_) | Value::Object(_) => return None,
    };
    (text.chars().count() <= MAX_LABEL_VALUE_CHARS).then_some(text)
}

/// Checks a filter's context key and value before it reaches a store.
pub fn validate_context_filter(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a context filter names a key: context.KEY=VALUE".into());
    }
    let chars = value.chars().count();
    if chars > MAX_LABEL_VALUE_CHARS {
        return Err(format!(
            "context.{key}: only values of at most {MAX_LABEL_VALUE_CHARS} characters are indexed, got {chars}"
        ));
    }
    Ok(())
}

/// Every label of a job, each once, sorted: its tags, then each top-level
/// key of its context whose value is indexed (see [`context_value_text`]).
pub fn job_labels(tags: &[String], context: Option<&Value>) -> Vec<Label> {
    let mut labels: Vec<Label> = tags.iter().map(|t| Label::tag(t.as_str())).collect();
    if let Some(Value::Object(map)) = context {
        labels.extend(
            map.iter()
                .filter_map(|(key, value)| Some(Label::context(key, context_value_text(value)?))),
        );
    }
    labels.sort();
    labels.dedup();
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn tags_and_plain_context_values_are_labels() {
        let context = json!({
            "notebook_id": 42,
            "user": "ada",
            "draft": false,
            "ratio": 0.5,
            "nested": {"a": 1},
            "list": [1, 2],
            "nothing": null,
        });
        let labels = job_labels(&["podcast".into(), "urgent".into()], Some(&context));
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|l| (l.key.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("context.draft", "false"),
                ("context.notebook_id", "42"),
                ("context.ratio", "0.5"),
                ("context.user", "ada"),
                ("tag", "podcast"),
                ("tag", "urgent"),
            ]
        );
    }

    #[test]
    fn a_number_and_its_string_are_the_same_label() {
        assert_eq!(
            job_labels(&[], Some(&json!({"n": 42}))),
            job_labels(&[], Some(&json!({"n": "42"})))
        );
    }

    #[test]
    fn long_values_are_not_indexed_and_cannot_be_asked_for() {
        let long = "x".repeat(MAX_LABEL_VALUE_CHARS + 1);
        assert!(job_labels(&[], Some(&json!({ "k": long }))).is_empty());
        assert!(validate_context_filter("k", &long).is_err());
        let longest = "x".repeat(MAX_LABEL_VALUE_CHARS);
        assert_eq!(job_labels(&[], Some(&json!({ "k": longest }))).len(), 1);
        assert!(validate_context_filter("k", &longest).is_ok());
    }

    #[test]
    fn tags_are_checked() {
        assert!(validate_tags(&["ok".into(), "also ok".into()]).is_ok());
        assert!(validate_tags(&["".into()]).is_err());
        assert!(validate_tags(&["a\nb".into()]).is_err());
        assert!(validate_tags(&["x".repeat(MAX_TAG_CHARS + 1)]).is_err());
        let too_many: Vec<String> = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        assert!(validate_tags(&too_many).is_err());
        assert_eq!(
            normalize_tags(vec!["b".into(), "a".into(), "b".into()]),
            ["b", "a"]
        );
    }

    proptest! {
        /// Each label is unique, and every tag given and every indexed
        /// context value is found among them.
        #[test]
        fn labels_cover_what_a_filter_can_ask(
            tags in proptest::collection::vec("[a-z]{1,4}", 0..6),
            context in proptest::collection::btree_map("[a-z]{1,3}", 0i64..100, 0..6),
        ) {
            let context_json = serde_json::to_value(&context).unwrap();
            let labels = job_labels(&tags, Some(&context_json));
            let mut unique = labels.clone();
            unique.dedup();
            prop_assert_eq!(&unique, &labels);
            for tag in &tags {
                prop_assert!(labels.contains(&Label::tag(tag.as_str())));
            }
            for (key, value) in &context {
                prop_assert!(labels.contains(&Label::context(key, value.to_string())));
            }
            prop_assert_eq!(labels.len(), {
                let mut t = tags.clone(); t.sort(); t.dedup(); t.len()
            } + context.len());
        }
    }
}

//! OpenAPI schemas for the types serde writes by hand.

use std::borrow::Cow;

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::{JobId, Timestamp};

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339 UTC time, microsecond precision"))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}

impl utoipa::PartialSchema for JobId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Opaque, unique, time-ordered job id"))
            .examples([serde_json::json!("019a2b3c4d5e7f00a1b2c3d4e5f60718")])
            .into()
    }
}

impl utoipa::ToSchema for JobId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("JobId")
    }
}

impl utoipa::PartialSchema for crate::labels::TagSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(crate::labels::MAX_TAG_CHARS))
            // No control characters (C0, DEL, C1), as `validate_tag` says.
            .pattern(Some("^[^\\x00-\\x1f\\x7f-\\x9f]+$"))
            .description(Some("A tag: what a job can be found by"))
            .into()
    }
}

impl utoipa::ToSchema for crate::labels::TagSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Tag")
    }
}

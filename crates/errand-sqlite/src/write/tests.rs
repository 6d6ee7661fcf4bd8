//! Tests of the write paths' SQL.

use errand_core::Change;

use crate::rows::to_json;

use super::events::*;
use super::lease::*;

#[test]
fn a_replayed_operation_gets_its_event_data_again() {
    let change = Change::Completed {
        attempt: 2,
        result: serde_json::json!({"words": [1, 2]}),
    };
    let data = change.data();
    let event = PreparedEvent::new(&change);
    assert_eq!(event.take_value(), data, "the first run takes the value");
    assert_eq!(event.take_value(), data, "a rerun parses it from the text");
    assert_eq!(event.text, to_json(&data));
}

use crate::migrations::query_plan as plan;

/// With millions of queued jobs a claim must walk the ready index in
/// order and stop, never sort every ready job.
#[test]
fn claims_walk_the_ready_index_without_sorting() {
    for commands in [None, Some(1), Some(3)] {
        let plan = plan(&claim_sql(commands));
        assert!(plan.contains("jobs_ready"), "{commands:?}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{commands:?}: {plan}");
    }
}

//! Finding jobs by their tags and their context's plain values.

use std::time::Duration;

use errand_core::JobId;
use serde_json::json;

use super::*;
use crate::{ListParams, Outcome, StoreError};

fn ids(page: crate::JobPage) -> Vec<JobId> {
    page.jobs.into_iter().map(|j| j.job_id).collect()
}

async fn listed(t: &TestStore, params: ListParams) -> Vec<JobId> {
    ids(t.store.list(params).await.unwrap())
}

fn tagged(tags: &[&str]) -> ListParams {
    ListParams {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

fn in_context(pairs: &[(&str, &str)]) -> ListParams {
    ListParams {
        context: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Tags and context values find exactly the jobs that carry them, newest
/// first, combined with each other and with the other filters; the job
/// reads back its tags; a pruned job's labels go with it.
pub async fn list_filters_by_tags_and_context(t: TestStore) {
    let submit = |job: NewJob| {
        let store = t.store.clone();
        async move { store.submit(job).await.unwrap().job_id }
    };
    let podcast_42 = submit(
        new_job("podcast")
            .context(json!({"notebook_id": 42, "user": "ada", "deep": {"x": 1}}))
            .tags(["podcast", "urgent", "podcast"]),
    )
    .await;
    let podcast_7 = submit(
        new_job("podcast")
            .context(json!({"notebook_id": "7", "user": "ada"}))
            .tags(["podcast"]),
    )
    .await;
    let batch = t
        .store
        .submit_batch(vec![
            new_job("embed")
                .context(json!({"notebook_id": 42, "draft": true}))
                .tags(["embeddings"]),
            new_job("embed"),
        ])
        .await
        .unwrap();
    let (embed_42, untagged) = (batch[0].job_id.clone(), batch[1].job_id.clone());

    let job = t.store.get(&podcast_42).await.unwrap();
    assert_eq!(job.tags, ["podcast", "urgent"], "each tag once, in order");
    assert!(t.store.get(&untagged).await.unwrap().tags.is_empty());

    assert_eq!(
        listed(&t, tagged(&["podcast"])).await,
        [podcast_7.clone(), podcast_42.clone()]
    );
    assert_eq!(
        listed(&t, tagged(&["podcast", "urgent"])).await,
        vec![podcast_42.clone()]
    );
    assert_eq!(listed(&t, tagged(&["nothing-has-this"])).await, []);
    // A number and its text are the same value.
    assert_eq!(
        listed(&t, in_context(&[("notebook_id", "42")])).await,
        [embed_42.clone(), podcast_42.clone()]
    );
    assert_eq!(
        listed(&t, in_context(&[("notebook_id", "7")])).await,
        vec![podcast_7.clone()]
    );
    assert_eq!(
        listed(&t, in_context(&[("notebook_id", "42"), ("user", "ada")])).await,
        vec![podcast_42.clone()]
    );
    assert_eq!(
        listed(&t, in_context(&[("draft", "true")])).await,
        vec![embed_42.clone()]
    );
    // Nested values are not labels.
    assert_eq!(listed(&t, in_context(&[("deep", "{\"x\":1}")])).await, []);
    // With the other filters: a tag and a command, a context and a status.
    assert_eq!(
        listed(
            &t,
            ListParams {
                command: Some("embed".into()),
                ..in_context(&[("notebook_id", "42")])
            }
        )
        .await,
        vec![embed_42.clone()]
    );
    let claimed = t.store.claim(claim_params("w", 1)).await.unwrap();
    assert_eq!(claimed[0].job_id, podcast_42);
    assert_eq!(claimed[0].tags, ["podcast", "urgent"], "a claim reads them");
    assert_eq!(
        listed(
            &t,
            ListParams {
                status: Some(errand_core::JobStatus::Running),
                ..tagged(&["podcast"])
            }
        )
        .await,
        vec![podcast_42.clone()]
    );

    // Paging follows the label's order with no gaps.
    let more: Vec<JobId> = t
        .store
        .submit_batch((0..5).map(|_| new_job("page").tags(["paged"])).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .rev()
        .collect();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = t
            .store
            .list(ListParams {
                limit: 2,
                cursor: cursor.take(),
                ..tagged(&["paged"])
            })
            .await
            .unwrap();
        seen.extend(ids(page.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, more);

    // Pruned jobs leave no labels behind.
    complete_and_prune(&t, &claimed[0]).await;
    assert_eq!(listed(&t, tagged(&["urgent"])).await, []);
    assert_eq!(listed(&t, tagged(&["podcast"])).await, [podcast_7]);
    // The newest job pruned: a store that reuses its row number (SQLite)
    // must not hand its labels to the next job.
    let last = submit(new_job("last").tags(["gone"])).await;
    let claimed = t.store.claim(claim_params("w", 100)).await.unwrap();
    complete_and_prune(&t, claimed.iter().find(|j| j.job_id == last).unwrap()).await;
    let next = submit(new_job("next")).await;
    assert_eq!(
        listed(&t, tagged(&["gone"])).await,
        [],
        "{next} has no tags"
    );
}

/// Completes `job` (claimed by `w`) and prunes it, two minutes later.
async fn complete_and_prune(t: &TestStore, job: &errand_core::Job) {
    let done = Outcome::Completed { result: json!(1) };
    let recorded = t.store.finish(vec![(fence(job, "w"), done)]).await.unwrap();
    assert_eq!(recorded, vec![Ok(())]);
    t.clock.advance(Duration::from_secs(120));
    t.store
        .prune(t.clock.now().minus(Duration::from_secs(60)))
        .await
        .unwrap();
}

/// Filters a store cannot answer are refused, naming what is wrong.
pub async fn label_filters_and_tags_are_checked(t: TestStore) {
    let too_long = "x".repeat(errand_core::labels::MAX_LABEL_VALUE_CHARS + 1);
    for (params, says) in [
        (tagged(&[""]), "tag"),
        (in_context(&[("k", too_long.as_str())]), "256"),
        (in_context(&[("", "v")]), "KEY"),
    ] {
        let refused = t.store.list(params).await;
        assert!(
            matches!(&refused, Err(StoreError::Invalid(msg)) if msg.contains(says)),
            "{refused:?}"
        );
    }
    let many: Vec<String> = (0..=errand_core::labels::MAX_TAGS)
        .map(|i| i.to_string())
        .collect();
    let refused = t.store.submit(new_job("x").tags(many)).await;
    assert!(
        matches!(&refused, Err(StoreError::Invalid(msg)) if msg.contains("tags")),
        "{refused:?}"
    );
}

/// A job is found by its id's start: exactly the jobs whose id begins
/// with it, with the other filters; a prefix that is not lowercase hex is
/// refused.
pub async fn list_finds_jobs_by_the_start_of_their_id(t: TestStore) {
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(t.store.submit(new_job("a")).await.unwrap().job_id);
    }
    let target = ids[7].as_str().to_owned();
    for len in [32, 20, 13, 4, 1] {
        let prefix = &target[..len];
        let mut expected: Vec<&JobId> = ids
            .iter()
            .filter(|id| id.as_str().starts_with(prefix))
            .collect();
        expected.reverse();
        let found = t
            .store
            .list(ListParams {
                id_prefix: Some(prefix.to_owned()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let found: Vec<&JobId> = found.jobs.iter().map(|j| &j.job_id).collect();
        assert_eq!(found, expected, "prefix {prefix}");
    }
    let other_command = t
        .store
        .list(ListParams {
            id_prefix: Some(target.clone()),
            command: Some("test.b".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(other_command.jobs.is_empty());
    for bad in ["", "XYZ", "01A2", &"0".repeat(33), "01a2%"] {
        let refused = t
            .store
            .list(ListParams {
                id_prefix: Some(bad.to_owned()),
                ..Default::default()
            })
            .await;
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{bad:?}: {refused:?}"
        );
    }
}

//! How PostgreSQL runs the statements every job goes through, checked on
//! the plans it picks with statistics gone stale (taken while every job
//! was new, as autovacuum may leave them): each job found by key, never a
//! scan of the table or of every running job per outcome.

use std::time::{Duration, SystemTime};

use errand_postgres::hot_statements;
use errand_store::{ClaimParams, NewJob, Store, DEFAULT_QUEUE};
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

mod common;

/// Every node of an `EXPLAIN (FORMAT JSON)` plan.
fn nodes(plan: &Value) -> Vec<&Value> {
    let mut all = vec![plan];
    let mut i = 0;
    while i < all.len() {
        if let Some(children) = all[i]["Plans"].as_array() {
            all.extend(children);
        }
        i += 1;
    }
    all
}

async fn explain(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Value {
    let row = client
        .query_one(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), params)
        .await
        .unwrap();
    let plan: Value = row.get(0);
    plan[0]["Plan"].clone()
}

fn scans_of_the_jobs_table(plan: &Value) -> Vec<String> {
    nodes(plan)
        .into_iter()
        .filter(|n| n["Relation Name"] == "errand_jobs" && n["Node Type"] == "Seq Scan")
        .map(|n| n.to_string())
        .collect()
}

fn uses_index(plan: &Value, index: &str) -> bool {
    nodes(plan).iter().any(|n| n["Index Name"] == index)
}

fn rows_compared_and_dropped_by_joins(plan: &Value) -> u64 {
    nodes(plan)
        .iter()
        .filter_map(|n| n["Rows Removed by Join Filter"].as_u64())
        .sum()
}

/// A store on a fresh database with `jobs` queued, and a client of that
/// database to explain statements on (`None`: no PostgreSQL configured).
async fn store_with_jobs(
    jobs: usize,
) -> Option<(errand_postgres::PgStore, tokio_postgres::Client, impl Drop)> {
    let (config, guard) = common::fresh_database().await?;
    let store = common::system_clock_store(config).await;
    let (client, connection) = tokio_postgres::connect(&guard.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    store
        .submit_batch((0..jobs).map(|i| NewJob::new("a", "b", json!(i))).collect())
        .await
        .unwrap();
    Some((store, client, guard))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_outcomes_and_heartbeats_find_their_jobs_by_key() {
    let Some((store, client, _guard)) = store_with_jobs(5_000).await else {
        return;
    };
    client.batch_execute("ANALYZE errand_jobs").await.unwrap();
    let running = store
        .claim(ClaimParams {
            worker_id: "w".into(),
            queues: vec![DEFAULT_QUEUE.into()],
            commands: None,
            limit: 3_000,
            lease: Duration::from_secs(60),
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 3_000);

    let now = SystemTime::now();
    let lease_until = now + Duration::from_secs(60);
    let no_commands: Option<Vec<String>> = None;
    let claim = explain(
        &client,
        &hot_statements::claim(),
        &[
            &now,
            &"status",
            &DEFAULT_QUEUE,
            &no_commands,
            &256_i64,
            &"w2",
            &lease_until,
            &"test",
        ],
    )
    .await;
    assert_eq!(scans_of_the_jobs_table(&claim), Vec::<String>::new());

    // 300 outcomes among 3,000 running jobs. The work may grow with the
    // batch (at most 300 × 300 comparisons), never with the other running
    // jobs (300 × 3,000: what a walk of the lease index cost).
    const BOUNDED_BY_THE_BATCH: u64 = 300 * 300;
    let batch = &running[..300];
    let ids: Vec<&str> = batch.iter().map(|job| job.job_id.as_str()).collect();
    let attempts: Vec<i32> = batch.iter().map(|job| job.attempt as i32).collect();
    let renew = explain(
        &client,
        hot_statements::RENEW_LEASES,
        &[&lease_until, &"w", &ids, &attempts],
    )
    .await;
    assert_eq!(scans_of_the_jobs_table(&renew), Vec::<String>::new());
    assert!(!uses_index(&renew, "errand_jobs_lease"), "{renew}");
    assert!(
        rows_compared_and_dropped_by_joins(&renew) < BOUNDED_BY_THE_BATCH,
        "{renew}"
    );

    let workers = vec!["w"; batch.len()];
    let results = vec![json!("done"); batch.len()];
    let complete = explain(
        &client,
        hot_statements::COMPLETE_MANY,
        &[&now, &ids, &attempts, &workers, &results],
    )
    .await;
    assert_eq!(scans_of_the_jobs_table(&complete), Vec::<String>::new());
    assert!(!uses_index(&complete, "errand_jobs_lease"), "{complete}");
    assert!(
        rows_compared_and_dropped_by_joins(&complete) < BOUNDED_BY_THE_BATCH,
        "{complete}"
    );
    // EXPLAIN ANALYZE ran them: the plans were the real ones.
    let completed: i64 = client
        .query_one(
            "SELECT count(*) FROM errand_jobs WHERE status = 'completed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(completed, 300);
}

/// The stats read costs the same however many jobs have finished: run
/// times come from a window walked down the finished index, the oldest
/// ready job from the ready index, never a scan of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_read_walks_indexes_not_the_table() {
    let Some((store, client, _guard)) = store_with_jobs(30_000).await else {
        return;
    };
    let mut finished = 0;
    while finished < 29_900 {
        let claimed = store
            .claim(ClaimParams {
                worker_id: "w".into(),
                queues: vec![DEFAULT_QUEUE.into()],
                commands: None,
                limit: 5_000.min(29_900 - finished),
                lease: Duration::from_secs(60),
            })
            .await
            .unwrap();
        finished += claimed.len();
        let outcomes = claimed
            .into_iter()
            .map(|job| {
                let fence = errand_store::Fence {
                    job_id: job.job_id,
                    attempt: job.attempt,
                    worker_id: "w".into(),
                };
                (fence, errand_store::Outcome::Completed { result: json!(1) })
            })
            .collect();
        store.finish(outcomes).await.unwrap();
    }
    client.batch_execute("ANALYZE errand_jobs").await.unwrap();
    let window = errand_store::counts::RUN_TIME_WINDOW;
    let run_times = explain(&client, hot_statements::STATS_RUN_TIMES, &[&window]).await;
    assert_eq!(scans_of_the_jobs_table(&run_times), Vec::<String>::new());
    assert!(
        uses_index(&run_times, "errand_jobs_finished"),
        "{run_times}"
    );
    let now = SystemTime::now();
    let oldest = explain(&client, hot_statements::STATS_OLDEST_READY, &[&now]).await;
    assert_eq!(scans_of_the_jobs_table(&oldest), Vec::<String>::new());
    assert!(uses_index(&oldest, "errand_jobs_ready"), "{oldest}");
}

/// A tag or context filter reads the jobs its labels name, found by key:
/// the jobs it reads grow with the label, never with the table (here 200
/// labeled jobs among 5,200, the oldest ones, where a walk of the table in
/// page order would read them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_filter_reads_only_the_jobs_its_labels_name() {
    let Some((config, guard)) = common::fresh_database().await else {
        return;
    };
    let store = common::system_clock_store(config).await;
    let (client, connection) = tokio_postgres::connect(&guard.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    store
        .submit_batch(
            (0..200)
                .map(|i| {
                    NewJob::new("a", "b", json!(i))
                        .tags([if i % 2 == 0 { "podcast" } else { "other" }])
                        .context(json!({"notebook_id": i % 10}))
                })
                .collect(),
        )
        .await
        .unwrap();
    store
        .submit_batch(
            (0..5_000)
                .map(|i| NewJob::new("a", "b", json!(i)))
                .collect(),
        )
        .await
        .unwrap();
    client
        .batch_execute("ANALYZE errand_jobs; ANALYZE errand_job_labels")
        .await
        .unwrap();
    let (sql, values) = hot_statements::list(&errand_store::ListParams {
        tags: vec!["podcast".into()],
        context: vec![("notebook_id".into(), "4".into())],
        status: Some(errand_core::JobStatus::New),
        cursor: Some("1000000".into()),
        ..Default::default()
    })
    .unwrap();
    let refs: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let plan = explain(&client, &sql, &refs).await;
    assert_eq!(plan["Actual Rows"], 20, "{plan}");
    assert_eq!(scans_of_the_jobs_table(&plan), Vec::<String>::new());
    assert!(uses_index(&plan, "errand_job_labels_pkey"), "{plan}");
    let jobs_read: u64 = nodes(&plan)
        .iter()
        .filter(|n| n["Relation Name"] == "errand_jobs")
        .map(|n| n["Actual Rows"].as_u64().unwrap() * n["Actual Loops"].as_u64().unwrap())
        .sum();
    assert!(jobs_read <= 100, "{jobs_read} jobs read: {plan}");
}

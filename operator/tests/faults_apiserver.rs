//! Issue 19's fault suite: kube-apiserver stopped and started again mid-run (docs/reliability.md),
//! on the real operator binary, a real control plane and a real node. Its own test binary, so
//! its own environment: stopping the API server would break the tests that share one.
//!
//! The figures the test prints (`figure:` lines, `--nocapture`) are observations for
//! docs/reliability.md, never assertions.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use kube::ResourceExt;
use llmjob_crds::v1alpha1::Phase;

/// How long the replay server holds each call: the runs are still in flight when the API server
/// stops, and finish while it is gone or just after.
const CALL_DELAY: Duration = Duration::from_secs(10);

/// Guarantee: when kube-apiserver stops mid-run and starts again (same port, same etcd data),
/// the operator's watches resume and nothing is lost or done twice: every LlmJob Succeeds, with
/// one Job and one call each, including one created after the restart; and its `/readyz` says
/// so: 503 while it cannot reach the API server, 200 again after.
#[tokio::test(flavor = "multi_thread")]
async fn an_apiserver_restart_mid_run_loses_and_duplicates_nothing() {
    let env = env().await;
    let cluster = env.cluster().expect("the environment runs a control plane");
    let ns = namespace_with_secret(env, "apiserver-restart").await;
    let replay = Replay::delayed(env, &ns, CALL_DELAY).await;
    let op = Operator::start(env, &ns, &[]).await;

    let in_flight = ["flight-1", "flight-2"];
    for name in in_flight {
        create_llmjob(env, &ns, llmjob_json(name, &replay.base_url())).await;
    }
    wait_until("the runs' Jobs", || async {
        let jobs = jobs(env, &ns).await;
        in_flight
            .iter()
            .all(|n| jobs.iter().any(|j| j.name_any() == *n))
            .then_some(())
    })
    .await;

    let stopping = Instant::now();
    cluster
        .stop_apiserver()
        .await
        .unwrap_or_else(|e| panic!("stopping kube-apiserver: {e}"));
    let (_, why) = wait_until("the operator to say it is not ready", || async {
        let (code, body) = op.get("/readyz").await?;
        (code == 503).then_some((code, body))
    })
    .await;
    assert_eq!(why, "cannot reach the API server");
    let unready_after = stopping.elapsed();

    let starting = Instant::now();
    cluster
        .start_apiserver_again()
        .await
        .unwrap_or_else(|e| panic!("starting kube-apiserver again: {e}"));
    let apiserver_ready = starting.elapsed();
    wait_until("the operator to be ready again", || async {
        (op.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let operator_ready = starting.elapsed();
    let outage = stopping.elapsed();

    create_llmjob(env, &ns, llmjob_json("after", &replay.base_url())).await;
    let created = Instant::now();
    wait_until(
        "the Job of the LlmJob created after the restart",
        || async {
            jobs(env, &ns)
                .await
                .iter()
                .any(|j| j.name_any() == "after")
                .then_some(())
        },
    )
    .await;
    let launched = created.elapsed();

    let all = ["flight-1", "flight-2", "after"];
    for name in all {
        wait_for_phase(env, &ns, name, Phase::Succeeded).await;
    }
    let mut job_names: Vec<String> = jobs(env, &ns).await.iter().map(name_of).collect();
    job_names.sort();
    assert_eq!(job_names, ["after", "flight-1", "flight-2"], "one Job each");
    assert_eq!(replay.requests().len(), all.len(), "one call per run");
    assert_eq!(op.get("/readyz").await.map(|r| r.0), Some(200));
    eprintln!(
        "figure: operator not ready {unready_after:.1?} after the stop began; API server ready \
         {apiserver_ready:.1?} after its start, operator ready {operator_ready:.1?} after it \
         (outage as the operator saw it: {outage:.1?}); a new LlmJob's Job {launched:.1?} after \
         its create"
    );
}

//! Trace links end to end: the operator started with `--trace-url-template` fills
//! `status.traceURL` from the run's trace id, puts the link in the Succeeded event, and
//! `kubectl get llmj -o wide` (the real kubectl, through the CRD's printer columns) shows it.

mod common;

use common::*;
use llmjob_crds::v1alpha1::Phase;
use openai_replay::ReplayConfig;

const TEMPLATE: &str = "http://jaeger.observability:16686/trace/{traceId}";

#[tokio::test(flavor = "multi_thread")]
async fn the_trace_url_is_in_the_status_the_event_and_kubectl_wide() {
    let env = env().await;
    let ns = namespace_with_secret(env, "trace-url").await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let flag = format!("--trace-url-template={TEMPLATE}");
    let op = Operator::start(env, &ns, &[&flag]).await;

    create_llmjob(env, &ns, llmjob_json("linked", &replay.base_url())).await;
    let done = wait_for_phase(env, &ns, "linked", Phase::Succeeded).await;
    let status = done.status.expect("status");
    let trace_id = status.trace_id.expect("trace id");
    let url = TEMPLATE.replace("{traceId}", &trace_id);
    assert_eq!(status.trace_url.as_deref(), Some(url.as_str()));

    let note = wait_for_event(env, &ns, "linked", "Succeeded").await;
    assert!(
        note.ends_with(&format!("Trace: {url}")),
        "the Succeeded event links the trace: {note}"
    );

    let out = env
        .kubectl(&["get", "llmj", "-n", &ns, "linked", "-o", "wide"])
        .await
        .expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("TRACE URL"), "{table}");
    assert!(
        table.contains(&url),
        "kubectl get -o wide shows the link: {table}"
    );
    let narrow = env
        .kubectl(&["get", "llmj", "-n", &ns, "linked"])
        .await
        .expect("kubectl");
    assert!(
        !String::from_utf8_lossy(&narrow.stdout).contains(&url),
        "the link is a wide column only"
    );
    op.stop().await;
}

//! An LlmJob that the operator's types cannot read, written around the CRD's schema (the schema
//! swapped for one that accepts anything, as a served version without validation would, then
//! restored): the operator reports it on the object (`Stalled`, reason `InvalidSpec`, and a
//! Warning Event naming the field), and every other LlmJob keeps reconciling, whether the bad
//! object is in the operator's first list or arrives by a watch event.
//!
//! API server only (`api_env`): nothing here needs a pod, the operator only has to create Jobs.
//! One test: it swaps the CRD's schema, which every test of the binary would see.

mod common;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceValidation, JSONSchemaProps,
};
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Resource};
use llmjob_crds::v1alpha1::{LlmJob, Phase};

const CRD_NAME: &str = "llmjobs.llmjob.dev";

/// The OpenAI base URL of these LlmJobs: https (the tenant policy refuses plain http outside the
/// cluster), never called (no pod runs).
const BASE_URL: &str = "https://openai.invalid/v1";

/// An LlmJob whose `field` (a path of keys under `spec`) holds `value`, which the CRD's schema
/// rejects and the operator's types cannot read.
#[allow(clippy::expect_used)]
fn malformed(name: &str, field: &[&str], value: serde_json::Value) -> serde_json::Value {
    let mut manifest = llmjob_json(name, BASE_URL);
    let mut at = &mut manifest["spec"];
    for key in field {
        at = &mut at[*key];
    }
    *at = value;
    manifest
}

fn untyped(env: &testenv::env::TestEnv, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(env.client(), ns, &ApiResource::erase::<LlmJob>(&()))
}

/// Stores `manifest` although the CRD's schema rejects it: the schema is replaced by one that
/// preserves anything, the object is created, and the generated CRD is installed again.
#[allow(clippy::expect_used)]
async fn write_around_the_schema(
    env: &testenv::env::TestEnv,
    ns: &str,
    manifest: serde_json::Value,
) {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    let api = untyped(env, ns);
    let object: DynamicObject = serde_json::from_value(manifest).expect("an object");
    let name = object.metadata.name.clone().expect("a name");
    assert!(
        api.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &object
        )
        .await
        .is_err(),
        "the schema must reject {name}, or this test proves nothing"
    );
    let mut crd = crds.get(CRD_NAME).await.expect("the CRD");
    let open: JSONSchemaProps = serde_json::from_value(serde_json::json!({
        "type": "object", "x-kubernetes-preserve-unknown-fields": true
    }))
    .expect("a schema");
    for version in &mut crd.spec.versions {
        version.schema = Some(CustomResourceValidation {
            open_api_v3_schema: Some(open.clone()),
        });
    }
    crd.metadata.managed_fields = None;
    crds.replace(CRD_NAME, &PostParams::default(), &crd)
        .await
        .expect("replacing the CRD's schema");
    // The API server serves the new schema a moment after the update.
    wait_until(&format!("the open schema to accept {name}"), || async {
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Some(()),
            Err(_) => None,
        }
    })
    .await;
    install_crd(&env.client()).await;
    let mut probe = object.clone();
    probe.metadata.name = Some(format!("{name}-probe"));
    wait_until("the generated schema to be served again", || async {
        api.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &probe,
        )
        .await
        .is_err()
        .then_some(())
    })
    .await;
}

/// Waits until the operator created the Job of LlmJob `name` and says so in its status.
#[allow(clippy::expect_used)]
async fn wait_for_launch(env: &testenv::env::TestEnv, ns: &str, name: &str) {
    let api: Api<LlmJob> = Api::namespaced(env.client(), ns);
    wait_until(&format!("LlmJob {ns}/{name} to get its Job"), || async {
        let status = api.get(name).await.ok()?.status?;
        (status.job_name.is_some() && status.phase == Some(Phase::Pending)).then_some(())
    })
    .await;
}

/// A string where a number goes, as a key pasted into the wrong field: never repeated by the
/// operator (events, status, log).
const SECRET: &str = "sk-pasted-LEAKCHECK-0123";

/// The Events with reason `InvalidSpec` about LlmJob `name`.
#[allow(clippy::expect_used)]
async fn invalid_spec_events(env: &testenv::env::TestEnv, ns: &str, name: &str) -> Vec<String> {
    events_of(env, ns, name)
        .await
        .into_iter()
        .filter(|(_, reason, _)| reason == "InvalidSpec")
        .map(|(_, _, note)| note)
        .collect()
}

/// Guarantee: one LlmJob the operator's types cannot read never stops the others, whether it is
/// in the operator's first list or arrives by a watch event; LlmJobs created afterwards get their
/// Jobs. Each is reported by a Warning Event naming the field and the error, and by `Stalled`
/// with reason `InvalidSpec` in its status where the API server accepts a status for it: not
/// when a CEL rule of the schema reads the malformed field (`spec.run`: the immutability rules).
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_llmjob_is_reported_and_the_others_keep_reconciling() {
    let env = api_env().await;
    let ns = env.create_namespace("malformed").await.expect("namespace");

    // In the operator's first list: a field the immutability rules read, so no status is possible.
    write_around_the_schema(
        env,
        &ns,
        malformed("listed", &["run", "maxAttempts"], SECRET.into()),
    )
    .await;
    let op = Operator::start(env, &ns, &[]).await;
    create_llmjob(env, &ns, llmjob_json("first", BASE_URL)).await;
    wait_for_launch(env, &ns, "first").await;

    // By a watch event, while the operator runs: a field no CEL rule reads.
    write_around_the_schema(
        env,
        &ns,
        malformed("watched", &["pod", "priorityClassName"], 42.into()),
    )
    .await;
    create_llmjob(env, &ns, llmjob_json("second", BASE_URL)).await;
    wait_for_launch(env, &ns, "second").await;

    for (name, field, error) in [
        ("listed", "spec.run.maxAttempts", "string (value hidden)"),
        ("watched", "spec.pod.priorityClassName", "42"),
    ] {
        let what = format!("an InvalidSpec Event on {name}");
        let notes = wait_until(&what, || async {
            let notes = invalid_spec_events(env, &ns, name).await;
            (!notes.is_empty()).then_some(notes)
        })
        .await;
        assert_eq!(notes.len(), 1, "one Event for {name}: {notes:?}");
        assert!(
            notes[0].contains(field) && notes[0].contains(error),
            "the Event names the field and the error: {}",
            notes[0]
        );
        assert!(
            jobs(env, &ns)
                .await
                .iter()
                .all(|j| j.metadata.name.as_deref() != Some(name)),
            "no Job for the unreadable {name}"
        );
    }
    let api = untyped(env, &ns);
    let stalled = wait_until("LlmJob watched Stalled with InvalidSpec", || async {
        let object = api.get("watched").await.ok()?;
        let generation = object.meta().generation;
        let status = object.data.get("status")?.clone();
        let stalled = status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Stalled" && c["status"] == "True")?
            .clone();
        (stalled["reason"] == "InvalidSpec" && status["observedGeneration"].as_i64() == generation)
            .then_some(stalled)
    })
    .await;
    let message = stalled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.pod.priorityClassName") && message.contains("delete it"),
        "the condition names the field and what to do: {message}"
    );
    let listed = api.get("listed").await.expect("listed");
    assert!(
        listed.data.get("status").is_none(),
        "the API server refuses a status for listed"
    );
    assert!(
        op.log_text().contains("refuses a status"),
        "the operator says why listed has no status; log: {}",
        op.log.display()
    );

    let everything = format!(
        "{:?}\n{}",
        events_of(env, &ns, "listed").await,
        op.log_text()
    );
    assert!(
        !everything.contains(SECRET),
        "the malformed value was repeated"
    );

    // A restart repeats nothing that the status records.
    assert!(op.stop().await.success());
    let restarted = Operator::start(env, &ns, &[]).await;
    wait_until(
        "the restarted operator to find watched already reported",
        || async {
            restarted
                .log_text()
                .contains("already reported")
                .then_some(())
        },
    )
    .await;
    create_llmjob(env, &ns, llmjob_json("third", BASE_URL)).await;
    wait_for_launch(env, &ns, "third").await;
    assert_eq!(invalid_spec_events(env, &ns, "watched").await.len(), 1);
}

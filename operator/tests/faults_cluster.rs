//! Issue 19's fault suite, part 2: faults of the operator's own replicas and of what it talks to
//! (docs/reliability.md), end to end on the real operator binary, a real kube-apiserver +
//! kube-controller-manager and a real node running the runner image, each test in its own
//! namespace with its own operator processes.
//!
//! - two replicas: the leader SIGKILLed (the standby takes over; runs in flight finish once),
//!   the leader SIGSTOPped past its Lease (after SIGCONT it writes nothing);
//! - the operator's own OTLP collector unreachable (a port that accepts and never answers, and a
//!   closed port): reconciles and runs go on, the memory stays bounded.
//!
//! The figures the tests print (`figure:` lines, `--nocapture`) are observations for
//! docs/reliability.md, never assertions.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use llmjob_crds::v1alpha1::{LlmJob, Phase};
use openai_replay::ReplayConfig;
use testenv::env::TestEnv;

/// How long the replay server holds each call: long enough for a run to be in flight while the
/// leader is killed or paused.
const CALL_DELAY: Duration = Duration::from_secs(8);

/// Two operator replicas with leader election in `ns`, identities `<ns>-a` and `<ns>-b`.
struct Replicas {
    leader: Operator,
    standby: Operator,
    leader_identity: String,
    standby_identity: String,
    lease: String,
}

impl Replicas {
    async fn start(env: &TestEnv, ns: &str) -> Replicas {
        let lease = format!("llmjob-{ns}");
        let start = |name: &'static str| {
            let args = [
                "--leader-elect=true".to_owned(),
                format!("--leader-election-lease-name={lease}"),
                format!("--leader-election-identity={ns}-{name}"),
            ];
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Operator::start(env, ns, &args).await
            }
        };
        let a = start("a").await;
        let b = start("b").await;
        let a_leads = wait_until("one replica to lead", || async {
            match (leads(&a).await?, leads(&b).await?) {
                (true, false) => Some(true),
                (false, true) => Some(false),
                _ => None,
            }
        })
        .await;
        let (leader, standby, l, s) = if a_leads {
            (a, b, "a", "b")
        } else {
            (b, a, "b", "a")
        };
        assert_eq!(
            standby.get("/readyz").await.map(|r| r.1).as_deref(),
            Some("standby")
        );
        Replicas {
            leader,
            standby,
            leader_identity: format!("{ns}-{l}"),
            standby_identity: format!("{ns}-{s}"),
            lease,
        }
    }
}

/// Whether the replica says it leads (its `llmjob_operator_leader` gauge).
async fn leads(op: &Operator) -> Option<bool> {
    Some(op.metric("llmjob_operator_leader").await? == 1.0)
}

/// The replica's `llmjob_operator_reconciles_total`.
async fn reconciles(op: &Operator) -> Option<u64> {
    op.metric("llmjob_operator_reconciles_total")
        .await
        .map(|v| v as u64)
}

/// Creates the LlmJobs `names` against the replay server.
async fn create_all(env: &TestEnv, ns: &str, replay: &Replay, names: &[&str]) {
    for name in names {
        create_llmjob(env, ns, llmjob_json(name, &replay.base_url())).await;
    }
}

/// Waits until each LlmJob `names` has its Job (the leader has launched it).
async fn wait_for_jobs(env: &TestEnv, ns: &str, names: &[&str]) {
    wait_until(&format!("Jobs {names:?} in {ns}"), || async {
        let jobs = jobs(env, ns).await;
        names
            .iter()
            .all(|n| jobs.iter().any(|j| j.name_any() == *n))
            .then_some(())
    })
    .await;
}

/// Each LlmJob `names` Succeeded, with exactly one Job each and one call each at the replay
/// server: no run was lost or run twice.
async fn assert_each_ran_once(env: &TestEnv, ns: &str, replay: &Replay, names: &[&str]) {
    for name in names {
        wait_for_phase(env, ns, name, Phase::Succeeded).await;
    }
    let mut job_names: Vec<String> = jobs(env, ns).await.iter().map(name_of).collect();
    job_names.sort();
    let mut expected: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    expected.sort();
    assert_eq!(job_names, expected, "one Job per LlmJob");
    assert_eq!(
        replay.requests().len(),
        names.len(),
        "one call per run at the API"
    );
}

/// The Lease's holder and transitions.
async fn lease_holder(env: &TestEnv, ns: &str, lease: &str) -> (Option<String>, i32) {
    let spec = Api::<Lease>::namespaced(env.client(), ns)
        .get(lease)
        .await
        .expect("reading the Lease")
        .spec
        .unwrap_or_default();
    (
        spec.holder_identity,
        spec.lease_transitions.unwrap_or_default(),
    )
}

/// Guarantee: when the leader is SIGKILLed (no release of its Lease), the standby takes over once
/// the Lease expires (15 s), and runs in flight during the handover, and one created while no
/// replica leads, finish exactly once: Succeeded, one Job each, one call each.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leader_is_replaced_and_runs_in_flight_finish_once() {
    let env = env().await;
    let ns = namespace_with_secret(env, "kill-leader").await;
    let replay = Replay::delayed(env, &ns, CALL_DELAY).await;
    let Replicas {
        leader,
        standby,
        standby_identity,
        lease,
        ..
    } = Replicas::start(env, &ns).await;
    let (_, transitions) = lease_holder(env, &ns, &lease).await;

    let in_flight = ["flight-1", "flight-2"];
    create_all(env, &ns, &replay, &in_flight).await;
    wait_for_jobs(env, &ns, &in_flight).await;

    leader.signal("KILL");
    let killed = Instant::now();
    create_all(env, &ns, &replay, &["orphan"]).await;
    wait_until("the standby to lead", || async {
        leads(&standby).await?.then_some(())
    })
    .await;
    let took_over = killed.elapsed();
    wait_until("the new leader's first reconcile", || async {
        (reconciles(&standby).await? > 0).then_some(())
    })
    .await;
    let first_reconcile = killed.elapsed();
    wait_for_jobs(env, &ns, &["orphan"]).await;
    let orphan_launched = killed.elapsed();

    assert_each_ran_once(env, &ns, &replay, &["flight-1", "flight-2", "orphan"]).await;
    let (holder, after) = lease_holder(env, &ns, &lease).await;
    assert_eq!(holder.as_deref(), Some(standby_identity.as_str()));
    assert_eq!(after, transitions + 1, "one handover");
    eprintln!(
        "figure: SIGKILL of the leader -> standby leads {took_over:.1?}, first reconcile \
         {first_reconcile:.1?}, Job of the LlmJob created meanwhile {orphan_launched:.1?}"
    );
}

/// What the operator wrote in `ns`, as the API server records it: each LlmJob's resourceVersion
/// (only the operator writes them once created), each Job's field-manager entries of the
/// operator (operation, subresource, time) and the Events each replica reported.
async fn writes(env: &TestEnv, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let llmjobs = Api::<LlmJob>::namespaced(env.client(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing LlmJobs");
    for j in llmjobs {
        out.insert(
            format!("llmjob/{}", j.name_any()),
            j.resource_version().unwrap_or_default(),
        );
    }
    for job in jobs(env, ns).await {
        let managers: Vec<String> = job
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| {
                m.manager
                    .as_deref()
                    .is_some_and(|m| m.starts_with(llmjob_operator::FIELD_MANAGER))
            })
            .map(|m| {
                format!(
                    "{:?} {:?} {:?}",
                    m.operation,
                    m.subresource,
                    m.time.as_ref().map(|t| t.0)
                )
            })
            .collect();
        out.insert(format!("job/{}", job.name_any()), managers.join("; "));
    }
    let events = Api::<Event>::namespaced(env.client(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing Events");
    for e in events {
        if e.reporting_controller.as_deref() != Some(llmjob_operator::FIELD_MANAGER) {
            continue;
        }
        if let Some(instance) = e.reporting_instance.clone() {
            out.insert(
                format!("event/{}/{}", instance, e.name_any()),
                e.resource_version().unwrap_or_default(),
            );
        }
    }
    out
}

/// Guarantee: a leader paused (SIGSTOP) past its Lease is replaced, and once it runs again
/// (SIGCONT) it writes nothing (no Job, no status, no Event: its writes are fenced once its renew
/// deadline has passed on the monotonic clock) and exits; runs in flight during the pause, and
/// one created during it, finish exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_leader_writes_nothing_after_it_resumes() {
    let env = env().await;
    let ns = namespace_with_secret(env, "pause-leader").await;
    let replay = Replay::delayed(env, &ns, CALL_DELAY).await;
    let Replicas {
        mut leader,
        standby,
        leader_identity,
        standby_identity,
        lease,
    } = Replicas::start(env, &ns).await;

    create_all(env, &ns, &replay, &["in-flight"]).await;
    wait_for_jobs(env, &ns, &["in-flight"]).await;
    leader.signal("STOP");
    let stopped = Instant::now();
    // Its watches queue these events; once resumed it would act on them if it could write.
    create_all(env, &ns, &replay, &["while-paused"]).await;
    wait_until("the standby to lead", || async {
        leads(&standby).await?.then_some(())
    })
    .await;
    let took_over = stopped.elapsed();
    assert_each_ran_once(env, &ns, &replay, &["in-flight", "while-paused"]).await;
    let (holder, _) = lease_holder(env, &ns, &lease).await;
    assert_eq!(holder.as_deref(), Some(standby_identity.as_str()));

    let before = writes(env, &ns).await;
    let resumed = Timestamp::now();
    leader.signal("CONT");
    let status = wait_until("the resumed old leader to exit", || {
        let exited = leader.exited();
        async move { exited }
    })
    .await;
    assert!(!status.success(), "it stops with an error: {status}");
    let log = leader.log_text();
    assert!(
        log.contains("renew deadline") || log.contains("lost the leadership"),
        "it says why it stopped:\n{log}"
    );
    // The new leader's view of the same objects, after the old one is gone: what changed since
    // SIGCONT was written by someone, and nothing had anything left to do but the old leader.
    let after = writes(env, &ns).await;
    assert_eq!(after, before, "nothing was written after SIGCONT");
    let old_events: Vec<String> = after
        .keys()
        .filter(|k| k.starts_with(&format!("event/{leader_identity}/")))
        .cloned()
        .collect();
    assert!(
        Api::<Event>::namespaced(env.client(), &ns)
            .list(&ListParams::default())
            .await
            .expect("listing Events")
            .items
            .iter()
            .filter(|e| e.reporting_instance.as_deref() == Some(leader_identity.as_str()))
            .all(|e| e.event_time.as_ref().is_none_or(|t| t.0 < resumed)),
        "no Event of the old leader after SIGCONT (its Events: {old_events:?})"
    );
    assert_eq!(jobs(env, &ns).await.len(), 2);
    assert_eq!(replay.requests().len(), 2);
    let refused = log.matches("not sent:").count();
    eprintln!(
        "figure: SIGSTOP of the leader -> standby leads {took_over:.1?}; after SIGCONT the old \
         leader's writes refused by its fence: {refused}"
    );
}

/// Guarantee (the mechanism of the row above, on the real API server): the leader's fenced
/// client sends no write while its fence is closed (a standby, or a leader past its renew
/// deadline), and sends reads always.
#[tokio::test(flavor = "multi_thread")]
async fn a_fenced_client_sends_no_write_once_its_deadline_has_passed() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams, PostParams};
    use llmjob_operator::leader::{Fence, fenced_client};

    let env = env().await;
    let ns = namespace(env, "fence").await;
    let path = env.kubeconfig_path();
    let yaml = std::fs::read_to_string(&path).expect("the kubeconfig");
    let config = testenv::cluster::config_from_kubeconfig(&yaml, &path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let fence = Fence::closed();
    let fenced: Api<ConfigMap> =
        Api::namespaced(fenced_client(config, fence.clone()).expect("a client"), &ns);
    let admin: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    let config_map = |name: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("ConfigMap")
    };

    // Closed (a standby): the create is refused before it is sent; reads pass.
    let refused = fenced
        .create(&PostParams::default(), &config_map("standby"))
        .await
        .expect_err("a standby's write is refused");
    assert!(refused.to_string().contains("not sent: POST"), "{refused}");
    assert!(fenced.list(&Default::default()).await.is_ok(), "reads pass");
    assert!(admin.get_opt("standby").await.expect("a read").is_none());

    // Leading: writes pass until the deadline.
    fence.extend(Instant::now() + Duration::from_secs(1));
    fenced
        .create(&PostParams::default(), &config_map("leader"))
        .await
        .expect("the leader's write");
    wait_until("the fence's deadline to pass", || async {
        (!fence.allows(Instant::now())).then_some(())
    })
    .await;
    let patch = Patch::Merge(serde_json::json!({"data": {"late": "write"}}));
    let refused = fenced
        .patch("leader", &PatchParams::default(), &patch)
        .await
        .expect_err("a write past the deadline is refused");
    assert!(refused.to_string().contains("not sent: PATCH"), "{refused}");
    let stored = admin.get("leader").await.expect("the ConfigMap");
    assert_eq!(
        stored.data, None,
        "the late patch never reached the API server"
    );
    assert!(fenced.get("leader").await.is_ok(), "reads still pass");
}

/// A TCP port that accepts connections and never answers (a blackholed collector). The
/// connections are held until the listener is dropped.
struct Blackhole {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start() -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the blackhole");
        let port = listener.local_addr().expect("its address").port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        Blackhole { port, task }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The resident memory of process `pid` (VmRSS in /proc), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// Generous bound on the operator's resident memory with its collector unreachable (it runs at
/// a few tens of MiB); the batch span processor's queue is bounded (2048 spans), so the spans
/// that cannot be exported are dropped instead of piling up.
const RSS_BOUND_KIB: u64 = 128 * 1024;
/// Suspended LlmJobs each test adds to the runs: each costs reconciles (and spans to export)
/// without a pod.
const SUSPENDED: usize = 40;

/// Runs an operator whose own OTLP endpoint is `endpoint` and checks that it keeps working:
/// real runs Succeed, [`SUSPENDED`] LlmJobs reach `Suspended`, the RSS stays under
/// [`RSS_BOUND_KIB`], and a clean shutdown ends without being killed (flushing is bounded).
async fn keeps_working_with_collector_at(prefix: &str, endpoint: &str) {
    let env = env().await;
    let ns = namespace_with_secret(env, prefix).await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let op =
        Operator::start_with_env(env, &ns, &[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]).await;
    let runs = ["run-1", "run-2", "run-3"];
    create_all(env, &ns, &replay, &runs).await;
    for i in 0..SUSPENDED {
        let mut manifest = llmjob_json(&format!("held-{i}"), &replay.base_url());
        manifest["spec"]["suspend"] = true.into();
        create_llmjob(env, &ns, manifest).await;
    }
    for name in runs {
        wait_for_phase(env, &ns, name, Phase::Succeeded).await;
    }
    for i in 0..SUSPENDED {
        wait_for_phase(env, &ns, &format!("held-{i}"), Phase::Suspended).await;
    }
    assert_eq!(replay.requests().len(), runs.len());
    let reconciled = reconciles(&op).await.expect("the reconcile counter");
    assert!(
        reconciled >= (runs.len() + SUSPENDED) as u64,
        "{reconciled} reconciles"
    );
    let rss = rss_kib(op.pid());
    assert!(
        rss < RSS_BOUND_KIB,
        "RSS {rss} KiB after {reconciled} reconciles with the collector at {endpoint}"
    );
    eprintln!(
        "figure: collector at {endpoint} ({prefix}): {reconciled} reconciles, RSS {} MiB",
        rss / 1024
    );
    let stopping = Instant::now();
    let status = op.stop().await;
    assert!(
        status.success(),
        "a clean shutdown, not killed after its grace period: {status}"
    );
    eprintln!(
        "figure: ({prefix}) shutdown took {:.1?}",
        stopping.elapsed()
    );
}

/// Guarantee: with its own collector a blackhole (a port that accepts and never answers), the
/// operator reconciles as usual, no reconcile waits on the export, and its memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_blackholed_collector_does_not_stall_reconciles_or_grow_memory() {
    let hole = Blackhole::start().await;
    keeps_working_with_collector_at("otlp-blackhole", &format!("http://127.0.0.1:{}", hole.port))
        .await;
    drop(hole);
}

/// Guarantee: likewise with its own collector's port closed (connections refused).
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_collector_port_does_not_stall_reconciles_or_grow_memory() {
    let port = testenv::process::free_loopback_port().expect("a free port");
    keeps_working_with_collector_at("otlp-closed", &format!("http://127.0.0.1:{port}")).await;
}

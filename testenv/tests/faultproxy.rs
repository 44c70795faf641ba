//! `testenv::faultproxy` against a real kube-apiserver (no node): each fault does what it says,
//! seen from a kube client through the proxy and checked on the API server directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchParams};
use testenv::env::TestEnv;
use testenv::faultproxy::{Fault, FaultProxy, Match, Release, Rule};

const WAIT: Duration = Duration::from_secs(60);

fn env() -> &'static TestEnv {
    TestEnv::shared_with(|| TestEnv::builder().api_only())
}

/// A namespace, a proxy in front of the API server, the ConfigMaps of the namespace through the
/// proxy and directly.
async fn setup(prefix: &str) -> (FaultProxy, Api<ConfigMap>, Api<ConfigMap>) {
    let env = env();
    let ns = env.create_namespace(prefix).await.unwrap();
    let proxy = FaultProxy::start(env.api_server_url(), env.cluster().unwrap().pki())
        .await
        .unwrap();
    let via = Api::namespaced(proxy.client().await.unwrap(), &ns);
    let direct = Api::namespaced(env.client(), &ns);
    (proxy, via, direct)
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap()
}

fn code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn error_answers_are_kubernetes_statuses_and_429_is_retried_after_retry_after() {
    let (proxy, via, _) = setup("fp-errors").await;
    via.create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    assert_eq!(proxy.count("create", "configmaps"), 1);

    let id = proxy.add(Rule::new(
        Match::verb("get", "configmaps"),
        Fault::internal_error(),
    ));
    let error = via.get("a").await.unwrap_err();
    assert_eq!(code(&error), Some(500), "{error}");
    proxy.remove(id);

    // kube-rs' client retries a 429 itself, no sooner than Retry-After.
    proxy.add(
        Rule::new(
            Match::verb("get", "configmaps"),
            Fault::too_many_requests(1),
        )
        .times(1),
    );
    via.get("a").await.unwrap();
    let gets: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.verb == "get" && r.resource == "configmaps")
        .collect();
    let [.., throttled, retried] = gets.as_slice() else {
        panic!("{gets:?}")
    };
    assert_eq!(throttled.fault.as_deref(), Some("429"));
    assert_eq!(retried.fault, None);
    assert!(retried.at - throttled.at >= Duration::from_secs(1));

    // A path pattern selects one object.
    proxy.add(Rule::new(
        Match::any().path("/api/v1/namespaces/*/configmaps/b"),
        Fault::internal_error(),
    ));
    via.get("a").await.unwrap();
    let error = via.get("b").await.unwrap_err();
    assert_eq!(code(&error), Some(500), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_requests_are_not_applied_and_dropped_responses_are() {
    let (proxy, via, direct) = setup("fp-drops").await;
    proxy.add(Rule::new(Match::verb("create", "configmaps"), Fault::DropRequest).times(1));
    let error = via
        .create(&PostParams::default(), &config_map("never"))
        .await
        .unwrap_err();
    assert_eq!(code(&error), None, "no answer at all: {error}");
    assert!(direct.get_opt("never").await.unwrap().is_none());

    proxy.add(Rule::new(Match::verb("create", "configmaps"), Fault::DropResponse).times(1));
    let error = via
        .create(&PostParams::default(), &config_map("applied"))
        .await
        .unwrap_err();
    assert_eq!(code(&error), None, "no answer at all: {error}");
    assert!(direct.get_opt("applied").await.unwrap().is_some());

    // A watch is cut mid-stream.
    proxy.add(Rule::new(
        Match::verb("watch", "configmaps"),
        Fault::CutAfter(Duration::from_millis(500)),
    ));
    let started = Instant::now();
    let mut events = via
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let ended = tokio::time::timeout(WAIT, async {
        let mut seen = 0;
        while let Some(Ok(_)) = events.next().await {
            seen += 1;
        }
        seen
    })
    .await
    .expect("the watch ends");
    assert!(ended >= 1, "the existing ConfigMaps came first: {ended}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(proxy.count("watch", "configmaps"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn held_requests_wait_for_their_release() {
    let (proxy, via, direct) = setup("fp-hold").await;
    let hold = proxy.add(Rule::new(Match::verb("create", "configmaps"), Fault::Hold));
    let create = |name: &'static str| {
        let via = via.clone();
        tokio::spawn(async move { via.create(&PostParams::default(), &config_map(name)).await })
    };

    let forwarded = create("late");
    testenv::wait::until("the create held", WAIT, || async {
        (proxy.held().len() == 1).then_some(())
    })
    .await
    .unwrap();
    assert!(
        direct.get_opt("late").await.unwrap().is_none(),
        "held, not applied"
    );
    assert_eq!(proxy.release_held(Release::Forward), 1);
    forwarded.await.unwrap().unwrap();
    assert!(direct.get_opt("late").await.unwrap().is_some());

    let dropped = create("dropped");
    testenv::wait::until("the create held", WAIT, || async {
        (proxy.held().len() == 1).then_some(())
    })
    .await
    .unwrap();
    proxy.remove(hold);
    assert_eq!(proxy.release_held(Release::Drop), 1);
    assert!(dropped.await.unwrap().is_err());
    assert!(direct.get_opt("dropped").await.unwrap().is_none());
}

//! The Helm chart, linted and rendered by the real `helm` (default values and the non-default
//! `ci/namespaced-values.yaml`), validated strictly against the Kubernetes 1.36 schemas, and
//! checked for what the operator needs: exact least-privilege RBAC in both modes, a restricted
//! pod, flags and env matching the operator's CLI, and consistent Service/ServiceMonitor/
//! NetworkPolicy/PDB selectors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use deploy_tests::{chart_dir, helm_template, object_id, of_kind, run_tool, yaml_docs};
use serde_norway::Value;

const NS: &str = "llmjob-system";

fn ci_values() -> String {
    chart_dir()
        .join("ci")
        .join("namespaced-values.yaml")
        .to_string_lossy()
        .into_owned()
}

fn render(extra: &[&str]) -> (String, Vec<Value>) {
    let text = helm_template(NS, extra).unwrap_or_else(|e| panic!("{e}"));
    let docs = yaml_docs(&text, "helm template output").unwrap_or_else(|e| panic!("{e}"));
    (text, docs)
}

fn render_default() -> (String, Vec<Value>) {
    render(&[])
}

fn render_ci() -> (String, Vec<Value>) {
    let values = ci_values();
    render(&["-f", &values])
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, got {}",
        found.len()
    );
    found[0]
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn helm_lint_strict_passes_with_default_and_ci_values() {
    let chart = chart_dir().to_string_lossy().into_owned();
    let values = ci_values();
    for extra in [vec![], vec!["-f", values.as_str()]] {
        let mut args = vec![
            "lint",
            "--strict",
            chart.as_str(),
            "--kube-version",
            "1.36.2",
        ];
        args.extend(extra.iter().copied());
        let out =
            run_tool("helm", &args, &deploy_tests::root(), &[]).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("0 chart(s) failed"),
            "helm lint output:\n{text}"
        );
        // --strict turns warnings into failures, but say it plainly if one slips through.
        assert!(!text.contains("[WARNING]"), "helm lint warned:\n{text}");
    }
}

/// Every object validates strictly against the Kubernetes 1.36 schemas; the only objects without
/// a schema are the ones we expect (custom resources: the CRD-typed ServiceMonitor).
fn assert_valid(text: &str, what: &str, allowed_missing: &[&str]) {
    let validation =
        deploy_tests::validate_kubernetes(text, what).unwrap_or_else(|e| panic!("{what}: {e}"));
    for warning in &validation.warnings {
        assert!(
            allowed_missing
                .iter()
                .any(|kind| warning.contains(&format!("kind {kind} "))),
            "{what}: unexpected validator warning: {warning}"
        );
    }
}

#[test]
fn default_render_is_valid_kubernetes_1_36() {
    let crd = chart_dir().join("crds").join("llmjobs.llmjob.dev.yaml");
    assert!(
        crd.is_file(),
        "{} is missing: run `cargo xtask manifests` (after `cargo xtask generate`)",
        crd.display()
    );
    let (text, docs) = render(&["--include-crds"]);
    assert_valid(&text, "default", &[]);
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    let want: BTreeSet<&str> = [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ]
    .into();
    assert_eq!(kinds, want, "kinds rendered with default values");
}

#[test]
fn ci_render_is_valid_kubernetes_1_36() {
    let (text, docs) = render_ci();
    assert_valid(&text, "ci-values", &["ServiceMonitor"]);
    for kind in ["ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget"] {
        one(&docs, kind);
    }
    assert!(of_kind(&docs, "ClusterRole").is_empty());
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
}

type Grant = (String, String, String, Option<String>);

/// (apiGroup, resource, verb, resourceName) for every grant of a Role/ClusterRole.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let names = strs(&rule["resourceNames"]);
        for group in strs(&rule["apiGroups"]) {
            for resource in strs(&rule["resources"]) {
                for verb in strs(&rule["verbs"]) {
                    if names.is_empty() {
                        out.insert((group.clone(), resource.clone(), verb, None));
                    } else {
                        for name in &names {
                            out.insert((
                                group.clone(),
                                resource.clone(),
                                verb.clone(),
                                Some(name.clone()),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The operator's needs, from the names contract: nothing more, nothing less.
fn operator_grants() -> BTreeSet<Grant> {
    let table: &[(&str, &str, &[&str])] = &[
        ("llmjob.dev", "llmjobs", &["get", "list", "watch"]),
        ("llmjob.dev", "llmjobs/status", &["get", "patch"]),
        ("llmjob.dev", "llmjobs/finalizers", &["update"]),
        (
            "batch",
            "jobs",
            &["get", "list", "watch", "create", "patch"],
        ),
        ("", "pods", &["get", "list", "watch"]),
        ("", "secrets", &["get", "list", "watch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ];
    let mut out = BTreeSet::new();
    for (group, resource, verbs) in table {
        for verb in *verbs {
            out.insert((
                group.to_string(),
                resource.to_string(),
                verb.to_string(),
                None,
            ));
        }
    }
    out
}

fn leader_election_grants(lease: &str) -> BTreeSet<Grant> {
    let g = |v: &str, n: Option<&str>| {
        (
            "coordination.k8s.io".to_owned(),
            "leases".to_owned(),
            v.to_owned(),
            n.map(str::to_owned),
        )
    };
    // What kube-lease-manager does: create the Lease, get it, and patch it to take, renew and
    // release it (helm_install.rs runs the operator with exactly these grants).
    [
        g("create", None),
        g("get", Some(lease)),
        g("patch", Some(lease)),
    ]
    .into()
}

fn assert_no_wildcards(text: &str) {
    for (i, line) in text.lines().enumerate() {
        let code = line.split('#').next().unwrap_or("");
        assert!(
            !code.contains('*'),
            "wildcard in rendered RBAC at line {}: {line}",
            i + 1
        );
    }
}

/// Every rule in the rendered text carries a comment saying why (`# Why: ...` right above it).
fn assert_every_rule_has_a_why(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- apiGroups:") {
            rules += 1;
            let mut j = i;
            let mut has_why = false;
            while j > 0 && lines[j - 1].trim_start().starts_with('#') {
                j -= 1;
                has_why |= lines[j].contains("Why:");
            }
            assert!(
                has_why,
                "RBAC rule without a `# Why:` comment: line {}: {line}",
                i + 1
            );
        }
    }
    assert!(rules > 0, "no RBAC rule found in the rendered text");
}

#[test]
fn cluster_wide_rbac_is_exactly_what_the_operator_needs() {
    let (text, docs) = render_default();
    let cluster_role = one(&docs, "ClusterRole");
    assert_eq!(
        grants(cluster_role),
        operator_grants(),
        "ClusterRole grants"
    );
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["namespace"], NS);
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);

    // The only namespaced Role is the leader-election one, in the release namespace.
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], NS);
    assert_eq!(grants(role), leader_election_grants("llmjob-operator"));
    let rb = one(&docs, "RoleBinding");
    assert_eq!(rb["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(rb["subjects"][0]["name"], sa["metadata"]["name"]);

    assert_no_wildcards(&text);
    assert_every_rule_has_a_why(&text);
    let secrets_comment = text
        .split("resources: [\"secrets\"]")
        .next()
        .and_then(|before| before.rsplit("- apiGroups").nth(1))
        .unwrap_or("");
    assert!(
        secrets_comment.contains("Secret") && secrets_comment.contains("exist"),
        "the Secrets rule must say why it is needed; comment above it: {secrets_comment}"
    );
}

#[test]
fn namespaced_rbac_has_one_role_per_watched_namespace_and_nothing_cluster_wide() {
    let (text, docs) = render_ci();
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "llmjob-operator-sa");
    let roles = of_kind(&docs, "Role");
    let mut watched = BTreeSet::new();
    let mut leader = 0;
    for role in &roles {
        let ns = role["metadata"]["namespace"].as_str().unwrap().to_owned();
        if ns == NS {
            leader += 1;
            assert_eq!(grants(role), leader_election_grants("llmjob-operator-test"));
        } else {
            assert_eq!(grants(role), operator_grants(), "Role in {ns}");
            watched.insert(ns);
        }
    }
    assert_eq!(
        leader, 1,
        "one leader-election Role in the release namespace"
    );
    assert_eq!(
        watched,
        BTreeSet::from(["team-a".to_owned(), "team-b".to_owned()])
    );
    let bindings = of_kind(&docs, "RoleBinding");
    assert_eq!(bindings.len(), 3);
    for rb in bindings {
        assert_eq!(
            rb["subjects"][0]["name"],
            "llmjob-operator-sa",
            "{}",
            object_id(rb)
        );
        assert_eq!(rb["subjects"][0]["namespace"], NS, "{}", object_id(rb));
        assert_eq!(rb["roleRef"]["kind"], "Role");
    }
    assert_no_wildcards(&text);
    assert_every_rule_has_a_why(&text);
}

#[test]
fn leader_election_off_drops_the_lease_role() {
    let (_, docs) = render(&["--set", "leaderElection.enabled=false"]);
    assert!(of_kind(&docs, "Role").is_empty());
    let args = strs(&one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(
        args.contains(&"--leader-elect=false".to_owned()),
        "{args:?}"
    );
}

#[test]
fn two_replicas_without_leader_election_are_refused() {
    let err = helm_template(
        NS,
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
    )
    .expect_err("two replicas without leader election must not render");
    assert!(err.to_string().contains("leaderElection.enabled"), "{err}");
}

fn env_of(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

fn env_value(env: &[(String, Value)], name: &str) -> Option<String> {
    env.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, e)| e["value"].as_str().map(str::to_owned))
}

#[test]
fn default_deployment_is_restricted_and_matches_the_operator_cli() {
    let (_, docs) = render_default();
    let deploy = one(&docs, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(
        pod["serviceAccountName"],
        one(&docs, "ServiceAccount")["metadata"]["name"]
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/llmjob-dev/llmjob-operator:0.1.0");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&sc["capabilities"]["drop"]), vec!["ALL"]);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    let args = strs(&c["args"]);
    for want in [
        "--runner-image=ghcr.io/llmjob-dev/llmjob-runner:0.1.0",
        "--default-otlp-endpoint=http://collector:4317",
        "--default-otlp-protocol=grpc",
        "--default-environment=development",
        "--http-addr=0.0.0.0:8080",
        "--leader-elect=true",
        "--leader-election-lease-name=llmjob-operator",
        "--log-format=text",
    ] {
        assert!(
            args.contains(&want.to_owned()),
            "missing {want} in {args:?}"
        );
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--watch-namespaces")),
        "cluster-wide by default: {args:?}"
    );

    let env = env_of(c);
    let pod_ns = env
        .iter()
        .find(|(n, _)| n == "POD_NAMESPACE")
        .expect("POD_NAMESPACE")
        .1
        .clone();
    assert_eq!(
        pod_ns["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env_value(&env, "RUST_LOG").as_deref(), Some("info"));
    assert_eq!(
        env_value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        None,
        "operator export is off by default"
    );

    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
    assert!(c["resources"]["requests"]["memory"].is_string());
}

#[test]
fn ci_values_reach_the_deployment() {
    let (_, docs) = render_ci();
    let deploy = one(&docs, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert!(pod["affinity"]["podAntiAffinity"].is_mapping());
    assert_eq!(pod["terminationGracePeriodSeconds"], 60);
    let meta = &deploy["spec"]["template"]["metadata"];
    assert_eq!(meta["labels"]["team"], "platform");
    assert_eq!(meta["annotations"]["example.com/scrape"], "true");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/llmjob-dev/llmjob-operator:0.1.0-test");
    assert_eq!(c["imagePullPolicy"], "Always");
    let args = strs(&c["args"]);
    for want in [
        "--runner-image=registry.example.com/llmjob/llmjob-runner:0.1.0-test",
        "--default-otlp-endpoint=http://otel-collector.observability:4318",
        "--default-otlp-protocol=http/protobuf",
        "--default-environment=staging",
        "--watch-namespaces=team-a,team-b",
        "--http-addr=0.0.0.0:9090",
        "--leader-election-lease-name=llmjob-operator-test",
        "--log-format=json",
    ] {
        assert!(
            args.contains(&want.to_owned()),
            "missing {want} in {args:?}"
        );
    }
    let env = env_of(c);
    assert_eq!(env_value(&env, "RUST_LOG").as_deref(), Some("debug"));
    assert_eq!(
        env_value(&env, "LLMJOB_RUNNER_IMAGE_PULL_POLICY").as_deref(),
        Some("Always")
    );
    assert_eq!(
        env_value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://otel-collector.observability:4317")
    );
    assert_eq!(
        env_value(&env, "OTEL_EXPORTER_OTLP_PROTOCOL").as_deref(),
        Some("grpc")
    );
    let attrs = env_value(&env, "OTEL_RESOURCE_ATTRIBUTES").unwrap();
    assert!(attrs.contains("k8s.cluster.name=test-cluster"), "{attrs}");
    assert_eq!(
        env_value(&env, "OTEL_TRACES_SAMPLER_ARG").as_deref(),
        Some("0.5")
    );
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    assert_eq!(c["resources"]["limits"]["cpu"], "1");
}

fn is_subset(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .map(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .unwrap_or(false)
}

#[test]
fn service_monitor_network_policy_and_pdb_select_the_operator_pods() {
    let (_, docs) = render_ci();
    let deploy = one(&docs, "Deployment");
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let svc = one(&docs, "Service");
    assert!(
        is_subset(&svc["spec"]["selector"], pod_labels),
        "Service selector"
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], 9090);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");

    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert!(is_subset(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    ));
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "15s");
    assert_eq!(
        strs(&sm["spec"]["namespaceSelector"]["matchNames"]),
        vec![NS]
    );

    let pdb = one(&docs, "PodDisruptionBudget");
    assert!(is_subset(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    let np = one(&docs, "NetworkPolicy");
    assert!(is_subset(
        &np["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], "http");
    let mut egress_ports = BTreeSet::new();
    for rule in np["spec"]["egress"].as_sequence().unwrap() {
        for port in rule["ports"].as_sequence().unwrap() {
            egress_ports.insert(port["port"].as_u64().unwrap());
        }
    }
    assert_eq!(egress_ports, BTreeSet::from([53, 443, 4317, 4318, 6443]));
    assert_eq!(
        np["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"],
        "10.0.0.1/32"
    );
}

#[test]
fn optional_objects_are_off_by_default() {
    let (_, docs) = render_default();
    for kind in ["ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget"] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
}

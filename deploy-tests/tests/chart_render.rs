//! The Helm chart, linted and rendered by the real `helm` (default values and the non-default
//! `ci/namespaced-values.yaml`), validated strictly against the Kubernetes 1.36 schemas, and
//! checked for what the operator needs: exact least-privilege RBAC in both modes, a restricted
//! pod whose security contexts are values (OpenShift), flags and env matching the operator's CLI,
//! consistent Service/ServiceMonitor/NetworkPolicy/PDB selectors, the CRD as a template, the
//! `helm test` hook, and the `kubeVersion` constraint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use deploy_tests::{
    KUBE_VERSION, chart_dir, helm_template, helm_template_raw, object_id, of_kind, run_tool,
    yaml_docs,
};
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
    let crd = chart_dir()
        .join("files")
        .join("crds")
        .join("llmjobs.llmjob.dev.yaml");
    assert!(
        crd.is_file(),
        "{} is missing: run `cargo xtask manifests` (after `cargo xtask generate`)",
        crd.display()
    );
    let (text, docs) = render_default();
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
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
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
        ("", "configmaps", &["get", "create", "patch"]),
        ("", "namespaces", &["get"]),
        ("events.k8s.io", "events", &["create", "patch"]),
        ("", "events", &["list"]),
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

/// The RBAC documents (Roles, ClusterRoles and their bindings) of a rendered multi-document text.
fn rbac_text(text: &str) -> String {
    text.split("\n---\n")
        .filter(|doc| {
            doc.lines().any(|l| {
                matches!(
                    l,
                    "kind: Role"
                        | "kind: ClusterRole"
                        | "kind: RoleBinding"
                        | "kind: ClusterRoleBinding"
                )
            })
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// No `*` in the rendered RBAC objects (comments aside).
fn assert_no_wildcards(text: &str) {
    let text = rbac_text(text);
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
    assert_no_secrets_rule(&docs, "helm template (default values)");
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
    assert_no_secrets_rule(&docs, "helm template (namespaced values)");
}

/// No Role or ClusterRole has a rule that names `secrets` (or a subresource of it): the operator
/// reads no Secret; a missing one is what the kubelet reports in the runner pod.
fn assert_no_secrets_rule(docs: &[Value], what: &str) {
    let mut roles = 0;
    for role in of_kind(docs, "Role")
        .into_iter()
        .chain(of_kind(docs, "ClusterRole"))
    {
        roles += 1;
        for rule in role["rules"].as_sequence().expect("rules") {
            for resource in strs(&rule["resources"]) {
                assert!(
                    resource != "secrets" && !resource.starts_with("secrets/"),
                    "{what}: {} has a rule on {resource}: the operator must read no Secret",
                    object_id(role)
                );
            }
        }
    }
    assert!(roles > 0, "{what}: no Role or ClusterRole rendered");
}

#[test]
fn manifests_install_yaml_has_no_rule_on_secrets() {
    let path = deploy_tests::manifests_dir().join("install.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = yaml_docs(&text, "install.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_no_secrets_rule(&docs, "manifests/install.yaml");
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
fn max_concurrent_reconciles_reaches_the_operator_and_is_checked() {
    let (_, docs) = render(&["--set", "maxConcurrentReconciles=0"]);
    let env = env_of(&one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(
        env_value(&env, "LLMJOB_MAX_CONCURRENT_RECONCILES").as_deref(),
        Some("0"),
        "0: no bound"
    );
    for bad in ["-1", "70000", "many"] {
        let err = helm_template(NS, &["--set", &format!("maxConcurrentReconciles={bad}")])
            .expect_err("the values schema refuses it");
        assert!(
            err.to_string().contains("maxConcurrentReconciles"),
            "{bad}: {err}"
        );
    }
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
    assert!(
        !args.iter().any(|a| a.starts_with("--trace-url-template")),
        "no trace links by default: {args:?}"
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
    assert_eq!(
        env_value(&env, "LLMJOB_MAX_CONCURRENT_RECONCILES"),
        Some(llmjob_operator::config::DEFAULT_MAX_CONCURRENT_RECONCILES.to_string()),
        "the chart's bound on reconciles in flight is the operator's default"
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
    assert_eq!(meta["labels"]["example.com/cost-center"], "ml-platform");
    let spread = pod["topologySpreadConstraints"].as_sequence().unwrap();
    assert_eq!(spread.len(), 2);
    assert_eq!(
        spread[0]["labelSelector"]["matchLabels"], deploy["spec"]["selector"]["matchLabels"],
        "a constraint without labelSelector spreads the operator's pods"
    );
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread[1]["labelSelector"]["matchLabels"]["team"], "platform",
        "an explicit labelSelector is kept"
    );
    assert_eq!(meta["annotations"]["example.com/scrape"], "true");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/llmjob-dev/llmjob-operator:0.1.0-test");
    assert_eq!(c["imagePullPolicy"], "Always");
    let args = strs(&c["args"]);
    assert_eq!(
        args.last().map(String::as_str),
        Some("--default-service-name=team-llm-jobs"),
        "extraArgs come last, so they win over the chart's flags: {args:?}"
    );
    for want in [
        // runner.image.digest wins over runner.image.tag.
        "--runner-image=registry.example.com/llmjob/llmjob-runner@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "--default-otlp-endpoint=http://otel-collector.observability:4318",
        "--default-otlp-protocol=http/protobuf",
        "--default-environment=staging",
        "--watch-namespaces=team-a,team-b",
        "--http-addr=0.0.0.0:9090",
        "--leader-election-lease-name=llmjob-operator-test",
        "--log-format=json",
        "--trace-url-template=http://jaeger-query.observability:16686/trace/{traceId}",
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
        sm["spec"]["endpoints"][0]["honorLabels"], true,
        "the operator's `namespace` label (the LlmJob's) must not become exported_namespace"
    );
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

#[test]
fn two_replicas_or_none_a_pdb_over_one_replica_is_refused() {
    for replicas in ["replicaCount=1", "replicaCount=0"] {
        let err = helm_template(
            NS,
            &[
                "--set",
                replicas,
                "--set",
                "podDisruptionBudget.enabled=true",
            ],
        )
        .expect_err("a PDB over a single replica must not render");
        let msg = err.to_string();
        assert!(
            msg.contains("podDisruptionBudget.enabled needs replicaCount >= 2")
                && msg.contains("block every node drain"),
            "{replicas}: {msg}"
        );
    }
    let (_, docs) = render(&[
        "--set",
        "replicaCount=2",
        "--set",
        "podDisruptionBudget.enabled=true",
    ]);
    one(&docs, "PodDisruptionBudget");
}

#[test]
fn openshift_can_leave_the_ids_to_its_scc() {
    // What the README tells OpenShift users: null the ids, keep the rest of the restricted settings.
    let (text, docs) = render(&[
        "--set",
        "securityContext.runAsUser=null",
        "--set",
        "securityContext.runAsGroup=null",
        "--set",
        "securityContext.fsGroup=null",
        "--set",
        "containerSecurityContext.runAsUser=null",
        "--set",
        "containerSecurityContext.runAsGroup=null",
    ]);
    assert_valid(&text, "openshift", &[]);
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    for sc in [&pod["securityContext"], &c["securityContext"]] {
        for id in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert!(sc.get(id).is_none(), "{id} still set: {sc:?}");
        }
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    }
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        strs(&c["securityContext"]["capabilities"]["drop"]),
        vec!["ALL"]
    );

    // A context can also be left out as a whole.
    let (_, docs) = render(&["--set", "securityContext=null"]);
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert!(pod.get("securityContext").is_none(), "{pod:?}");
}

/// `v` with every number as an f64 (a YAML `1.0` and `1` are the same number to the API server).
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        Value::Sequence(items) => Value::Sequence(items.iter().map(numbers_as_f64).collect()),
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn an_image_digest_wins_over_the_tag() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (_, docs) = render(&[
        "--set",
        "image.tag=9.9.9",
        "--set",
        &format!("image.digest={digest}"),
        "--set",
        &format!("runner.image.digest={digest}"),
    ]);
    let c = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"].as_str(),
        Some(format!("ghcr.io/llmjob-dev/llmjob-operator@{digest}").as_str())
    );
    let runner = format!("--runner-image=ghcr.io/llmjob-dev/llmjob-runner@{digest}");
    assert!(strs(&c["args"]).contains(&runner), "{:?}", c["args"]);
}

#[test]
fn common_labels_are_on_every_object_and_never_replace_the_charts() {
    let values = ci_values();
    let text = helm_template_raw(
        NS,
        &[
            "--kube-version",
            KUBE_VERSION,
            "-f",
            &values,
            "--set",
            "commonLabels.app\\.kubernetes\\.io/name=other",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let docs = yaml_docs(&text, "helm template").unwrap();
    assert!(of_kind(&docs, "CustomResourceDefinition").len() == 1);
    assert!(of_kind(&docs, "Pod").len() == 1, "the helm test pod");
    for obj in &docs {
        let labels = &obj["metadata"]["labels"];
        assert_eq!(
            labels["example.com/cost-center"],
            "ml-platform",
            "{}",
            object_id(obj)
        );
        assert_eq!(
            labels["app.kubernetes.io/name"],
            "llmjob-operator",
            "{}: commonLabels replaced a chart label",
            object_id(obj)
        );
    }
    let deploy = one(&docs, "Deployment");
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["example.com/cost-center"],
        "ml-platform"
    );
}

#[test]
fn the_crd_is_a_template_kept_on_uninstall_and_not_in_the_all_category() {
    let (_, docs) = render_default();
    let crd = one(&docs, "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "llmjobs.llmjob.dev");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    // GitOps tools ignore Helm's policy: deleting an Argo CD Application or pruning a Flux
    // HelmRelease must not delete the CRD (and every LlmJob with it) either.
    assert_eq!(
        crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"],
        "Delete=false"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/prune"],
        "disabled"
    );
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/part-of"],
        "llmjob-operator"
    );
    // `kubectl delete all --all` must not delete LlmJobs (and their results).
    assert_eq!(strs(&crd["spec"]["names"]["categories"]), vec!["llmjob"]);
    // The rendered CRD is the generated one: the template adds metadata only.
    let source = std::fs::read_to_string(deploy_tests::crd_file()).unwrap();
    let mut source = numbers_as_f64(&serde_norway::from_str(&source).unwrap());
    let mut rendered = numbers_as_f64(crd);
    source["metadata"] = Value::Null;
    rendered["metadata"] = Value::Null;
    assert!(
        source == rendered,
        "the chart's CRD differs from crds/llmjobs.llmjob.dev.yaml beyond its metadata"
    );

    let (_, docs) = render(&["--set", "crds.keep=false"]);
    let crd = one(&docs, "CustomResourceDefinition");
    assert!(crd["metadata"].get("annotations").is_none(), "{crd:?}");
    let (_, docs) = render(&["--set", "crds.enabled=false"]);
    assert!(of_kind(&docs, "CustomResourceDefinition").is_empty());
}

#[test]
fn helm_test_hook_checks_the_operator_with_its_own_image_and_minimal_rbac() {
    let text = helm_template_raw(
        NS,
        &[
            "--kube-version",
            KUBE_VERSION,
            "--show-only",
            "templates/tests/operator-ready.yaml",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_valid(&text, "helm test hook", &[]);
    assert_every_rule_has_a_why(&text);
    assert_no_wildcards(&text);
    let docs = yaml_docs(&text, "helm test hook").unwrap();
    for obj in &docs {
        assert_eq!(
            obj["metadata"]["annotations"]["helm.sh/hook"],
            "test",
            "{}",
            object_id(obj)
        );
        assert_eq!(
            obj["metadata"]["labels"]["app.kubernetes.io/component"],
            "test",
            "{}: must not carry the operator pods' selector labels",
            object_id(obj)
        );
    }
    let pod = one(&docs, "Pod");
    let (_, install) = render_default();
    let operator = &one(&install, "Deployment")["spec"]["template"]["spec"];
    let c = &pod["spec"]["containers"][0];
    assert_eq!(
        c["image"], operator["containers"][0]["image"],
        "the test runs the operator's image"
    );
    assert_eq!(
        strs(&c["args"]),
        vec![
            "check",
            "--namespace=llmjob-system",
            "--deployment=llmjob-operator"
        ]
    );
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["securityContext"], operator["securityContext"]);
    assert_eq!(
        c["securityContext"],
        operator["containers"][0]["securityContext"]
    );
    let sa = one(&docs, "ServiceAccount");
    assert_eq!(pod["spec"]["serviceAccountName"], sa["metadata"]["name"]);
    let rb = one(&docs, "RoleBinding");
    assert_eq!(rb["subjects"][0]["name"], sa["metadata"]["name"]);
    let role = one(&docs, "Role");
    assert_eq!(rb["roleRef"]["name"], role["metadata"]["name"]);
    let g = |group: &str, resource: &str, verb: &str, name: Option<&str>| {
        (
            group.to_owned(),
            resource.to_owned(),
            verb.to_owned(),
            name.map(str::to_owned),
        )
    };
    assert_eq!(
        grants(role),
        BTreeSet::from([
            g("llmjob.dev", "llmjobs", "list", None),
            g("apps", "deployments", "get", Some("llmjob-operator")),
        ])
    );
}

/// The chart's `kubeVersion` (`>=1.30.0-0`) is what the CRD (CEL rules with `fieldPath`, GA in
/// 1.29), the operator's Jobs (`podReplacementPolicy`, on by default from 1.29) and the tenancy
/// ValidatingAdmissionPolicy (`admissionregistration.k8s.io/v1` and CEL's IP library, 1.30) need; the
/// README says so and tells `helm template` users to pass `--kube-version`.
#[test]
fn kube_version_constraint_is_what_the_chart_needs() {
    let chart: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["kubeVersion"], ">=1.30.0-0");

    // Without --kube-version, helm checks its built-in default: the project's helm is built with
    // the pinned control plane's version (tools/ensure-tools.sh), as Helm's releases are built
    // with their client-go's, so a plain `helm template` renders.
    let text = helm_template_raw(NS, &[]).unwrap_or_else(|e| {
        panic!("`helm template` without --kube-version must render with this helm: {e}")
    });
    assert!(text.contains("kind: Deployment"));

    // What a helm with an older default (a plain `go install` of Helm: 1.20) does, and the
    // boundary of the constraint.
    for old in ["1.20.0", "1.29.9"] {
        let err = helm_template_raw(NS, &["--kube-version", old])
            .expect_err("an API server older than 1.30 must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains("chart requires kubeVersion: >=1.30.0-0"),
            "{old}: {msg}"
        );
    }
    helm_template_raw(NS, &["--kube-version", "1.30.0"]).unwrap_or_else(|e| panic!("{e}"));
    // Managed clusters report pre-release versions (v1.30.4-eks-…): the `-0` accepts them.
    helm_template_raw(NS, &["--kube-version", "1.30.4-eks-036c24b"])
        .unwrap_or_else(|e| panic!("{e}"));

    let readme = std::fs::read_to_string(chart_dir().join("README.md.gotmpl")).unwrap();
    assert!(
        readme.contains("--kube-version"),
        "README.md.gotmpl must tell `helm template` users to pass --kube-version"
    );
}

/// The tenant policy (docs/security.md): the ValidatingAdmissionPolicy and its binding are on by
/// default and refuse; the `tenancy.*` values loosen the policy cluster-wide and reach the
/// operator as the same settings; the binding follows `watchNamespaces`; it can be turned off.
#[test]
fn the_tenancy_policy_follows_the_values_and_the_operator_gets_the_same() {
    let env_of = |docs: &[Value]| -> Vec<(String, String)> {
        one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .filter(|(n, _)| {
                n.starts_with("LLMJOB_ALLOW")
                    || n == "LLMJOB_RUNNER_SERVICE_ACCOUNT"
                    || n == "LLMJOB_CLUSTER_DOMAIN"
            })
            .collect()
    };
    let variables = |docs: &[Value]| -> Vec<String> {
        one(docs, "ValidatingAdmissionPolicy")["spec"]["variables"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with("allow")))
            .map(|v| v["expression"].as_str().unwrap().to_owned())
            .collect()
    };

    let (_, docs) = render_default();
    let policy = one(&docs, "ValidatingAdmissionPolicy");
    let binding = one(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(strs(&binding["spec"]["validationActions"]), ["Deny"]);
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    assert!(
        binding["spec"].get("matchResources").is_none(),
        "every namespace by default"
    );
    let defaults = variables(&docs);
    assert_eq!(defaults.len(), 3);
    for (expr, label) in defaults.iter().zip([
        "llmjob.dev/allow-env-refs",
        "llmjob.dev/allow-service-accounts",
        "llmjob.dev/allow-insecure-base-url",
    ]) {
        assert!(
            expr.starts_with("false || ") && expr.contains(label),
            "{expr}"
        );
    }
    assert_eq!(
        env_of(&docs),
        [
            ("LLMJOB_RUNNER_SERVICE_ACCOUNT", ""),
            ("LLMJOB_ALLOW_ENV_REFS", "false"),
            ("LLMJOB_ALLOW_SERVICE_ACCOUNTS", "false"),
            ("LLMJOB_ALLOW_INSECURE_BASE_URL", "false"),
            ("LLMJOB_CLUSTER_DOMAIN", "cluster.local"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    let (text, docs) = render(&[
        "--set",
        "tenancy.allowEnvRefs=true,tenancy.allowServiceAccounts=true,tenancy.allowInsecureBaseURL=true",
        "--set",
        "runner.serviceAccountName=llm-runner,tenancy.clusterDomain=corp.internal",
        "--set",
        "tenancy.admissionPolicy.validationActions={Warn,Audit}",
    ]);
    assert_valid(&text, "tenancy values", &[]);
    assert!(
        variables(&docs).iter().all(|e| e.starts_with("true || ")),
        "{:?}",
        variables(&docs)
    );
    assert!(text.contains("variables.serviceAccount == 'llm-runner'"));
    assert!(text.contains("endsWith('.svc.corp.internal')"));
    assert_eq!(
        strs(&one(&docs, "ValidatingAdmissionPolicyBinding")["spec"]["validationActions"]),
        ["Warn", "Audit"]
    );
    assert!(env_of(&docs).iter().all(|(n, v)| match n.as_str() {
        "LLMJOB_RUNNER_SERVICE_ACCOUNT" => v == "llm-runner",
        "LLMJOB_CLUSTER_DOMAIN" => v == "corp.internal",
        _ => v == "true",
    }));

    let (_, docs) = render_ci();
    let selector = &one(&docs, "ValidatingAdmissionPolicyBinding")["spec"]["matchResources"]["namespaceSelector"]
        ["matchExpressions"][0];
    assert_eq!(selector["key"], "kubernetes.io/metadata.name");
    assert_eq!(strs(&selector["values"]), ["team-a", "team-b"]);

    let (_, docs) = render(&["--set", "tenancy.admissionPolicy.enabled=false"]);
    assert!(of_kind(&docs, "ValidatingAdmissionPolicy").is_empty());
    assert!(of_kind(&docs, "ValidatingAdmissionPolicyBinding").is_empty());
}

/// `metrics.secure.enabled`: /metrics moves to an HTTPS port the Service, the ServiceMonitor and
/// the NetworkPolicy follow; the operator gets its settings, the mounted certificate when one is
/// named, and exactly `create` on TokenReviews and SubjectAccessReviews; a metrics-reader
/// ClusterRole is there to bind; the probes stay on the plain port.
#[test]
fn secure_metrics_are_https_with_token_review_rbac() {
    let (text, docs) = render(&[
        "--set",
        "metrics.secure.enabled=true,metrics.secure.certSecret=operator-tls",
        "--set",
        "metrics.serviceMonitor.enabled=true,networkPolicy.enabled=true",
    ]);
    assert_valid(&text, "secure metrics", &["ServiceMonitor"]);
    let deployment = one(&docs, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert!(env.contains(&(
        "LLMJOB_METRICS_SECURE_ADDR".to_owned(),
        "0.0.0.0:8443".to_owned()
    )));
    assert!(env.contains(&(
        "LLMJOB_METRICS_CERT_DIR".to_owned(),
        "/etc/llmjob-operator/metrics-tls".to_owned()
    )));
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "operator-tls"),
        "{volumes:?}"
    );
    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["name"], "https");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics-https");
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "https");
    let policy = one(&docs, "NetworkPolicy");
    assert!(
        strs(&Value::Sequence(
            policy["spec"]["ingress"][0]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| p["port"].clone())
                .collect()
        ))
        .contains(&"metrics-https".to_owned())
    );

    let roles = of_kind(&docs, "ClusterRole");
    let auth = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "llmjob-operator-metrics-auth")
        .expect("the metrics-auth ClusterRole");
    let want: BTreeSet<Grant> = [
        ("authentication.k8s.io", "tokenreviews"),
        ("authorization.k8s.io", "subjectaccessreviews"),
    ]
    .iter()
    .map(|(g, r)| (g.to_string(), r.to_string(), "create".to_owned(), None))
    .collect();
    assert_eq!(grants(auth), want);
    let reader = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "llmjob-operator-metrics-reader")
        .expect("the metrics-reader ClusterRole");
    assert_eq!(strs(&reader["rules"][0]["nonResourceURLs"]), ["/metrics"]);
    assert_eq!(strs(&reader["rules"][0]["verbs"]), ["get"]);
    assert!(
        of_kind(&docs, "ClusterRoleBinding")
            .iter()
            .any(|b| b["roleRef"]["name"] == "llmjob-operator-metrics-auth")
    );
    assert_no_secrets_rule(&docs, "helm template (secure metrics)");

    // Without a certificate Secret: self-signed, nothing mounted, the ServiceMonitor skips
    // verification.
    let (_, docs) = render(&[
        "--set",
        "metrics.secure.enabled=true,metrics.serviceMonitor.enabled=true",
    ]);
    let container = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(
        !serde_norway::to_string(container)
            .unwrap()
            .contains("LLMJOB_METRICS_CERT_DIR")
    );
    assert_eq!(
        one(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["tlsConfig"]["insecureSkipVerify"],
        true
    );
}

//! `values.schema.json` rejects wrong values at `helm template`/`install` time with a message
//! naming the key, and accepts every value documented as valid. Also: every key of
//! `values.yaml` has a `# --` comment, so it is in the README's table (which helm-docs generates
//! from those comments; `generated.rs` checks the README is current).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use deploy_tests::{chart_dir, helm_template};

const NS: &str = "llmjob-system";

/// (what is wrong, helm arguments, a substring the error must contain).
const BAD_VALUES: &[(&str, &[&str], &str)] = &[
    (
        "negative replicas",
        &["--set", "replicaCount=-1"],
        "replicaCount",
    ),
    (
        "replicas as a string",
        &["--set-string", "replicaCount=two"],
        "replicaCount",
    ),
    (
        "unknown top-level key",
        &["--set", "replicas=2"],
        "replicas",
    ),
    (
        "unknown nested key",
        &["--set", "image.sha=sha256:abc"],
        "sha",
    ),
    (
        "image digest that is a tag",
        &["--set", "image.digest=latest"],
        "digest",
    ),
    (
        "runner image digest too short",
        &["--set", "runner.image.digest=sha256:abc"],
        "digest",
    ),
    (
        "extraArgs as a string",
        &["--set", "extraArgs=--x"],
        "extraArgs",
    ),
    (
        "extra arg that is not a flag",
        &["--set", "extraArgs[0]=check"],
        "extraArgs",
    ),
    (
        "common label value not a string",
        &["--set-json", "commonLabels={\"team\":{\"a\":1}}"],
        "commonLabels",
    ),
    (
        "topology spread constraint without topologyKey",
        &[
            "--set-json",
            "topologySpreadConstraints=[{\"maxSkew\":1,\"whenUnsatisfiable\":\"ScheduleAnyway\"}]",
        ],
        "topologyKey",
    ),
    (
        "uid as a string",
        &["--set-string", "securityContext.runAsUser=nobody"],
        "runAsUser",
    ),
    (
        "crds.enabled as a string",
        &["--set-string", "crds.enabled=yes"],
        "enabled",
    ),
    (
        "bad default OTLP protocol",
        &["--set", "defaults.otlp.protocol=http/json"],
        "protocol",
    ),
    (
        "bad operator OTLP protocol",
        &["--set", "operatorTelemetry.otlp.protocol=udp"],
        "protocol",
    ),
    (
        "bad log format",
        &["--set", "logging.format=yaml"],
        "format",
    ),
    ("port out of range", &["--set", "http.port=70000"], "port"),
    (
        "port as a string",
        &["--set-string", "http.port=http"],
        "port",
    ),
    (
        "watchNamespaces as a string",
        &["--set", "watchNamespaces=team-a"],
        "watchNamespaces",
    ),
    (
        "invalid namespace name",
        &["--set", "watchNamespaces[0]=Team_A"],
        "watchNamespaces",
    ),
    (
        "bad image pull policy",
        &["--set", "image.pullPolicy=Sometimes"],
        "pullPolicy",
    ),
    (
        "bad runner pull policy",
        &["--set", "runner.image.pullPolicy=sometimes"],
        "pullPolicy",
    ),
    (
        "leader election as a string",
        &["--set-string", "leaderElection.enabled=yes"],
        "enabled",
    ),
    (
        "bad scrape interval",
        &["--set", "metrics.serviceMonitor.interval=soon"],
        "interval",
    ),
    (
        "negative grace period",
        &["--set", "terminationGracePeriodSeconds=-5"],
        "terminationGracePeriodSeconds",
    ),
    (
        "empty runner repository",
        &["--set", "runner.image.repository="],
        "repository",
    ),
    (
        "trace URL template without {traceId}",
        &["--set", "traceURLTemplate=http://jaeger:16686/trace/"],
        "traceURLTemplate",
    ),
    (
        "trace URL template that is not an http(s) URL",
        &["--set", "traceURLTemplate=jaeger:16686/trace/{traceId}"],
        "traceURLTemplate",
    ),
    (
        "bad PDB minAvailable",
        &["--set-string", "podDisruptionBudget.minAvailable=half"],
        "minAvailable",
    ),
];

#[test]
fn wrong_values_are_rejected_with_a_message_naming_the_key() {
    let mut problems = Vec::new();
    for (what, args, key) in BAD_VALUES {
        match helm_template(NS, args) {
            Ok(_) => problems.push(format!("{what} ({args:?}): rendered without error")),
            Err(err) => {
                let msg = err.to_string();
                if !msg.contains("values don't meet the specifications of the schema") {
                    problems.push(format!("{what}: not a schema error: {msg}"));
                } else if !msg.contains(key) {
                    problems.push(format!("{what}: error does not mention `{key}`: {msg}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn documented_valid_values_are_accepted() {
    let cases: &[&[&str]] = &[
        &["--set", "defaults.otlp.protocol=http/protobuf"],
        &["--set", "logging.format=json"],
        &["--set", "replicaCount=0"],
        &["--set", "watchNamespaces={a,b}"],
        &["--set-string", "podDisruptionBudget.minAvailable=50%"],
        &["--set", "metrics.serviceMonitor.interval=1m30s"],
        &[
            "--set",
            "image.tag=0.2.0",
            "--set",
            "runner.image.tag=0.2.0",
        ],
        &[
            "--set",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ],
        // OpenShift (README): the SCC assigns the ids.
        &[
            "--set",
            "securityContext.runAsUser=null",
            "--set",
            "securityContext.fsGroup=null",
            "--set",
            "containerSecurityContext.runAsUser=null",
        ],
        &[
            "--set",
            "extraArgs={--default-service-name=x,--log-format=json}",
        ],
        &["--set", "commonLabels.team=platform"],
        &[
            "--set",
            "traceURLTemplate=http://jaeger:16686/trace/{traceId}",
        ],
        &[
            "--set-string",
            r#"traceURLTemplate=https://grafana.example.com/explore?left={"datasource":"tempo"\,"queries":[{"query":"{traceId}"}]}"#,
        ],
        &["--set", "crds.enabled=false", "--set", "crds.keep=false"],
        &[
            "--set-json",
            "topologySpreadConstraints=[{\"maxSkew\":1,\"topologyKey\":\"kubernetes.io/hostname\",\"whenUnsatisfiable\":\"DoNotSchedule\"}]",
        ],
    ];
    for args in cases {
        helm_template(NS, args).unwrap_or_else(|e| panic!("{args:?} should render: {e}"));
    }
}

/// Keys documented and typed as a whole (Kubernetes objects), not key by key.
const WHOLE: &[&str] = &[
    "resources",
    "securityContext",
    "containerSecurityContext",
    "networkPolicy.dns.to",
];

/// Dotted paths of every leaf (and every empty map/list) of a YAML mapping.
fn leaf_keys(prefix: &str, v: &serde_norway::Value, out: &mut BTreeSet<String>) {
    match v.as_mapping() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                let k = k.as_str().unwrap_or_default();
                let path = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k}")
                };
                if WHOLE.contains(&path.as_str()) {
                    out.insert(path);
                } else {
                    leaf_keys(&path, child, out);
                }
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// The README's values table (generated by helm-docs): key → description.
fn readme_rows() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let key = l.split('`').nth(1)?.to_owned();
            let description = l
                .trim_end_matches('|')
                .rsplit(" | ")
                .next()?
                .trim()
                .to_owned();
            Some((key, description))
        })
        .collect()
}

#[test]
fn every_value_is_documented_in_the_readme_table() {
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let values: serde_norway::Value = serde_norway::from_str(&values).unwrap();
    let mut keys = BTreeSet::new();
    leaf_keys("", &values, &mut keys);
    let rows = readme_rows();
    let documented: BTreeSet<String> = rows.iter().map(|(k, _)| k.clone()).collect();
    let missing: Vec<_> = keys.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "values without a `# --` comment in values.yaml (or README.md is stale: run `cargo xtask \
         manifests`): {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&keys).collect();
    assert!(
        stale.is_empty(),
        "README documents values that do not exist: {stale:?}"
    );
    let undescribed: Vec<_> = rows
        .iter()
        .filter(|(_, d)| d.is_empty())
        .map(|(k, _)| k)
        .collect();
    assert!(
        undescribed.is_empty(),
        "values without a description: {undescribed:?}"
    );
}

#[test]
fn every_value_is_typed_in_the_schema() {
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let values: serde_norway::Value = serde_norway::from_str(&values).unwrap();
    let schema = std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&schema).unwrap();
    let mut keys = BTreeSet::new();
    leaf_keys("", &values, &mut keys);
    for key in keys {
        let mut node = &schema;
        for part in key.split('.') {
            node = &node["properties"][part];
        }
        assert!(
            node.get("type").is_some() || node.get("oneOf").is_some(),
            "values.schema.json has no type for `{key}`"
        );
    }
}

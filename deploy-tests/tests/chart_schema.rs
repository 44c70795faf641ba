//! `values.schema.json` rejects wrong values at `helm template`/`install` time with a message
//! naming the key, and accepts every value documented as valid. Also: every key of
//! `values.yaml` is documented in the chart README's table.

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
        &["--set", "image.digest=sha256:abc"],
        "digest",
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
    ];
    for args in cases {
        helm_template(NS, args).unwrap_or_else(|e| panic!("{args:?} should render: {e}"));
    }
}

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
                // resources and the DNS peers are documented as a whole.
                if path == "resources" || path == "networkPolicy.dns.to" {
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

#[test]
fn every_value_is_documented_in_the_readme_table() {
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let values: serde_norway::Value = serde_norway::from_str(&values).unwrap();
    let mut keys = BTreeSet::new();
    leaf_keys("", &values, &mut keys);
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let documented: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect();
    let missing: Vec<_> = keys.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "values missing from the README table: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&keys).collect();
    assert!(
        stale.is_empty(),
        "README documents values that do not exist: {stale:?}"
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

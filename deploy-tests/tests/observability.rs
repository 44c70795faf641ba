//! The observability artefacts the chart ships, off by default:
//!
//! - the Grafana dashboards (`charts/llmjob-operator/dashboards/*.json`): valid JSON, every panel
//!   on the `datasource` variable with at least one query, every query valid PromQL (parsed by
//!   `promql-parser`) naming only metrics that exist: the operator's, as its own registry encodes
//!   them, and the runner's, from the metrics table of docs/job-runner.md translated as
//!   Prometheus translates OTLP names (units, `_total`, `_bucket`/`_sum`/`_count`). Whether the
//!   queries return data is the backends test's (`job-runner/tests/backends.rs`), against a real
//!   Prometheus fed by real runs;
//! - the alert rules (`charts/llmjob-operator/rules/llmjob.rules.yaml`): `promtool check rules`
//!   and `promtool test rules` (series in, alerts out), the real promtool from
//!   `tools/ensure-tools.sh`; a missing promtool fails the test;
//! - the chart renders both (ConfigMaps with the sidecar label, a PrometheusRule holding exactly
//!   the rule file) when enabled, and neither by default.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use deploy_tests::{chart_dir, helm_template, of_kind, root, run_tool, yaml_docs};
use promql_parser::parser::{self, Expr};
use serde_json::Value;

const NS: &str = "llmjob-system";

fn dashboards() -> Vec<(String, Value)> {
    let dir = chart_dir().join("dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The metric names the operator exports, from its own registry after one call of each of its
/// recording methods (a labelled family shows only once it has a series): `# TYPE` lines, with
/// the sample suffixes of each type.
fn operator_metrics() -> BTreeSet<String> {
    use llmjob_crds::v1alpha1::Phase;
    let m = llmjob_operator::metrics::Metrics::new();
    m.error("ReadFailed");
    m.fresh_read("create");
    m.set_phases([Some(Phase::Pending)]);
    m.set_runner_image("runner:1");
    m.count_run("ns", Phase::Succeeded, "Succeeded", Some(1));
    let result = llmjob_crds::result::RunResult::parse(
        r#"{"status":"succeeded","usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3}}"#,
    )
    .unwrap();
    m.count_tokens("ns", "gpt-4o-mini", &result);
    let text = m.encode().unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => names.insert(format!("{name}_total")),
            "gauge" => names.insert(name.to_owned()),
            "info" => names.insert(format!("{name}_info")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
                true
            }
            other => panic!("metric {name} of unexpected type {other}"),
        };
    }
    assert!(names.len() > 5, "{text}");
    names
}

/// The metric names of the runs in Prometheus, from the runner's documented metrics
/// (docs/job-runner.md, "### Metrics" table), translated as Prometheus translates OTLP metrics:
/// `.` → `_`, the unit `s` → `_seconds` (a `{…}` annotation unit is dropped), counters get
/// `_total`, histograms `_bucket`, `_sum` and `_count`.
fn runner_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs").join("job-runner.md")).unwrap();
    let table = doc
        .split("### Metrics")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("docs/job-runner.md has a ### Metrics section");
    let mut names = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `gen_ai.")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').replace('.', "_");
        let (kind, unit) = cells[2].split_once(',').unwrap();
        let unit = unit.trim().trim_matches('`');
        let base = match unit {
            "s" => format!("{name}_seconds"),
            u if u.starts_with('{') => name.clone(),
            u => panic!("unit {u} of {name}: add its Prometheus translation here"),
        };
        match kind.trim() {
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{base}{suffix}"));
                }
            }
            "counter" => {
                names.insert(format!("{base}_total"));
            }
            other => panic!("instrument {other} of {name}: add its translation here"),
        }
    }
    assert!(
        names.contains("gen_ai_client_token_usage_sum")
            && names.contains("gen_ai_client_operation_duration_seconds_bucket"),
        "{names:?}"
    );
    names
}

/// Every metric a query may name: the operator's, the runs', and Prometheus' own `up`.
fn known_metrics() -> BTreeSet<String> {
    let mut all = operator_metrics();
    all.extend(runner_metrics());
    all.insert("up".to_owned());
    all
}

/// Grafana's interval variables, which PromQL does not know, replaced by a duration.
fn without_grafana_intervals(expr: &str) -> String {
    ["$__rate_interval", "$__interval", "$__range"]
        .iter()
        .fold(expr.to_owned(), |e, v| e.replace(v, "5m"))
}

/// The metric names a PromQL expression selects.
fn selected_metrics(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::VectorSelector(vs) => {
            let name = vs.name.clone().or_else(|| {
                vs.matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__")
                    .map(|m| m.value.clone())
            });
            out.insert(name.expect("a selector without a metric name"));
        }
        Expr::MatrixSelector(ms) => selected_metrics(&Expr::VectorSelector(ms.vs.clone()), out),
        Expr::Aggregate(a) => {
            selected_metrics(&a.expr, out);
            if let Some(p) = &a.param {
                selected_metrics(p, out);
            }
        }
        Expr::Unary(u) => selected_metrics(&u.expr, out),
        Expr::Binary(b) => {
            selected_metrics(&b.lhs, out);
            selected_metrics(&b.rhs, out);
        }
        Expr::Paren(p) => selected_metrics(&p.expr, out),
        Expr::Subquery(s) => selected_metrics(&s.expr, out),
        Expr::Call(c) => {
            for arg in &c.args.args {
                selected_metrics(arg, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::Extension(_) => panic!("unexpected extension expression"),
    }
}

#[test]
fn dashboards_are_valid_and_query_only_exported_metrics() {
    let known = known_metrics();
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["llmjob-operator.json", "llmjob-usage.json"]);
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (file, dash) in &all {
        let uid = dash["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty() && uid.len() <= 40, "{file}: uid {uid:?}");
        let vars = dash["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{file}: no Prometheus `datasource` variable"
        );
        for var in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(var["datasource"]["uid"], "${datasource}", "{file}: {var}");
        }
        let panels = dash["panels"].as_array().expect("panels");
        let mut seen = 0;
        for panel in panels.iter().filter(|p| p["type"] != "row") {
            seen += 1;
            let title = panel["title"].as_str().unwrap_or("?");
            let at = format!("{file}: panel {title:?}");
            if panel["datasource"]["uid"] != "${datasource}" {
                problems.push(format!("{at}: datasource is not ${{datasource}}"));
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{at}: no query"));
            }
            for target in &targets {
                if target["datasource"]["uid"] != "${datasource}" {
                    problems.push(format!("{at}: a query's datasource is not ${{datasource}}"));
                }
                let expr = target["expr"].as_str().unwrap_or_default();
                match parser::parse(&without_grafana_intervals(expr)) {
                    Err(e) => problems.push(format!("{at}: {expr:?} is not PromQL: {e}")),
                    Ok(ast) => {
                        let mut metrics = BTreeSet::new();
                        selected_metrics(&ast, &mut metrics);
                        for m in metrics {
                            if !known.contains(&m) {
                                problems.push(format!("{at}: no component exports {m}"));
                            }
                            used.insert(m);
                        }
                    }
                }
            }
        }
        assert!(seen >= 5, "{file}: only {seen} panels");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // What issue 16 asks of the dashboards is there.
    for m in [
        "gen_ai_client_token_usage_sum",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_operation_duration_seconds_count",
        "llmjob_operator_llmjobs",
        "llmjob_operator_run_attempts_total",
        "llmjob_operator_reconciles_total",
        "llmjob_operator_reconcile_errors_total",
        "llmjob_operator_reconciles_in_flight",
        "llmjob_operator_leader",
        "llmjob_operator_runner_image_info",
    ] {
        assert!(used.contains(m), "no panel queries {m}");
    }
}

/// The known metrics parse and the checker finds a metric nobody exports (the test can fail).
#[test]
fn the_metric_check_catches_unknown_names() {
    let known = known_metrics();
    let ast = parser::parse(&without_grafana_intervals(
        "sum(rate(gen_ai_client_token_usage_total[$__rate_interval])) / on() llmjob_operator_leader",
    ))
    .unwrap();
    let mut metrics = BTreeSet::new();
    selected_metrics(&ast, &mut metrics);
    let unknown: Vec<&String> = metrics.iter().filter(|m| !known.contains(*m)).collect();
    assert_eq!(unknown, [&"gen_ai_client_token_usage_total".to_owned()]);
    assert!(parser::parse("sum(rate(x[5m])").is_err());
}

fn rules_dir() -> PathBuf {
    chart_dir().join("rules")
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = rules_dir();
    let out = run_tool(
        "promtool",
        &["check", "rules", "llmjob.rules.yaml"],
        &dir,
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
    let out = run_tool(
        "promtool",
        &["test", "rules", "tests/llmjob.rules.test.yaml"],
        &dir,
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_is_unit_tested_and_the_rules_name_only_exported_metrics() {
    let rules: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(rules_dir().join("llmjob.rules.yaml")).unwrap(),
    )
    .unwrap();
    let tests =
        std::fs::read_to_string(rules_dir().join("tests").join("llmjob.rules.test.yaml")).unwrap();
    let known = known_metrics();
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_owned();
            let expr = rule["expr"].as_str().unwrap();
            let ast = parser::parse(expr).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut metrics = BTreeSet::new();
            selected_metrics(&ast, &mut metrics);
            for m in metrics {
                assert!(known.contains(&m), "{name}: no component exports {m}");
            }
            assert!(
                tests.contains(&format!(
                    "alertname: {name}\n        exp_alerts:\n          - exp_labels"
                )),
                "{name} is never tested firing"
            );
            assert!(
                tests.contains(&format!("alertname: {name}\n        exp_alerts: []")),
                "{name} is never tested quiet"
            );
            alerts.insert(name);
        }
    }
    let want: BTreeSet<String> = [
        "LlmJobFailureRateHigh",
        "LlmJobRateLimited",
        "LlmJobOperatorDown",
        "LlmJobOperatorNotLeading",
        "LlmJobOperatorReconcileErrors",
        "LlmJobsStuckPending",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(alerts, want);
}

#[test]
fn the_chart_ships_dashboards_and_rules_only_when_enabled() {
    let text = helm_template(NS, &[]).unwrap_or_else(|e| panic!("{e}"));
    let docs = yaml_docs(&text, "default").unwrap();
    assert!(
        of_kind(&docs, "ConfigMap").is_empty(),
        "dashboards are off by default"
    );
    assert!(
        of_kind(&docs, "PrometheusRule").is_empty(),
        "alerts are off by default"
    );

    let text = helm_template(
        NS,
        &[
            "--set",
            "dashboards.enabled=true",
            "--set",
            "dashboards.namespace=monitoring",
            "--set",
            "dashboards.label=my_dashboards",
            "--set",
            "dashboards.labelValue=llm",
            "--set",
            "dashboards.annotations.grafana_folder=LlmJobs",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.labels.release=prometheus",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let docs = yaml_docs(&text, "enabled").unwrap();
    let maps = of_kind(&docs, "ConfigMap");
    let files = dashboards();
    assert_eq!(maps.len(), files.len());
    for (file, json) in &files {
        let map = maps
            .iter()
            .find(|m| m["data"].get(file.as_str()).is_some())
            .unwrap_or_else(|| panic!("no ConfigMap holds {file}"));
        assert_eq!(map["metadata"]["namespace"], "monitoring");
        assert_eq!(map["metadata"]["labels"]["my_dashboards"], "llm");
        assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "LlmJobs");
        let shipped: Value =
            serde_json::from_str(map["data"][file.as_str()].as_str().unwrap()).unwrap();
        assert_eq!(&shipped, json, "{file} ships as it is in the chart");
    }
    let default_label = helm_template(NS, &["--set", "dashboards.enabled=true"]).unwrap();
    let docs_default = yaml_docs(&default_label, "sidecar defaults").unwrap();
    for map in of_kind(&docs_default, "ConfigMap") {
        assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(map["metadata"]["namespace"], NS);
    }

    let rules = of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let rule = rules[0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let file: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(rules_dir().join("llmjob.rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rule["spec"], file,
        "the PrometheusRule is the rule file as promtool tests it"
    );
}

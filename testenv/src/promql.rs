//! The PromQL that users are given, gathered for tests that run it against a real Prometheus
//! ([`crate::backends`]): the `promql` code blocks of a Markdown file (the pipeline README), the
//! `targets[].expr` of every Grafana dashboard JSON in a chart, and the `expr` of every alert of
//! the chart's PrometheusRule templates, rendered by the real `helm template` with the template's
//! own `.Values.<x>.enabled` guard set. Grafana's variables and interval macros are made plain
//! PromQL, and an alert's final threshold is removed, so that each query returns the measured
//! values whether or not a panel is filtered or an alert would fire.
//!
//! It only reads files and runs `helm template`; what the queries must return is the tests' call.

use std::path::{Path, PathBuf};

use crate::tools::{self, MissingTool};

/// A query and where it came from (file and panel title or alert name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Where it came from, e.g. `charts/x/dashboards/usage.json panel "Tokens/s"`.
    pub origin: String,
    /// The PromQL, ready for Prometheus.
    pub promql: String,
}

/// Errors from gathering the queries.
#[derive(Debug, thiserror::Error)]
pub enum PromqlError {
    /// `helm` is not built.
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PrometheusRule template has no `.Values.<x>.enabled` guard to set.
    #[error("{0}: a PrometheusRule template without a `.Values.<x>.enabled` guard")]
    NoEnableFlag(PathBuf),
    /// `helm template` failed or rendered no alert.
    #[error("helm template of {template}: {detail}")]
    Helm {
        /// The template.
        template: PathBuf,
        /// helm's stderr, or what was missing.
        detail: String,
    },
}

fn read(path: &Path) -> Result<String, PromqlError> {
    std::fs::read_to_string(path).map_err(|source| PromqlError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The non-empty, non-comment lines of the ```` ```promql ```` blocks of the Markdown file `path`.
pub fn markdown_queries(path: &Path) -> Result<Vec<Query>, PromqlError> {
    let text = read(path)?;
    let mut queries = Vec::new();
    for (n, block) in text.split("```promql").skip(1).enumerate() {
        let body = block.split("```").next().unwrap_or_default();
        for line in body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            queries.push(Query {
                origin: format!("{} promql block {}", path.display(), n + 1),
                promql: line.to_owned(),
            });
        }
    }
    Ok(queries)
}

/// Every PromQL query users are given: the `promql` blocks of the reference pipelines' README
/// (`manifests/observability/README.md`) and the chart's dashboards and alerts
/// ([`chart_queries`]), under the workspace `root`.
pub fn user_queries(root: &Path) -> Result<Vec<Query>, PromqlError> {
    let mut queries = markdown_queries(&root.join("manifests/observability/README.md"))?;
    queries.extend(chart_queries(&root.join("charts/llmjob-operator"))?);
    Ok(queries)
}

/// The panel queries of every Grafana dashboard (a JSON file with `panels`) under `chart`, and
/// the alert expressions of every PrometheusRule template under `chart/templates`.
pub fn chart_queries(chart: &Path) -> Result<Vec<Query>, PromqlError> {
    let mut queries = Vec::new();
    for path in files_with_extension(chart, "json") {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(&read(&path)?) else {
            continue;
        };
        let mut exprs = Vec::new();
        collect_panel_exprs(&doc, &mut exprs);
        queries.extend(exprs.into_iter().map(|(title, expr)| Query {
            origin: format!("{} panel {title:?}", path.display()),
            promql: grafana_to_promql(&expr),
        }));
    }
    for path in files_with_extension(&chart.join("templates"), "yaml") {
        let text = read(&path)?;
        if !text.contains("PrometheusRule") {
            continue;
        }
        let flag = enable_flag(&text).ok_or_else(|| PromqlError::NoEnableFlag(path.clone()))?;
        for (alert, expr) in rendered_alerts(chart, &path, &flag)? {
            let parts = measured_parts(&expr);
            let many = parts.len() > 1;
            queries.extend(parts.into_iter().enumerate().map(|(i, promql)| Query {
                origin: if many {
                    format!("{} alert {alert} (operand {})", path.display(), i + 1)
                } else {
                    format!("{} alert {alert}", path.display())
                },
                promql,
            }));
        }
    }
    Ok(queries)
}

fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_with_extension(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `(panel title, expr)` of every panel target, rows' nested panels included.
pub fn collect_panel_exprs(node: &serde_json::Value, out: &mut Vec<(String, String)>) {
    let Some(panels) = node.get("panels").and_then(|p| p.as_array()) else {
        return;
    };
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.clone(), expr.to_owned()));
            }
        }
        collect_panel_exprs(panel, out);
    }
}

/// A Grafana query made plain PromQL: the interval macros become durations, every template
/// variable (`$namespace`, `${team}`) matches anything.
pub fn grafana_to_promql(expr: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "5m")
        .replace("${__rate_interval}", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    while let Some(start) = out.find('$') {
        let rest = &out[start + 1..];
        let len = if let Some(inner) = rest.strip_prefix('{') {
            inner.find('}').map(|e| e + 2).unwrap_or(rest.len())
        } else {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())
        };
        out.replace_range(start..start + 1 + len, ".*");
    }
    out
}

/// The values path of the first `.Values.<path>.enabled` in a template.
pub fn enable_flag(template: &str) -> Option<String> {
    let start = template.find(".Values.")? + ".Values.".len();
    let rest = &template[start..];
    let end = rest.find(".enabled")?;
    Some(format!("{}.enabled", &rest[..end]))
}

/// `(alert, expr)` of each alert in what `helm template --set <flag>=true --show-only
/// <template>` renders from `chart`.
pub fn rendered_alerts(
    chart: &Path,
    template: &Path,
    flag: &str,
) -> Result<Vec<(String, String)>, PromqlError> {
    let helm = tools::bin("helm")?;
    let helm_err = |detail: String| PromqlError::Helm {
        template: template.to_owned(),
        detail,
    };
    let relative = template.strip_prefix(chart).unwrap_or(template);
    let output = std::process::Command::new(helm)
        .arg("template")
        .arg("llmjob")
        .arg(chart)
        .args(["--set", &format!("{flag}=true"), "--show-only"])
        .arg(relative)
        .output()
        .map_err(|e| helm_err(e.to_string()))?;
    if !output.status.success() {
        return Err(helm_err(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    let mut alerts = Vec::new();
    for doc in String::from_utf8_lossy(&output.stdout).split("\n---") {
        let Ok(value) = serde_norway::from_str::<serde_json::Value>(doc) else {
            continue;
        };
        for group in value["spec"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                if let (Some(alert), Some(expr)) = (rule["alert"].as_str(), rule["expr"].as_str()) {
                    alerts.push((alert.to_owned(), expr.trim().to_owned()));
                }
            }
        }
    }
    if alerts.is_empty() {
        return Err(helm_err(format!(
            "no alert rendered with --set {flag}=true"
        )));
    }
    Ok(alerts)
}

/// The measured values of an alert's expression: its operands at the top level of `and`, `or` and
/// `unless`, each [`without_threshold`], so that each returns data whether or not the alert fires
/// (`(failed / all) > 0.25 and all >= 4` gives `(failed / all)` and `all`).
pub fn measured_parts(expr: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            c if depth == 0 && c.is_ascii_whitespace() => {
                let rest = &expr[i + 1..];
                let word = rest
                    .split(|c: char| c.is_ascii_whitespace())
                    .next()
                    .unwrap_or("");
                if matches!(word, "and" | "or" | "unless")
                    && rest[word.len()..].starts_with(|c: char| c.is_ascii_whitespace())
                {
                    parts.push(&expr[start..i]);
                    i += 1 + word.len();
                    start = i;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&expr[start..]);
    parts
        .into_iter()
        .map(|part| without_threshold(strip_matching(part.trim())))
        .filter(|part| !part.is_empty())
        .collect()
}

/// `part` without the vector-matching clauses a binary operator's right operand starts with
/// (`on(..)`, `ignoring(..)`, `group_left(..)`, `group_right(..)`).
fn strip_matching(mut part: &str) -> &str {
    loop {
        let Some(rest) = ["on", "ignoring", "group_left", "group_right"]
            .iter()
            .find_map(|kw| part.strip_prefix(kw))
            .map(str::trim_start)
            .filter(|rest| rest.starts_with('('))
        else {
            return part;
        };
        match rest.find(')') {
            Some(close) => part = rest[close + 1..].trim_start(),
            None => return part,
        }
    }
}

/// An alert's expression without its final threshold (`... > 0.05`), so that it returns the
/// measured values whether or not the alert would fire.
pub fn without_threshold(expr: &str) -> String {
    let trimmed = expr.trim_end();
    let number_start = trimmed
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
        .map(|i| i + 1)
        .unwrap_or(0);
    if number_start == trimmed.len() {
        return expr.to_owned();
    }
    let before = trimmed[..number_start].trim_end();
    let before = before.strip_suffix("bool").unwrap_or(before).trim_end();
    for op in [">=", "<=", "==", "!=", ">", "<"] {
        if let Some(left) = before.strip_suffix(op) {
            return left.trim_end().to_owned();
        }
    }
    expr.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_variables_and_thresholds_are_rewritten() {
        assert_eq!(
            grafana_to_promql(r#"sum(rate(x{ns=~"$namespace",t=~"${team}"}[$__rate_interval]))"#),
            r#"sum(rate(x{ns=~".*",t=~".*"}[5m]))"#
        );
        assert_eq!(
            without_threshold("sum(rate(x[5m])) > 0.05"),
            "sum(rate(x[5m]))"
        );
        assert_eq!(without_threshold("a / b >= bool 1"), "a / b");
        assert_eq!(without_threshold("up == 0"), "up");
        assert_eq!(without_threshold("absent(up)"), "absent(up)");
        assert_eq!(
            measured_parts("(\n  sum(a) / sum(b)\n) > 0.25\nand\nsum(b) >= 4\n"),
            vec!["(\n  sum(a) / sum(b)\n)".to_owned(), "sum(b)".to_owned()]
        );
        assert_eq!(
            measured_parts("sum(x{l=\"and\"}) > 0 unless on(a) (y or z) == 1"),
            vec!["sum(x{l=\"and\"})".to_owned(), "(y or z)".to_owned()]
        );
        assert_eq!(measured_parts("absent(up)"), vec!["absent(up)".to_owned()]);
        assert_eq!(
            enable_flag("{{- if .Values.prometheusRule.enabled }}").as_deref(),
            Some("prometheusRule.enabled")
        );
    }

    #[test]
    fn dashboard_targets_are_found_in_rows_too() {
        let dashboard = serde_json::json!({"panels": [
            {"title": "top", "targets": [{"expr": "a"}, {"refId": "B"}]},
            {"title": "row", "type": "row", "panels": [{"title": "inner", "targets": [{"expr": "b"}]}]},
        ]});
        let mut exprs = Vec::new();
        collect_panel_exprs(&dashboard, &mut exprs);
        assert_eq!(
            exprs,
            vec![
                ("top".to_owned(), "a".to_owned()),
                ("inner".to_owned(), "b".to_owned())
            ]
        );
    }
}

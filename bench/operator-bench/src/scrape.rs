//! Reads the numbers the bench reports from outside the code under test: Prometheus text from
//! the apiserver's and the operator's `/metrics`, and a process's peak RSS and CPU time from
//! `/proc/<pid>`.
//!
//! Pure parsing plus plain reads; it changes nothing.

use std::collections::BTreeMap;

/// One sample of a Prometheus text exposition: labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label name → value.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// The samples of metric `name` (exact name, no suffix matching) in a text exposition.
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.rfind('}')?;
                (parse_labels(&inner[..end]), inner[end + 1..].trim())
            } else if rest.starts_with(' ') {
                (BTreeMap::new(), rest.trim())
            } else {
                return None; // another metric whose name starts with `name`
            };
            // "value" or "value timestamp"
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect()
}

/// The sum of all samples of `name`.
pub fn sum(text: &str, name: &str) -> f64 {
    // `+ 0.0`: an empty f64 sum is -0.0, which prints as "-0".
    samples(text, name).iter().map(|s| s.value).sum::<f64>() + 0.0
}

/// `a="x",b="y \"q\""` → {a: x, b: y "q"}.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return labels;
        }
        if chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

/// `apiserver_request_total` summed by resource and verb (`resource[.group][/subresource] VERB`).
pub fn requests_by_resource_and_verb(text: &str) -> BTreeMap<String, f64> {
    let mut by = BTreeMap::new();
    for s in samples(text, "apiserver_request_total") {
        let get = |k: &str| s.labels.get(k).map(String::as_str).unwrap_or_default();
        let resource = get("resource");
        let key = if resource.is_empty() {
            "(non-resource)".to_owned()
        } else {
            let mut key = resource.to_owned();
            if !get("group").is_empty() {
                key = format!("{key}.{}", get("group"));
            }
            if !get("subresource").is_empty() {
                key = format!("{key}/{}", get("subresource"));
            }
            key
        };
        let key = format!("{key} {}", get("verb"));
        *by.entry(key).or_insert(0.0) += s.value;
    }
    by
}

/// The apiserver's `/metrics`, read with the admin client.
pub async fn apiserver_metrics(client: &kube::Client) -> anyhow::Result<String> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    Ok(client.request_text(request).await?)
}

/// Peak resident set size (`VmHWM`) of a live process, in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// User + system CPU time of a live process so far, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name (state is 1).
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()?)
    };
    let hz = f64::from(rustix::param::clock_ticks_per_second() as u32);
    Ok((ticks(11)? + ticks(12)?) / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total x
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="batch",resource="jobs",scope="resource",subresource="",verb="POST",version="v1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 5
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/healthz",verb="GET",version=""} 2
apiserver_request_total_other 99
llmjob_operator_reconciles_total 42
"#;

    #[test]
    fn parses_and_groups_requests() {
        assert_eq!(sum(TEXT, "apiserver_request_total"), 17.0);
        let by = requests_by_resource_and_verb(TEXT);
        assert_eq!(by["jobs.batch POST"], 10.0);
        assert_eq!(by["pods/status PATCH"], 5.0);
        assert_eq!(by["(non-resource) GET"], 2.0);
        assert_eq!(sum(TEXT, "llmjob_operator_reconciles_total"), 42.0);
    }

    #[test]
    fn labels_with_escapes() {
        let l = parse_labels(r#"a="x",b="y \"q\"""#);
        assert_eq!(l["a"], "x");
        assert_eq!(l["b"], "y \"q\"");
    }

    #[test]
    fn own_process_has_rss_and_cpu() {
        let pid = std::process::id();
        assert!(peak_rss(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}

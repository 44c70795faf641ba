//! The bench's arithmetic and its report, pure: the rate the replay server saw (over the run and
//! in its busiest window), min / median / max of the pods' memory, and the markdown table with
//! PASS/MISS lines. No I/O here; `main.rs` gathers the numbers.

use std::time::Duration;

/// The width of the window the busiest rate is counted in.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The rate the server saw: `(n - streams) / span`, where `offsets` are the arrival times of the
/// `n` requests (sorted, from any origin) and `streams` the pods sending at once. Each of the
/// `streams` evenly paced senders fits its requests' intervals into the span, so `n - streams`
/// intervals (not `n`) are what the span holds: the measure of `bench/batch/bench.py` and
/// `job-runner/tests/batch_rate_limit.rs`. `None` with fewer than two requests.
pub fn achieved_rate(offsets: &[Duration], streams: usize) -> Option<f64> {
    let (first, last) = (offsets.first()?, offsets.last()?);
    let span = last.saturating_sub(*first).as_secs_f64();
    (offsets.len() > 1 && span > 0.0).then(|| offsets.len().saturating_sub(streams) as f64 / span)
}

/// The most requests in any window of `width` (both ends included) among the sorted `offsets`.
pub fn busiest_window(offsets: &[Duration], width: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for (i, t) in offsets.iter().enumerate() {
        while offsets[start] + width < *t {
            start += 1;
        }
        best = best.max(i - start + 1);
    }
    best
}

/// What the busiest window may hold under `limit_per_s`: the limit over the window, plus one
/// request per stream (each pod's first request of the window may come at its very start).
pub fn window_allowance(limit_per_s: f64, width: Duration, streams: usize) -> usize {
    (limit_per_s * width.as_secs_f64()).floor() as usize + streams
}

/// Min, median and max of `values` (the median of an even count is the mean of the middle two).
pub fn min_median_max(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (first, last) = (*sorted.first()?, *sorted.last()?);
    let mid = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    Some((first, median, last))
}

/// Everything the report prints.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Items in the LlmJob.
    pub items: usize,
    /// `spec.batch.itemsPerPod`.
    pub items_per_pod: usize,
    /// `spec.batch.parallelism`.
    pub parallelism: usize,
    /// `spec.batch.rateLimit.requestsPerMinute`.
    pub rpm: u64,
    /// `spec.batch.concurrency`.
    pub concurrency: usize,
    /// The Indexed Job's completions (shards).
    pub shards: usize,
    /// From the LlmJob's create call returning to its `Succeeded` phase being seen.
    pub create_to_succeeded: Duration,
    /// The earliest pod container start to the latest pod container finish (the API's
    /// timestamps, whole seconds), when every pod's were seen.
    pub pods_span: Option<Duration>,
    /// Pods of the Indexed Job seen, and how many ended `Succeeded`.
    pub pods_seen: usize,
    /// Pods seen `Succeeded`.
    pub pods_succeeded: usize,
    /// Arrival times of the chat requests at the replay server, sorted.
    pub requests: Vec<Duration>,
    /// Answers other than 200.
    pub requests_not_ok: usize,
    /// Peak RSS (`VmHWM`) of each pod's runner process, MiB.
    pub runner_hwm_mib: Vec<f64>,
    /// Peak memory of each pod's cgroup (`memory.max_usage_in_bytes`), MiB.
    pub pod_cgroup_peak_mib: Vec<f64>,
    /// `status.batch`: succeeded, failed, shards done, shards.
    pub status_succeeded: u64,
    /// Failed items.
    pub status_failed: u64,
    /// Shards that reported.
    pub status_shards_done: u32,
    /// Shards of the run.
    pub status_shards: Option<u32>,
    /// `status.result.usage.totalTokens`.
    pub status_tokens: Option<u64>,
    /// The LlmJob's final phase.
    pub phase: String,
    /// The output URL.
    pub output: String,
    /// Objects under the output prefix.
    pub objects: usize,
    /// Result lines in them.
    pub lines: usize,
    /// The operator's peak RSS (`VmHWM`), MiB.
    pub operator_hwm_mib: Option<f64>,
    /// `/proc/loadavg` at the start and the end.
    pub load_start: String,
    /// At the end.
    pub load_end: String,
    /// The date of the run (UTC, `YYYY-MM-DD`).
    pub date: String,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn mib_triple(values: &[f64]) -> String {
    min_median_max(values).map_or_else(
        || "— (none sampled)".to_owned(),
        |(lo, mid, hi)| format!("{lo:.1} / {mid:.1} / {hi:.1} ({} pods)", values.len()),
    )
}

impl Report {
    /// Whether every check with a target passed.
    pub fn passed(&self) -> bool {
        self.checks().iter().all(|ok| *ok)
    }

    fn limit_per_s(&self) -> f64 {
        self.rpm as f64 / 60.0
    }

    fn streams(&self) -> usize {
        self.parallelism.min(self.shards).max(1)
    }

    fn rate(&self) -> Option<f64> {
        achieved_rate(&self.requests, self.streams())
    }

    fn busiest(&self) -> (usize, usize) {
        (
            busiest_window(&self.requests, WINDOW),
            window_allowance(self.limit_per_s(), WINDOW, self.streams()),
        )
    }

    /// The checks with a target, in the table's order.
    fn checks(&self) -> [bool; 7] {
        let (busiest, allowed) = self.busiest();
        [
            self.phase == "Succeeded",
            self.pods_succeeded == self.shards && self.pods_seen == self.shards,
            self.status_succeeded == self.items as u64 && self.status_failed == 0,
            self.rate().is_some_and(|r| r <= self.limit_per_s()),
            busiest <= allowed,
            self.objects == self.shards,
            self.lines == self.items,
        ]
    }

    /// The markdown table (a heading, the table, a line on the load), PASS/MISS where there is a
    /// target.
    pub fn markdown(&self) -> String {
        let [
            phase_ok,
            pods_ok,
            status_ok,
            rate_ok,
            window_ok,
            objects_ok,
            lines_ok,
        ] = self.checks();
        let limit = self.limit_per_s();
        let (busiest, allowed) = self.busiest();
        let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
        let mut out = vec![
            format!(
                "### One LlmJob of {} items through the operator on the real node: {} pods of {} items, parallelism {}, concurrency {}, limit {} requests/min ({})",
                self.items,
                self.shards,
                self.items_per_pod,
                self.parallelism,
                self.concurrency,
                self.rpm,
                self.date
            ),
            String::new(),
            "| figure | value | target | |".to_owned(),
            "|---|---|---|---|".to_owned(),
            format!(
                "| LlmJob phase | {} | Succeeded | {} |",
                self.phase,
                verdict(phase_ok)
            ),
            format!(
                "| wall time, LlmJob created to `Succeeded` seen (s) | {} | ≥ {:.1} (items / limit) | |",
                secs(self.create_to_succeeded),
                self.items as f64 / limit
            ),
            format!(
                "| pods' span, first container started to last finished (s, API timestamps) | {} | | |",
                self.pods_span.map_or_else(|| "—".to_owned(), secs)
            ),
            format!(
                "| Indexed Job pods `Succeeded` | {} of {} seen | {} | {} |",
                self.pods_succeeded,
                self.pods_seen,
                self.shards,
                verdict(pods_ok)
            ),
            format!(
                "| status.batch: succeeded (failed), shards done of shards | {} ({}), {} of {} | {} (0) | {} |",
                self.status_succeeded,
                self.status_failed,
                self.status_shards_done,
                self.status_shards
                    .map_or_else(|| "?".to_owned(), |s| s.to_string()),
                self.items,
                verdict(status_ok)
            ),
            format!(
                "| status.result tokens (total) | {} | | |",
                self.status_tokens
                    .map_or_else(|| "—".to_owned(), |t| t.to_string())
            ),
            format!(
                "| chat requests received (replay server; not 200) | {} ({}) | {} | |",
                self.requests.len(),
                self.requests_not_ok,
                self.items
            ),
            format!(
                "| requests/s achieved over the run | {} | ≤ {limit:.1} (the limit) | {} |",
                self.rate()
                    .map_or_else(|| "—".to_owned(), |r| format!("{r:.1}")),
                verdict(rate_ok)
            ),
            format!(
                "| busiest {} s window (requests) | {busiest} | ≤ {allowed} (limit × {} s + one per pod) | {} |",
                WINDOW.as_secs(),
                WINDOW.as_secs(),
                verdict(window_ok)
            ),
            format!(
                "| runner peak RSS per pod (MiB, VmHWM polled): min / median / max | {} | | |",
                mib_triple(&self.runner_hwm_mib)
            ),
            format!(
                "| pod cgroup peak memory (MiB, memory.max_usage_in_bytes): min / median / max | {} | | |",
                mib_triple(&self.pod_cgroup_peak_mib)
            ),
            format!(
                "| objects written ({}) | {} | {} | {} |",
                self.output,
                self.objects,
                self.shards,
                verdict(objects_ok)
            ),
            format!(
                "| result lines in them | {} | {} | {} |",
                self.lines,
                self.items,
                verdict(lines_ok)
            ),
            format!(
                "| operator peak RSS (MiB, VmHWM) | {} | | |",
                self.operator_hwm_mib
                    .map_or_else(|| "—".to_owned(), |m| format!("{m:.1}"))
            ),
            String::new(),
            format!(
                "Load average (1/5/15 min): start {}, end {}; {} CPUs.",
                self.load_start,
                self.load_end,
                std::thread::available_parallelism().map_or(0, usize::from)
            ),
        ];
        out.push(String::new());
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn the_rate_counts_intervals_not_requests() {
        // Two streams, each one request per second for 10 s: 22 requests, span 10 s, 20
        // intervals: 2 requests/s, not 2.2.
        let mut offsets: Vec<Duration> = (0..=10)
            .flat_map(|s| [Duration::from_secs(s), Duration::from_secs(s)])
            .collect();
        offsets.sort();
        let rate = achieved_rate(&offsets, 2).unwrap_or_default();
        assert!((rate - 2.0).abs() < 1e-9, "{rate}");
        assert_eq!(achieved_rate(&ms(&[5]), 1), None);
        assert_eq!(achieved_rate(&ms(&[]), 1), None);
        assert_eq!(achieved_rate(&ms(&[5, 5]), 1), None, "no span");
    }

    #[test]
    fn the_busiest_window_includes_both_ends() {
        let offsets = ms(&[0, 100, 10_100, 10_200, 10_300, 30_000]);
        assert_eq!(busiest_window(&offsets, WINDOW), 3, "300..=10300 holds 3");
        assert_eq!(
            busiest_window(&ms(&[0, 10_000, 20_001]), WINDOW),
            2,
            "0..=10000"
        );
        assert_eq!(busiest_window(&ms(&[]), WINDOW), 0);
        assert_eq!(busiest_window(&ms(&[7]), WINDOW), 1);
        assert_eq!(window_allowance(200.0, WINDOW, 20), 2020);
        assert_eq!(window_allowance(10.5, Duration::from_secs(1), 1), 11);
    }

    #[test]
    fn min_median_max_of_odd_and_even_counts() {
        assert_eq!(min_median_max(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(min_median_max(&[4.0, 1.0, 2.0, 3.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(min_median_max(&[]), None);
    }

    fn passing() -> Report {
        // 100 items, 2 pods of 50 at once, 600 requests/min (10/s): 10 s of requests, evenly.
        let requests = (0..100).map(|i| Duration::from_millis(i * 100)).collect();
        Report {
            items: 100,
            items_per_pod: 50,
            parallelism: 2,
            rpm: 600,
            concurrency: 4,
            shards: 2,
            create_to_succeeded: Duration::from_secs(14),
            pods_span: Some(Duration::from_secs(11)),
            pods_seen: 2,
            pods_succeeded: 2,
            requests,
            runner_hwm_mib: vec![12.0, 14.0],
            pod_cgroup_peak_mib: vec![20.0, 40.0],
            status_succeeded: 100,
            status_shards_done: 2,
            status_shards: Some(2),
            status_tokens: Some(1234),
            phase: "Succeeded".into(),
            output: "s3://results/bench".into(),
            objects: 2,
            lines: 100,
            ..Report::default()
        }
    }

    #[test]
    fn a_run_within_the_limit_passes_every_line() {
        let report = passing();
        assert!(report.passed(), "{}", report.markdown());
        let table = report.markdown();
        assert!(!table.contains("MISS"), "{table}");
        assert_eq!(table.matches("PASS").count(), 7, "{table}");
        assert!(table.contains("| 12.0 / 13.0 / 14.0 (2 pods) |"), "{table}");
    }

    #[test]
    fn too_fast_or_incomplete_runs_miss() {
        let mut fast = passing();
        // 200 requests in 10 s: 20/s against a limit of 10/s.
        fast.requests = (0..200).map(|i| Duration::from_millis(i * 50)).collect();
        assert!(!fast.passed());
        let table = fast.markdown();
        assert!(
            table.contains("| requests/s achieved over the run | 19.9 |"),
            "{table}"
        );
        assert_eq!(table.matches("MISS").count(), 2, "rate and window: {table}");

        let mut short = passing();
        short.lines = 99;
        short.objects = 1;
        short.phase = "Failed".into();
        assert_eq!(short.markdown().matches("MISS").count(), 3);
    }
}

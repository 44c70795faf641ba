//! The project's task runner. Each recipe is what CI, the README and the docs call, one for one:
//!
//! | recipe | what it does |
//! |---|---|
//! | `cargo xtask tools` | builds (or finds in the cache) the Go tools: `tools/ensure-tools.sh` |
//! | `cargo xtask generate [--check]` | writes (or checks) every generated file: the CRD YAML, its chart copy, `manifests/install.yaml`, the chart README |
//! | `cargo xtask manifests [--check]` | only the deployment files: the chart's CRD copy, `manifests/install.yaml`, the Argo CD `argocd-cm` snippet, the chart README (helm-docs) (`manifests.rs`) |
//! | `cargo xtask fmt [--check]` | `cargo fmt --all` |
//! | `cargo xtask lint` | `cargo clippy --workspace --all-targets -- -D warnings` |
//! | `cargo xtask test` | tools, fmt check, generated-files check, lint, build, then every test of the workspace |
//! | `cargo xtask bench` | the benchmarks (job-runner vs the Python reference job; operator vs direct Jobs) |
//! | `cargo xtask demo [--keep]` | the README demo |
//! | `cargo xtask images` | the OCI images of the operator, the runner and pause, without Docker (`images.rs`) |

mod demo;
mod images;
mod manifests;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// llmjob-operator's task runner.
#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "llmjob-operator's task runner"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build (or find in the cache) etcd, kube-apiserver, kube-controller-manager, kubectl, the
    /// OpenTelemetry Collector, helm and the manifest validator.
    Tools,
    /// Write every generated file (CRD YAML, its chart copy, manifests/install.yaml, the chart
    /// README).
    Generate {
        /// Fail instead of writing when a committed file is out of date.
        #[arg(long)]
        check: bool,
    },
    /// Write the deployment files derived from other sources: the chart's CRD copy,
    /// manifests/install.yaml, the Argo CD argocd-cm snippet and the chart README (helm-docs).
    Manifests {
        /// Fail instead of writing when a committed file is out of date.
        #[arg(long)]
        check: bool,
    },
    /// Format the workspace.
    Fmt {
        /// Fail instead of writing when a file is not formatted.
        #[arg(long)]
        check: bool,
    },
    /// Clippy over every target, warnings denied.
    Lint,
    /// Everything CI checks: tools, formatting, generated files, lint, then all tests.
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Run the benchmarks and print their tables.
    Bench,
    /// Build the OCI image archives of the operator, the job-runner and pause, without Docker,
    /// into $LLMJOB_IMAGES_DIR (default <cargo target dir>/images).
    Images {
        /// Only these images (pause, llmjob-operator, llmjob-runner); default all. pause alone
        /// needs no release build.
        names: Vec<String>,
    },
    /// The README demo: the stack with a real node, the operator from manifests/ running from its
    /// image, an example LlmJob, its pods and its trace (needs root).
    Demo {
        /// Keep the stack running afterwards (until Ctrl-C) and print its KUBECONFIG.
        #[arg(long)]
        keep: bool,
        /// Use the tools and images already built (`cargo xtask images`) instead of building them
        /// (the end-to-end test).
        #[arg(long)]
        no_build: bool,
        /// Also run a real Prometheus and Jaeger behind the reference collector pipelines
        /// (manifests/observability/) and print what the run left there.
        #[arg(long)]
        backends: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    let root = workspace_root()?;
    match task {
        Task::Tools => tools(&root, "test"),
        Task::Generate { check } => generate(&root, check),
        Task::Manifests { check } => {
            step(if check {
                "checking deployment manifests"
            } else {
                "generating deployment manifests"
            });
            manifests::run(check)
        }
        Task::Fmt { check } => fmt(&root, check),
        Task::Lint => lint(&root),
        Task::Test { cargo_args } => {
            tools(&root, "test")?;
            fmt(&root, true)?;
            generate(&root, true)?;
            lint(&root)?;
            step("building the workspace's binaries (the tests run them as real processes)");
            cargo(&root, &["build", "--workspace", "--bins"])?;
            images::run(&root, &[])?;
            step("running every test of the workspace");
            let mut args = vec!["test", "--workspace", "--no-fail-fast"];
            if !cargo_args.is_empty() {
                args.push("--");
                args.extend(cargo_args.iter().map(String::as_str));
            }
            cargo(&root, &args)
        }
        Task::Bench => bench(&root),
        Task::Images { names } => images::run(&root, &names),
        Task::Demo {
            keep,
            no_build,
            backends,
        } => demo::run(
            &root,
            &demo::Options {
                keep,
                no_build,
                backends,
            },
        ),
    }
}

/// Prints a progress line for a step.
fn step(what: &str) {
    eprintln!("\n==> {what}");
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask must live one level below the workspace root")
}

/// Runs a command in the workspace root and fails with the command line when it fails.
fn run_cmd(root: &Path, program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start `{program}`"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run_cmd(root, &cargo, args)
}

/// `tools/ensure-tools.sh <profile>`: `test` builds every tool, `demo` only what the demo runs.
fn tools(root: &Path, profile: &str) -> Result<()> {
    step(&format!(
        "building (or finding in the cache) the Go tools: tools/ensure-tools.sh {profile}"
    ));
    run_cmd(root, "bash", &["tools/ensure-tools.sh", profile])
}

fn fmt(root: &Path, check: bool) -> Result<()> {
    step(if check {
        "checking formatting"
    } else {
        "formatting"
    });
    if check {
        cargo(root, &["fmt", "--all", "--", "--check"])
    } else {
        cargo(root, &["fmt", "--all"])
    }
}

fn lint(root: &Path) -> Result<()> {
    step("clippy over every target, warnings denied");
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )
}

/// The generated CRD YAML, relative to the workspace root.
const CRD_YAML: &str = "crds/llmjobs.llmjob.dev.yaml";

fn generate(root: &Path, check: bool) -> Result<()> {
    step(if check {
        "checking generated files"
    } else {
        "generating files"
    });
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(&cargo_bin)
        .args(["run", "--quiet", "-p", "llmjob-crds", "--bin", "crdgen"])
        .current_dir(root)
        .output()
        .context("could not run crdgen")?;
    if !out.status.success() {
        bail!("crdgen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    write_or_check(
        &root.join(CRD_YAML),
        &out.stdout,
        check,
        "cargo xtask generate",
    )?;
    // The chart's CRD copy, manifests/install.yaml, the argocd-cm snippet and the chart README.
    manifests::run(check)
}

/// Writes `content` to `path`, or with `check` fails when the committed file differs.
fn write_or_check(path: &Path, content: &[u8], check: bool, command: &str) -> Result<()> {
    let current = std::fs::read(path).unwrap_or_default();
    if current == content {
        return Ok(());
    }
    if check {
        bail!(
            "{} is out of date: run `{command}` and commit the result",
            path.display()
        );
    }
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn bench(root: &Path) -> Result<()> {
    step("job-runner vs the Python reference job: bench/runner/run.sh");
    run_cmd(root, "bash", &["bench/runner/run.sh"])?;
    step("operator vs direct Jobs: bench/operator-bench/run.sh");
    run_cmd(root, "bash", &["bench/operator-bench/run.sh"])?;
    step("one LlmJob of 10,000 items through the operator: bench/batch/run.sh");
    run_cmd(root, "bash", &["bench/batch/run.sh"])?;
    Ok(())
}

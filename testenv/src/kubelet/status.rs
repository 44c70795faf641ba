//! Pod status from what the kubelet knows about its containers, as pure functions: the phase
//! (`kubelet_pods.go: getPhase`), the conditions (`PodReadyToStartContainers`, `Initialized`,
//! `ContainersReady`, `Ready`, `PodScheduled`) and the container statuses.
//!
//! Readiness: a container is ready while it runs (probes are not executed), so a Deployment's pods
//! become Ready and the Deployment Available as soon as their processes start.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::env_resolve::LOOPBACK_IP;

/// Pod phase `Pending`.
pub(crate) const PENDING: &str = "Pending";
/// Pod phase `Running`.
pub(crate) const RUNNING: &str = "Running";
/// Pod phase `Succeeded`.
pub(crate) const SUCCEEDED: &str = "Succeeded";
/// Pod phase `Failed`.
pub(crate) const FAILED: &str = "Failed";

/// `status.reason` of a pod killed for exceeding `activeDeadlineSeconds`.
pub(crate) const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// A finished container run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Terminated {
    /// The exit code (128 + signal number for a process killed by a signal).
    pub exit_code: i32,
    /// `Completed`, `Error`, `StartError`, ...
    pub reason: String,
    /// The termination message.
    pub message: Option<String>,
    /// When the process started (`None` if it never did).
    pub started_at: Option<Time>,
    /// When it ended.
    pub finished_at: Time,
    /// The container's id.
    pub container_id: Option<String>,
}

/// A container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunState {
    /// Not running: being created, blocked on its configuration, backing off, ...
    Waiting {
        /// `ContainerCreating`, `CreateContainerConfigError`, `CrashLoopBackOff`, ...
        reason: String,
        /// Details.
        message: Option<String>,
    },
    /// The process runs.
    Running {
        /// Since when.
        started_at: Time,
    },
    /// The last run ended and the container will not be restarted (yet).
    Terminated(Terminated),
}

/// What the kubelet knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerRuntime {
    /// The current state.
    pub state: RunState,
    /// The previous run, once the container has been restarted or is backing off.
    pub last_state: Option<Terminated>,
    /// How often the container was restarted.
    pub restart_count: i32,
    /// The id of the current (or last) run.
    pub container_id: Option<String>,
    /// What the image resolved to, once known.
    pub image_id: String,
}

impl ContainerRuntime {
    /// A container that has not been started, waiting for `reason`.
    pub(crate) fn waiting(reason: &str) -> Self {
        Self {
            state: RunState::Waiting {
                reason: reason.to_owned(),
                message: None,
            },
            last_state: None,
            restart_count: 0,
            container_id: None,
            image_id: String::new(),
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }
}

/// What the kubelet knows about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodRuntime {
    /// One entry per `spec.containers`, in order.
    pub main: Vec<ContainerRuntime>,
    /// When the kubelet accepted the pod.
    pub start_time: Option<Time>,
    /// All containers were stopped (pod deleted or past its deadline): the pod is terminal.
    pub stopped: bool,
    /// The pod was stopped because `activeDeadlineSeconds` passed.
    pub deadline_exceeded: bool,
}

impl PodRuntime {
    /// A pod whose containers have not been started yet.
    pub(crate) fn new(spec: &PodSpec, start_time: Time) -> Self {
        Self {
            main: spec
                .containers
                .iter()
                .map(|_| ContainerRuntime::waiting("ContainerCreating"))
                .collect(),
            start_time: Some(start_time),
            stopped: false,
            deadline_exceeded: false,
        }
    }
}

/// The pod's `restartPolicy` (`Always` when unset).
pub(crate) fn restart_policy(spec: &PodSpec) -> &str {
    spec.restart_policy.as_deref().unwrap_or("Always")
}

/// The pod phase.
pub(crate) fn phase(spec: &PodSpec, rt: &PodRuntime) -> &'static str {
    if rt.deadline_exceeded && rt.stopped {
        return FAILED;
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for r in &rt.main {
        match &r.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } if r.last_state.is_some() => stopped += 1,
            RunState::Waiting { .. } => waiting += 1,
        }
    }
    if rt.stopped {
        return if stopped > 0 && waiting == 0 && running == 0 && stopped == succeeded {
            SUCCEEDED
        } else {
            FAILED
        };
    }
    if waiting > 0 {
        return PENDING;
    }
    if running > 0 {
        return RUNNING;
    }
    if stopped > 0 {
        return match restart_policy(spec) {
            "Always" => RUNNING,
            _ if stopped == succeeded => SUCCEEDED,
            "Never" => FAILED,
            _ => RUNNING,
        };
    }
    PENDING
}

/// `true` for `Succeeded` and `Failed`.
pub(crate) fn is_terminal(phase: &str) -> bool {
    phase == SUCCEEDED || phase == FAILED
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    previous: &[PodCondition],
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason,
        message,
        last_transition_time: Some(last_transition_time),
        last_probe_time: None,
        observed_generation: None,
    }
}

fn list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

/// The status the kubelet reports for `pod` (conditions it does not own are left out: the
/// caller patches with a strategic merge, which merges conditions by type). `previous` holds the
/// conditions reported before, whose `lastTransitionTime` is kept while their status is
/// unchanged.
pub(crate) fn build_status(
    pod: &Pod,
    rt: &PodRuntime,
    previous: &[PodCondition],
    now: &Time,
) -> PodStatus {
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let phase = phase(spec, rt);
    let terminal = is_terminal(phase);

    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .zip(&rt.main)
        .map(|(c, r)| container_status(c, r, r.running(), rt.stopped))
        .collect();

    let unready: Vec<String> = spec
        .containers
        .iter()
        .zip(&rt.main)
        .filter(|(_, r)| !r.running())
        .map(|(c, _)| c.name.clone())
        .collect();
    let (containers_ready, ready_reason, ready_message) = if phase == SUCCEEDED {
        (false, Some("PodCompleted".to_owned()), None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotReady".to_owned()),
            Some(format!(
                "containers with unready status: {}",
                list(&unready)
            )),
        )
    };
    let pod_conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let gate_problem =
        spec.readiness_gates.iter().flatten().find_map(|gate| {
            match pod_conditions
                .iter()
                .find(|c| c.type_ == gate.condition_type)
            {
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{}\" does not exist.",
                    gate.condition_type
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                    gate.condition_type, c.status
                )),
                Some(_) => None,
            }
        });
    let ready = match (&gate_problem, containers_ready) {
        (Some(message), true) => condition(
            "Ready",
            false,
            Some("ReadinessGatesNotReady".to_owned()),
            Some(message.clone()),
            previous,
            now,
        ),
        _ => condition(
            "Ready",
            containers_ready,
            ready_reason.clone(),
            ready_message.clone(),
            previous,
            now,
        ),
    };
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            !terminal,
            None,
            None,
            previous,
            now,
        ),
        // No init containers run here, so a pod is initialized from the start.
        condition("Initialized", true, None, None, previous, now),
        ready,
        condition(
            "ContainersReady",
            containers_ready,
            ready_reason,
            ready_message,
            previous,
            now,
        ),
        condition("PodScheduled", true, None, None, previous, now),
    ];

    let deadline = rt.deadline_exceeded && rt.stopped;
    PodStatus {
        phase: Some(phase.to_owned()),
        reason: deadline.then(|| DEADLINE_EXCEEDED.to_owned()),
        message: deadline.then(|| DEADLINE_MESSAGE.to_owned()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: None,
        host_ip: Some(LOOPBACK_IP.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: LOOPBACK_IP.to_owned(),
        }]),
        pod_ip: Some(LOOPBACK_IP.to_owned()),
        pod_ips: Some(vec![PodIP {
            ip: LOOPBACK_IP.to_owned(),
        }]),
        start_time: rt.start_time.clone(),
        observed_generation: pod.metadata.generation,
        ..PodStatus::default()
    }
}

fn terminated_state(t: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            reason: Some(t.reason.clone()),
            message: t.message.clone(),
            started_at: t.started_at.clone(),
            finished_at: Some(t.finished_at.clone()),
            container_id: t.container_id.clone(),
            signal: None,
        }),
        ..ContainerState::default()
    }
}

fn container_status(
    container: &Container,
    rt: &ContainerRuntime,
    ready: bool,
    pod_stopped: bool,
) -> ContainerStatus {
    let state = match &rt.state {
        RunState::Waiting { .. } if pod_stopped && rt.last_state.is_none() => {
            // Like the kubelet: a container that never ran in a pod that is now terminal.
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some("ContainerStatusUnknown".to_owned()),
                    message: Some(
                        "The container could not be located when the pod was terminated".to_owned(),
                    ),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }
        }
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started_at.clone()),
            }),
            ..ContainerState::default()
        },
        RunState::Terminated(t) => terminated_state(t),
    };
    ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        image_id: rt.image_id.clone(),
        container_id: rt.container_id.clone(),
        ready,
        restart_count: rt.restart_count,
        started: Some(rt.running()),
        state: Some(state),
        last_state: Some(
            rt.last_state
                .as_ref()
                .map(terminated_state)
                .unwrap_or_default(),
        ),
        ..ContainerStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).unwrap()
    }

    const JOB_POD: &str = r#"
metadata: {name: job-abc, namespace: ns, uid: u1, generation: 1}
spec:
  restartPolicy: Never
  nodeName: testenv-node
  containers:
  - {name: main, image: busybox}
"#;

    fn terminated(code: i32) -> RunState {
        RunState::Terminated(Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.to_owned(),
            message: Some("done".to_owned()),
            started_at: Some(time(10)),
            finished_at: time(20),
            container_id: Some("testenv://1".to_owned()),
        })
    }

    fn cond<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn pending_then_running_then_succeeded() {
        let p = pod(JOB_POD);
        let spec = p.spec.as_ref().unwrap();
        let mut rt = PodRuntime::new(spec, time(1));
        let s = build_status(&p, &rt, &[], &time(1));
        assert_eq!(s.phase.as_deref(), Some(PENDING));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        assert!(s.init_container_statuses.is_none());

        rt.main[0].state = RunState::Running {
            started_at: time(5),
        };
        let previous = s.conditions.clone().unwrap();
        let s = build_status(&p, &rt, &previous, &time(5));
        assert_eq!(s.phase.as_deref(), Some(RUNNING));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(time(5)));
        assert_eq!(cond(&s, "Initialized").last_transition_time, Some(time(1)));
        assert_eq!(s.pod_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.host_ips.as_ref().unwrap()[0].ip, "127.0.0.1");
        assert_eq!(s.start_time, Some(time(1)));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.started, Some(true));

        rt.main[0].state = terminated(0);
        let s = build_status(&p, &rt, &[], &time(20));
        assert_eq!(s.phase.as_deref(), Some(SUCCEEDED));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "False");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        assert_eq!(
            json["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(
            json["containerStatuses"][0]["state"]["terminated"]["finishedAt"],
            "1970-01-01T00:00:20Z"
        );
    }

    #[test]
    fn failure_depends_on_the_restart_policy() {
        let p = pod(JOB_POD);
        let mut spec = p.spec.clone().unwrap();
        let mut rt = PodRuntime::new(&spec, time(1));
        rt.main[0].state = terminated(3);
        assert_eq!(phase(&spec, &rt), FAILED);
        let s = build_status(&p, &rt, &[], &time(20));
        let t = s.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
        assert_eq!(t.message.as_deref(), Some("done"));

        spec.restart_policy = Some("OnFailure".into());
        assert_eq!(phase(&spec, &rt), RUNNING);
        rt.main[0].state = terminated(0);
        assert_eq!(phase(&spec, &rt), SUCCEEDED);

        spec.restart_policy = Some("Always".into());
        assert_eq!(phase(&spec, &rt), RUNNING);
        // Backing off after a crash counts as stopped, not as waiting to start.
        rt.main[0].last_state = Some(Terminated {
            exit_code: 1,
            reason: "Error".into(),
            message: None,
            started_at: None,
            finished_at: time(3),
            container_id: None,
        });
        rt.main[0].state = RunState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        assert_eq!(phase(&spec, &rt), RUNNING);
    }

    #[test]
    fn config_errors_keep_the_pod_pending_and_stop_makes_it_failed() {
        let p = pod(JOB_POD);
        let spec = p.spec.as_ref().unwrap();
        let mut rt = PodRuntime::new(spec, time(1));
        rt.main[0].state = RunState::Waiting {
            reason: "CreateContainerConfigError".into(),
            message: Some("secret \"x\" not found".into()),
        };
        let s = build_status(&p, &rt, &[], &time(2));
        assert_eq!(s.phase.as_deref(), Some(PENDING));
        let w = s.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.message.as_deref(), Some("secret \"x\" not found"));

        rt.stopped = true;
        let s = build_status(&p, &rt, &[], &time(3));
        assert_eq!(s.phase.as_deref(), Some(FAILED));
        let t = s.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(t.reason.as_deref(), Some("ContainerStatusUnknown"));
    }

    #[test]
    fn deadline_exceeded_sets_reason() {
        let p = pod(JOB_POD);
        let spec = p.spec.as_ref().unwrap();
        let mut rt = PodRuntime::new(spec, time(1));
        rt.main[0].state = terminated(143);
        rt.stopped = true;
        rt.deadline_exceeded = true;
        let s = build_status(&p, &rt, &[], &time(3));
        assert_eq!(s.phase.as_deref(), Some(FAILED));
        assert_eq!(s.reason.as_deref(), Some(DEADLINE_EXCEEDED));
        // A deleted pod whose containers all exited 0 succeeded.
        rt.deadline_exceeded = false;
        rt.main[0].state = terminated(0);
        assert_eq!(phase(spec, &rt), SUCCEEDED);
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        let mut p = pod(JOB_POD);
        let spec = p.spec.as_mut().unwrap();
        spec.readiness_gates = Some(vec![k8s_openapi::api::core::v1::PodReadinessGate {
            condition_type: "example.com/lb".into(),
        }]);
        let spec = p.spec.clone().unwrap();
        let mut rt = PodRuntime::new(&spec, time(1));
        rt.main[0].state = RunState::Running {
            started_at: time(2),
        };
        let s = build_status(&p, &rt, &[], &time(2));
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ReadinessGatesNotReady")
        );
    }
}

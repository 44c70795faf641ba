//! The one-node scheduler: binds every pod waiting for the default scheduler to the kubelet's node
//! through the `pods/binding` subresource, as kube-scheduler would. Node selectors, affinity,
//! taints and resources are not evaluated: there is only one node.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use super::status::is_terminal;

/// The scheduler name pods get by default.
const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// Attempts at binding one pod.
const BIND_ATTEMPTS: u32 = 5;

/// `true` if the default scheduler would place `pod`: no node yet, the default scheduler (or none)
/// named, no scheduling gates, not being deleted, not finished.
pub(crate) fn should_bind(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let unscheduled = spec.node_name.as_deref().unwrap_or_default().is_empty();
    let default_scheduler = spec
        .scheduler_name
        .as_deref()
        .is_none_or(|s| s.is_empty() || s == DEFAULT_SCHEDULER);
    let gated = spec
        .scheduling_gates
        .as_ref()
        .is_some_and(|g| !g.is_empty());
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(is_terminal);
    unscheduled && default_scheduler && !gated && !deleting && !finished
}

/// The Binding that assigns `pod` to `node` (with the pod's uid as a precondition).
pub(crate) fn binding(pod: &Pod, node: &str) -> Binding {
    Binding {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    }
}

/// Binds `pod` to `node`, retrying transient failures. A pod that is already bound, deleted or
/// replaced (409 / 404) is left alone.
pub(crate) async fn bind(client: Client, pod: Pod, node: String) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let body = binding(&pod, &node);
    for attempt in 1..=BIND_ATTEMPTS {
        let result: Result<serde_json::Value, kube::Error> = api
            .create_subresource("binding", &name, &PostParams::default(), &body)
            .await;
        match result {
            Ok(_) => {
                tracing::debug!(%namespace, pod = %name, %node, "bound pod");
                return;
            }
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                tracing::debug!(%namespace, pod = %name, reason = %status.message, "pod not bound");
                return;
            }
            Err(e) => {
                tracing::warn!(%namespace, pod = %name, attempt, error = %e, "cannot bind pod");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn binds_only_pods_for_the_default_scheduler() {
        let base = "metadata: {name: p, namespace: ns, uid: u}\nspec:\n  containers: [{name: c, image: busybox}]\n";
        assert!(should_bind(&pod(base)));
        assert!(should_bind(&pod(&format!(
            "{base}  schedulerName: default-scheduler\n"
        ))));
        assert!(!should_bind(&pod(&format!(
            "{base}  schedulerName: other\n"
        ))));
        assert!(!should_bind(&pod(&format!("{base}  nodeName: n1\n"))));
        assert!(!should_bind(&pod(&format!(
            "{base}  schedulingGates: [{{name: g}}]\n"
        ))));
        assert!(!should_bind(&pod(&format!(
            "{base}status: {{phase: Failed}}\n"
        ))));
        let b = serde_json::to_value(binding(&pod(base), "testenv-node")).unwrap();
        assert_eq!(b["target"]["kind"], "Node");
        assert_eq!(b["target"]["name"], "testenv-node");
        assert_eq!(b["metadata"]["uid"], "u");
    }
}

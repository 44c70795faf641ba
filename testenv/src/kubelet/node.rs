//! The kubelet's Node: registration (labels, capacity, Ready condition), the `not-ready` taint
//! removal (the job of the node lifecycle controller, which the test control plane does not run),
//! and the heartbeat: the node Lease in `kube-node-lease` and the Ready condition's
//! `lastHeartbeatTime`, renewed every [`HEARTBEAT_INTERVAL`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Namespace, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec,
    NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::KubeletError;
use super::env_resolve::{LOOPBACK_IP, NODE_CPU, NODE_EPHEMERAL_STORAGE, NODE_MEMORY};

/// How often the Lease and the Ready condition are renewed (the kubelet's default).
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// The Lease's duration (the kubelet's default).
const LEASE_DURATION_SECONDS: i32 = 40;
/// The namespace holding node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint the `TaintNodesByCondition` admission plugin puts on every new node.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The pods the node accepts.
const MAX_PODS: &str = "110";
/// The version reported in `nodeInfo.kubeletVersion`.
const KUBELET_VERSION: &str = "v1.36.0-testenv";

/// The `kubernetes.io/arch` value of this machine.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn resources() -> BTreeMap<String, Quantity> {
    [
        ("cpu", NODE_CPU),
        ("memory", NODE_MEMORY),
        ("ephemeral-storage", NODE_EPHEMERAL_STORAGE),
        ("pods", MAX_PODS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
    .collect()
}

/// The node's status at `now`; the Ready condition has been true since `ready_since`.
pub(crate) fn node_status(ready_since: &Time, now: &Time) -> NodeStatus {
    let condition = |type_: &str, ok: bool, reason: &str, message: &str| NodeCondition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(ready_since.clone()),
    };
    NodeStatus {
        capacity: Some(resources()),
        allocatable: Some(resources()),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                true,
                "KubeletReady",
                "testenv kubelet is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: LOOPBACK_IP.to_owned(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: "localhost".to_owned(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().to_owned(),
            boot_id: String::new(),
            container_runtime_version: "testenv://local-processes".to_owned(),
            kernel_version: String::new(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_owned(),
            machine_id: String::new(),
            operating_system: "linux".to_owned(),
            os_image: "testenv".to_owned(),
            system_uuid: String::new(),
            swap: None,
        }),
        ..NodeStatus::default()
    }
}

/// The Node object registered for `name`.
pub(crate) fn node_object(name: &str, ready_since: &Time) -> Node {
    let labels = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", go_arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", go_arch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(node_status(ready_since, ready_since)),
    }
}

/// The node's Lease, owned by the Node (uid `node_uid`), renewed at `now`.
pub(crate) fn lease_object(name: &str, node_uid: Option<&str>, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(LEASE_NAMESPACE.to_owned()),
            owner_references: node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".to_owned(),
                    kind: "Node".to_owned(),
                    name: name.to_owned(),
                    uid: uid.to_owned(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_owned()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Creates (or adopts) the Node, marks it Ready, removes the `not-ready` taint and creates its
/// Lease. Returns the node's uid.
pub(crate) async fn register(
    client: &Client,
    name: &str,
    ready_since: &Time,
) -> Result<Option<String>, KubeletError> {
    let err = |source| KubeletError::RegisterNode {
        node: name.to_owned(),
        source,
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let node = match nodes
        .create(&PostParams::default(), &node_object(name, ready_since))
        .await
    {
        Ok(node) => node,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            nodes.get(name).await.map_err(err)?
        }
        Err(e) => return Err(err(e)),
    };
    patch_node_status(&nodes, name, ready_since)
        .await
        .map_err(err)?;
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if taints.iter().any(|t| t.key == NOT_READY_TAINT) {
        let kept: Vec<_> = taints
            .into_iter()
            .filter(|t| t.key != NOT_READY_TAINT)
            .collect();
        let patch = serde_json::json!({ "spec": { "taints": kept } });
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(err)?;
    }
    let uid = node.metadata.uid.clone();
    ensure_lease_namespace(client).await?;
    renew_lease(client, name, uid.as_deref()).await?;
    Ok(uid)
}

/// Creates `kube-node-lease` if the API server has not yet (it does so shortly after start).
async fn ensure_lease_namespace(client: &Client) -> Result<(), KubeletError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(LEASE_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(KubeletError::Lease {
            node: LEASE_NAMESPACE.to_owned(),
            source,
        }),
    }
}

async fn patch_node_status(
    nodes: &Api<Node>,
    name: &str,
    ready_since: &Time,
) -> Result<(), kube::Error> {
    let now = Time(Timestamp::now());
    let patch = serde_json::json!({ "status": node_status(ready_since, &now) });
    nodes
        .patch_status(name, &super::patch_params(), &Patch::Strategic(&patch))
        .await
        .map(|_| ())
}

/// Renews the node's Lease (creating it when missing).
async fn renew_lease(
    client: &Client,
    name: &str,
    node_uid: Option<&str>,
) -> Result<(), KubeletError> {
    let err = |source| KubeletError::Lease {
        node: name.to_owned(),
        source,
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease = lease_object(name, node_uid, Timestamp::now());
    let patch = serde_json::json!({ "spec": lease.spec });
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => leases
            .create(&PostParams::default(), &lease)
            .await
            .map(|_| ())
            .map_err(err),
        Err(e) => Err(err(e)),
    }
}

/// Renews the Lease and the Ready heartbeat every [`HEARTBEAT_INTERVAL`], forever (failures are
/// logged and retried at the next tick).
pub(crate) async fn heartbeat(
    client: Client,
    name: String,
    node_uid: Option<String>,
    ready_since: Time,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; registration just did it
    loop {
        ticker.tick().await;
        if let Err(e) = renew_lease(&client, &name, node_uid.as_deref()).await {
            tracing::warn!(node = %name, error = %e, "cannot renew the node lease");
        }
        if let Err(e) = patch_node_status(&nodes, &name, &ready_since).await {
            tracing::warn!(node = %name, error = %e, "cannot refresh the node's Ready heartbeat");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_is_ready_with_capacity() {
        let since = Time(Timestamp::from_second(100).unwrap());
        let node = node_object("testenv-node", &since);
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(
            json["metadata"]["labels"]["kubernetes.io/hostname"],
            "testenv-node"
        );
        assert_eq!(json["status"]["capacity"]["cpu"], "8");
        assert_eq!(json["status"]["allocatable"]["memory"], "32Gi");
        assert_eq!(json["status"]["allocatable"]["pods"], "110");
        let ready = json["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");

        let later = Time(Timestamp::from_second(200).unwrap());
        let status = serde_json::to_value(node_status(&since, &later)).unwrap();
        let ready = &status["conditions"][3];
        assert_eq!(ready["lastHeartbeatTime"], "1970-01-01T00:03:20Z");
        assert_eq!(ready["lastTransitionTime"], "1970-01-01T00:01:40Z");
    }

    #[test]
    fn lease_is_owned_by_the_node() {
        let lease = lease_object("n", Some("uid-1"), Timestamp::from_second(5).unwrap());
        let json = serde_json::to_value(&lease).unwrap();
        assert_eq!(json["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(json["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(json["spec"]["holderIdentity"], "n");
        assert_eq!(json["spec"]["leaseDurationSeconds"], 40);
    }
}

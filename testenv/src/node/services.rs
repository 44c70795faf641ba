//! Cluster objects the real node needs, and the configuration of its two Service-level
//! components: CoreDNS (cluster DNS, a host process in the node's network namespace) and
//! kube-proxy (iptables mode).
//!
//! Host processes become Services the way a cluster reaches anything outside it: a Service
//! without a selector and an EndpointSlice naming the host address ([`host_service`]). CoreDNS
//! is `kube-system/kube-dns` at [`CLUSTER_DNS_IP`]; the collector is
//! `testenv-system/otel-collector` (see [`super::COLLECTOR_SERVICE`]).
//!
//! It must not start processes.

use std::net::Ipv4Addr;
use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};

use super::NodeError;

/// The cluster DNS Service's IP (in the apiserver's Service range, `10.0.0.0/24`).
pub const CLUSTER_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
/// CoreDNS's user name (its client certificate's CN).
pub const COREDNS_USER: &str = "system:testenv:coredns";
/// The field manager of the objects this module applies.
const FIELD_MANAGER: &str = "testenv-node";

/// One port of a host Service: name, protocol (`TCP`/`UDP`), the Service's port, and the port
/// the host process listens on.
#[derive(Debug, Clone, Copy)]
pub struct HostPort<'a> {
    /// The port's name (shared by the Service and the EndpointSlice).
    pub name: &'a str,
    /// `TCP` or `UDP`.
    pub protocol: &'a str,
    /// The Service's port.
    pub port: u16,
    /// The host process's port.
    pub target: u16,
}

/// Exposes an HTTP server listening on the node's host address (`address:port`) as Service
/// `namespace/name`, port 80 (see [`host_service`]); returns its base URL inside the cluster,
/// `http://<name>.<namespace>.svc`.
pub async fn host_http_service(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    address: Ipv4Addr,
    port: u16,
) -> Result<String, NodeError> {
    host_service(
        client,
        namespace,
        name,
        None,
        address,
        &[HostPort {
            name: "http",
            protocol: "TCP",
            port: 80,
            target: port,
        }],
    )
    .await?;
    Ok(format!("http://{name}.{namespace}.svc"))
}

/// Applies namespace `namespace` (if missing), Service `name` without a selector (cluster IP
/// `cluster_ip`, or allocated) and the EndpointSlice `<name>-host` pointing at `address`.
pub async fn host_service(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    cluster_ip: Option<Ipv4Addr>,
    address: Ipv4Addr,
    ports: &[HostPort<'_>],
) -> Result<(), NodeError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let api_err = |what: String| move |source| NodeError::Api { what, source };
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &params, &Patch::Apply(&ns))
        .await
        .map_err(api_err(format!("cannot apply namespace {namespace}")))?;
    let service = Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ip.map(|ip| ip.to_string()),
            ports: Some(
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.to_owned()),
                        protocol: Some(p.protocol.to_owned()),
                        port: i32::from(p.port),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Api::<Service>::namespaced(client.clone(), namespace)
        .patch(name, &params, &Patch::Apply(&service))
        .await
        .map_err(api_err(format!("cannot apply Service {namespace}/{name}")))?;
    let slice_name = format!("{name}-host");
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    ("kubernetes.io/service-name".to_owned(), name.to_owned()),
                    (
                        "endpointslice.kubernetes.io/managed-by".to_owned(),
                        FIELD_MANAGER.to_owned(),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![address.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Endpoint::default()
        }]),
        ports: Some(
            ports
                .iter()
                .map(|p| EndpointPort {
                    name: Some(p.name.to_owned()),
                    protocol: Some(p.protocol.to_owned()),
                    port: Some(i32::from(p.target)),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    };
    Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .patch(&slice_name, &params, &Patch::Apply(&slice))
        .await
        .map_err(api_err(format!(
            "cannot apply EndpointSlice {namespace}/{slice_name}"
        )))?;
    Ok(())
}

/// The read-only permissions CoreDNS's kubernetes plugin needs (kubeadm's `system:coredns`),
/// bound to [`COREDNS_USER`].
pub async fn coredns_rbac(client: &kube::Client) -> Result<(), NodeError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let name = "testenv:coredns";
    let rule = |group: &str, resources: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: vec!["list".to_owned(), "watch".to_owned()],
        ..PolicyRule::default()
    };
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule("", &["services", "pods", "namespaces"]),
            rule("discovery.k8s.io", &["endpointslices"]),
        ]),
        ..ClusterRole::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "User".to_owned(),
            name: COREDNS_USER.to_owned(),
            ..Subject::default()
        }]),
    };
    let api_err = |what: &'static str| {
        move |source| NodeError::Api {
            what: what.to_owned(),
            source,
        }
    };
    Api::<ClusterRole>::all(client.clone())
        .patch(name, &params, &Patch::Apply(&role))
        .await
        .map_err(api_err("cannot apply ClusterRole testenv:coredns"))?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(name, &params, &Patch::Apply(&binding))
        .await
        .map_err(api_err("cannot apply ClusterRoleBinding testenv:coredns"))?;
    Ok(())
}

/// CoreDNS's Corefile: answers `cluster.local` (and reverse lookups) from the API on
/// `<bind>:53`, nothing else (no upstream: the tests need no outside names).
pub fn render_corefile(bind: Ipv4Addr, kubeconfig: &Path) -> String {
    format!(
        ".:53 {{\n    bind {bind}\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {} testenv\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 5\n    }}\n    cache 5\n}}\n",
        kubeconfig.display()
    )
}

/// kube-proxy's `KubeProxyConfiguration`: iptables mode, the node's pod range as cluster CIDR,
/// metrics and health on the namespace's loopback, and no conntrack sysctl changes (the
/// conntrack table size is machine-wide).
pub fn render_proxy_config(
    kubeconfig: &Path,
    node_name: &str,
    pod_cidr: &str,
) -> Result<String, serde_norway::Error> {
    let config = serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": { "kubeconfig": kubeconfig },
        "mode": "iptables",
        "clusterCIDR": pod_cidr,
        "hostnameOverride": node_name,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    });
    serde_norway::to_string(&config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn corefile_binds_the_node_ip_and_serves_cluster_local() {
        let corefile = render_corefile(Ipv4Addr::new(10, 201, 3, 2), Path::new("/x/kubeconfig"));
        assert!(corefile.contains("bind 10.201.3.2"));
        assert!(corefile.contains("kubernetes cluster.local"));
        assert!(corefile.contains("kubeconfig /x/kubeconfig testenv"));
    }

    #[test]
    fn proxy_runs_iptables_mode_on_the_pod_range() {
        let yaml = render_proxy_config(Path::new("/x/kc"), "n", "10.202.0.0/24").unwrap();
        let doc: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(doc["mode"], "iptables");
        assert_eq!(doc["clusterCIDR"], "10.202.0.0/24");
        assert_eq!(doc["conntrack"]["maxPerCore"], 0);
    }
}

//! A container's environment, resolved the way the kubelet does it
//! (`kubelet_pods.go: makeEnvironmentVariables`), as pure functions over the pod and the Secrets
//! it refers to (fetched by the caller, see [`referenced_secrets`]).
//!
//! Only what the pods run here use (the operator's runner pods, the operator's own pod, the
//! tests' shell pods) is implemented:
//! * `env`, in order; a later definition of a name replaces an earlier one.
//! * `value` has `$(VAR)` references to variables defined *before* it expanded; `$$` is a literal
//!   `$`; unknown references stay as written.
//! * `valueFrom`: `secretKeyRef` (`optional: true` leaves the variable unset when the Secret or key
//!   is missing) and `fieldRef` (see [`field_value`]).
//! * `envFrom`, `configMapKeyRef`, `resourceFieldRef` and `fileKeyRef` fail the container with
//!   `CreateContainerConfigError` naming the field ([`EnvError::Unsupported`]), so a pod that
//!   needs them fails loudly instead of running with a different environment.
//! * Not done: service links (`FOO_SERVICE_HOST`, and the `KUBERNETES_SERVICE_*` variables: those
//!   would make in-cluster clients look for `/var/run/secrets/...`; the kubelet module sets
//!   `KUBECONFIG` instead).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};

/// The IP reported for pods and the node: everything runs on the host's loopback.
pub(crate) const LOOPBACK_IP: &str = "127.0.0.1";
/// The node's allocatable CPU.
pub(crate) const NODE_CPU: &str = "8";
/// The node's allocatable memory.
pub(crate) const NODE_MEMORY: &str = "32Gi";
/// The node's allocatable ephemeral storage.
pub(crate) const NODE_EPHEMERAL_STORAGE: &str = "100Gi";

/// Why a container's environment cannot be built. The `Display` text is the kubelet's, shown as
/// the `CreateContainerConfigError` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvError {
    /// A Secret that is not optional does not exist.
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    /// A Secret lacks a key that is not optional.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        /// The key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The Secret.
        name: String,
    },
    /// A `fieldRef` path this kubelet (or the real one) does not support.
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    /// A source this kubelet does not implement.
    #[error("{0} is not supported by the testenv kubelet")]
    Unsupported(&'static str),
}

/// The Secrets of a pod's namespace that a container refers to: name → decoded data, or `None`
/// when the Secret does not exist. A name that is absent counts as not existing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvSources {
    /// Secret name → decoded data.
    pub secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

/// The names of the Secrets that `container`'s `env` uses.
pub(crate) fn referenced_secrets(container: &Container) -> BTreeSet<String> {
    container
        .env
        .iter()
        .flatten()
        .filter_map(|var| var.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|r| r.name.clone())
        .collect()
}

/// An ordered variable list in which redefining a name replaces its value in place.
#[derive(Debug, Default)]
struct EnvList {
    vars: Vec<(String, String)>,
    index: BTreeMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }
}

/// Resolves `container`'s environment (see the module docs). The result keeps the order in which
/// names were first defined.
pub(crate) fn resolve_env(
    pod: &Pod,
    container: &Container,
    sources: &EnvSources,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env = EnvList::default();

    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(EnvError::Unsupported("envFrom"));
    }

    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) if !value.is_empty() => expand(value, |name| env.get(name)),
            (_, Some(from)) => {
                if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional == Some(true);
                    match sources.secrets.get(&r.name).and_then(Option::as_ref) {
                        None if optional => continue,
                        None => return Err(EnvError::SecretNotFound(r.name.clone())),
                        Some(data) => match data.get(&r.key) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError::SecretKey {
                                    key: r.key.clone(),
                                    namespace: namespace.clone(),
                                    name: r.name.clone(),
                                });
                            }
                        },
                    }
                } else if let Some(r) = &from.field_ref {
                    field_value(pod, &r.field_path)?
                } else if from.config_map_key_ref.is_some() {
                    return Err(EnvError::Unsupported("env[].valueFrom.configMapKeyRef"));
                } else if from.resource_field_ref.is_some() {
                    return Err(EnvError::Unsupported("env[].valueFrom.resourceFieldRef"));
                } else if from.file_key_ref.is_some() {
                    return Err(EnvError::Unsupported("env[].valueFrom.fileKeyRef"));
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.vars)
}

/// Kubernetes `$(VAR)` expansion (`third_party/forked/golang/expansion`): `$(NAME)` becomes
/// `lookup(NAME)` when that is `Some`, else stays `$(NAME)`; `$$` becomes `$`; an unclosed `$(`
/// and a `$` before any other character are kept.
pub(crate) fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            out.push('$');
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            // A lone `$` (also a trailing one) is literal.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API `fieldRef`: `metadata.name|namespace|uid`,
/// `metadata.labels['k']`, `metadata.annotations['k']` (empty when missing), `metadata.labels` /
/// `metadata.annotations` (sorted `k="v"` lines), `spec.nodeName`, `spec.serviceAccountName`,
/// `status.podIP(s)`, `status.hostIP(s)` (both the loopback address).
pub(crate) fn field_value(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        let inner = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(inner.to_owned())
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => {
            LOOPBACK_IP.to_owned()
        }
        _ => {
            if let Some(key) = subscript("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&key).cloned())
                    .unwrap_or_default()
            } else if let Some(key) = subscript("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&key).cloned())
                    .unwrap_or_default()
            } else {
                return Err(EnvError::FieldPath(path.to_owned()));
            }
        }
    };
    Ok(value)
}

/// `k="v"` lines sorted by key, as `fieldpath.FormatMap` writes them (values quoted with Rust's
/// string escapes, which match Go's `%q` for everything but unusual control characters).
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).unwrap()
    }

    /// The last container (the one the tests append `env` to).
    fn container(pod: &Pod) -> Container {
        pod.spec
            .as_ref()
            .unwrap()
            .containers
            .last()
            .unwrap()
            .clone()
    }

    fn data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    const POD: &str = r#"
metadata:
  name: p1
  namespace: ns1
  uid: 1234-uid
  labels: {app: web, tier: "front end"}
  annotations: {note: "hello"}
spec:
  nodeName: testenv-node
  serviceAccountName: runner
  containers:
  - name: other
    image: busybox
    resources:
      limits: {memory: 64Mi}
  - name: main
    image: busybox
    resources:
      limits: {cpu: 500m, memory: 1Gi}
      requests: {cpu: 250m}
"#;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars = BTreeMap::from([("A", "x"), ("B", "y")]);
        let lookup = |n: &str| vars.get(n).copied();
        assert_eq!(expand("$(A)-$(B)", lookup), "x-y");
        assert_eq!(expand("$$(A)", lookup), "$(A)");
        assert_eq!(expand("$$$(A)", lookup), "$x");
        assert_eq!(expand("$(MISSING)", lookup), "$(MISSING)");
        assert_eq!(expand("a$(A", lookup), "a$(A");
        assert_eq!(expand("cost $5 $", lookup), "cost $5 $");
        assert_eq!(expand("$(A)$(A)", lookup), "xx");
        assert_eq!(expand("", lookup), "");
    }

    #[test]
    fn literal_values_expand_earlier_variables_only() {
        let p = pod(&format!(
            "{POD}    env:\n    - {{name: FIRST, value: one}}\n    - {{name: SECOND, value: \"$(FIRST)-$(THIRD)-$$(FIRST)\"}}\n    - {{name: THIRD, value: three}}\n    - {{name: FIRST, value: uno}}\n"
        ));
        let env = resolve_env(&p, &container(&p), &EnvSources::default()).unwrap();
        assert_eq!(get(&env, "SECOND"), Some("one-$(THIRD)-$(FIRST)"));
        // A redefinition replaces the value and keeps the first position.
        assert_eq!(env[0], ("FIRST".to_owned(), "uno".to_owned()));
        assert_eq!(env.len(), 3);
    }

    #[test]
    fn field_refs() {
        let p = pod(POD);
        assert_eq!(field_value(&p, "metadata.name").unwrap(), "p1");
        assert_eq!(field_value(&p, "metadata.namespace").unwrap(), "ns1");
        assert_eq!(field_value(&p, "metadata.uid").unwrap(), "1234-uid");
        assert_eq!(field_value(&p, "metadata.labels['app']").unwrap(), "web");
        assert_eq!(field_value(&p, "metadata.labels['none']").unwrap(), "");
        assert_eq!(
            field_value(&p, "metadata.annotations['note']").unwrap(),
            "hello"
        );
        assert_eq!(
            field_value(&p, "metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"front end\""
        );
        assert_eq!(field_value(&p, "spec.nodeName").unwrap(), "testenv-node");
        assert_eq!(
            field_value(&p, "spec.serviceAccountName").unwrap(),
            "runner"
        );
        assert_eq!(field_value(&p, "status.podIP").unwrap(), "127.0.0.1");
        assert_eq!(field_value(&p, "status.hostIP").unwrap(), "127.0.0.1");
        assert_eq!(
            field_value(&p, "spec.bogus").unwrap_err().to_string(),
            "unsupported fieldPath: spec.bogus"
        );
        // Through env, and usable by later expansions.
        let p = pod(&format!(
            "{POD}    env:\n    - name: NAME\n      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}\n    - {{name: URL, value: \"http://$(NAME).svc\"}}\n"
        ));
        let env = resolve_env(&p, &container(&p), &EnvSources::default()).unwrap();
        assert_eq!(get(&env, "URL"), Some("http://p1.svc"));
    }

    #[test]
    fn secret_refs_honour_optional() {
        let p = pod(&format!(
            r#"{POD}    env:
    - name: TOKEN
      valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}
    - name: OPT
      valueFrom: {{secretKeyRef: {{name: absent, key: k, optional: true}}}}
    - name: OPTKEY
      valueFrom: {{secretKeyRef: {{name: creds, key: nokey, optional: true}}}}
"#
        ));
        let c = container(&p);
        assert_eq!(
            referenced_secrets(&c).into_iter().collect::<Vec<_>>(),
            ["absent", "creds"]
        );

        let mut sources = EnvSources::default();
        sources
            .secrets
            .insert("creds".into(), data(&[("token", "s3cr3t")]));
        sources.secrets.insert("absent".into(), None);
        let env = resolve_env(&p, &c, &sources).unwrap();
        assert_eq!(get(&env, "TOKEN"), Some("s3cr3t"));
        assert_eq!(get(&env, "OPT"), None);
        assert_eq!(get(&env, "OPTKEY"), None);

        let mut missing = sources.clone();
        missing.secrets.insert("creds".into(), None);
        assert_eq!(
            resolve_env(&p, &c, &missing).unwrap_err().to_string(),
            "secret \"creds\" not found"
        );
        let mut no_key = sources;
        no_key
            .secrets
            .insert("creds".into(), data(&[("other", "x")]));
        assert_eq!(
            resolve_env(&p, &c, &no_key).unwrap_err().to_string(),
            "couldn't find key token in Secret ns1/creds"
        );
    }

    #[test]
    fn unimplemented_sources_fail_naming_the_field() {
        for (env, field) in [
            ("    envFrom:\n    - secretRef: {name: creds}\n", "envFrom"),
            (
                "    env:\n    - name: MODE\n      valueFrom: {configMapKeyRef: {name: cfg, key: mode}}\n",
                "env[].valueFrom.configMapKeyRef",
            ),
            (
                "    env:\n    - name: MEM\n      valueFrom: {resourceFieldRef: {resource: limits.memory}}\n",
                "env[].valueFrom.resourceFieldRef",
            ),
        ] {
            let p = pod(&format!("{POD}{env}"));
            assert_eq!(
                resolve_env(&p, &container(&p), &EnvSources::default()).unwrap_err(),
                EnvError::Unsupported(field)
            );
        }
    }
}

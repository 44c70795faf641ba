//! A container's environment, resolved the way the kubelet does it
//! (`kubelet_pods.go: makeEnvironmentVariables`), as pure functions over the pod and the Secrets
//! and ConfigMaps it refers to (fetched by the caller, see [`referenced_objects`]).
//!
//! * `envFrom` first, in order, each key with its `prefix`; keys that are not valid variable names
//!   are skipped. Then `env`, in order; a later definition of a name replaces an earlier one.
//! * `value` has `$(VAR)` references to variables defined *before* it expanded; `$$` is a literal
//!   `$`; unknown references stay as written.
//! * `valueFrom`: `secretKeyRef` / `configMapKeyRef` (`optional: true` leaves the variable unset when
//!   the object or key is missing), `fieldRef` (see [`field_value`]), `resourceFieldRef` (see
//!   [`resource_value`]). `fileKeyRef` is not supported.
//! * Not done: service links (`FOO_SERVICE_HOST`, and the `KUBERNETES_SERVICE_*` variables: those
//!   would make in-cluster clients look for `/var/run/secrets/...`; the kubelet module sets
//!   `KUBECONFIG` instead).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};

/// The IP reported for pods and the node: everything runs on the host's loopback.
pub(crate) const LOOPBACK_IP: &str = "127.0.0.1";
/// The node's allocatable CPU, used for `limits.cpu` when a container sets no limit.
pub(crate) const NODE_CPU: &str = "8";
/// The node's allocatable memory, used for `limits.memory` when a container sets no limit.
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
    /// A ConfigMap that is not optional does not exist.
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
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
    /// A ConfigMap lacks a key that is not optional.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        /// The key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The ConfigMap.
        name: String,
    },
    /// A `fieldRef` path this kubelet (or the real one) does not support.
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    /// A `resourceFieldRef` that cannot be evaluated.
    #[error("{0}")]
    ResourceField(String),
    /// A source this kubelet does not implement.
    #[error("{0} is not supported by the testenv kubelet")]
    Unsupported(&'static str),
}

/// The Secrets and ConfigMaps of a pod's namespace that a container refers to: name → data, or
/// `None` when the object does not exist. A name that is absent counts as not existing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvSources {
    /// Secret name → decoded data.
    pub secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// ConfigMap name → `data`.
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

/// The names of the Secrets and of the ConfigMaps that `container`'s `env` and `envFrom` use.
pub(crate) fn referenced_objects(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut config_maps = BTreeSet::new();
    for source in container.env_from.iter().flatten() {
        if let Some(r) = &source.secret_ref {
            secrets.insert(r.name.clone());
        }
        if let Some(r) = &source.config_map_ref {
            config_maps.insert(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.secret_key_ref {
            secrets.insert(r.name.clone());
        }
        if let Some(r) = &from.config_map_key_ref {
            config_maps.insert(r.name.clone());
        }
    }
    (secrets, config_maps)
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

    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        let data = if let Some(r) = &source.config_map_ref {
            match sources.config_maps.get(&r.name).and_then(Option::as_ref) {
                Some(data) => data,
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        } else if let Some(r) = &source.secret_ref {
            match sources.secrets.get(&r.name).and_then(Option::as_ref) {
                Some(data) => data,
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        } else {
            continue;
        };
        for (key, value) in data {
            let name = format!("{prefix}{key}");
            if is_valid_env_name(&name) {
                env.set(name, value.clone());
            }
        }
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
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    match sources.config_maps.get(&r.name).and_then(Option::as_ref) {
                        None if optional => continue,
                        None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                        Some(data) => match data.get(&r.key) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError::ConfigMapKey {
                                    key: r.key.clone(),
                                    namespace: namespace.clone(),
                                    name: r.name.clone(),
                                });
                            }
                        },
                    }
                } else if let Some(r) = &from.field_ref {
                    field_value(pod, &r.field_path)?
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match r.container_name.as_deref() {
                        Some(name) if !name.is_empty() => {
                            find_container(pod, name).ok_or_else(|| {
                                EnvError::ResourceField(format!(
                                    "container {name} referenced by resourceFieldRef not found"
                                ))
                            })?
                        }
                        _ => container,
                    };
                    let divisor = r.divisor.as_ref().map(|q| q.0.as_str());
                    resource_value(target, &r.resource, divisor)?
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

/// The container called `name` among the pod's containers and init containers.
fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
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

/// Kubernetes' environment variable name rule since `RelaxedEnvironmentVariableValidation`:
/// printable ASCII except `=`, not empty.
fn is_valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (32..=126).contains(&b) && b != b'=')
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

/// The value of a `resourceFieldRef` for `container`: `limits.*` falls back to the node's
/// allocatable amount when the container sets no limit, `requests.*` to the limit and then to 0;
/// the result is `ceil(amount / divisor)` (CPU computed in millicores, like the kubelet).
pub(crate) fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, EnvError> {
    let err = |what: String| EnvError::ResourceField(what);
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| err(format!("unsupported container resource : {resource}")))?;
    let resources = container.resources.as_ref();
    let limits = resources.and_then(|r| r.limits.as_ref());
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limit = limits.and_then(|l| l.get(name)).map(|q| q.0.clone());
    let node_default = match name {
        "cpu" => Some(NODE_CPU),
        "memory" => Some(NODE_MEMORY),
        "ephemeral-storage" => Some(NODE_EPHEMERAL_STORAGE),
        _ if name.starts_with("hugepages-") => Some("0"),
        _ => None,
    }
    .ok_or_else(|| err(format!("unsupported container resource : {resource}")))?;
    let amount = match kind {
        "limits" => limit.unwrap_or_else(|| node_default.to_owned()),
        "requests" => requests
            .and_then(|r| r.get(name))
            .map(|q| q.0.clone())
            .or(limit)
            .unwrap_or_else(|| "0".to_owned()),
        _ => return Err(err(format!("unsupported container resource : {resource}"))),
    };
    let amount = parse_quantity(&amount).map_err(err)?;
    let divisor = parse_quantity(divisor.unwrap_or("1")).map_err(err)?;
    let value = if name == "cpu" {
        ceil_div(
            ceil_div(amount, 1_000_000),
            ceil_div(divisor, 1_000_000).max(1),
        )
    } else {
        ceil_div(ceil_div(amount, NANO), ceil_div(divisor, NANO).max(1))
    };
    Ok(value.to_string())
}

/// Units per one in [`parse_quantity`]'s result.
const NANO: i128 = 1_000_000_000;

/// `ceil(a / b)` for a non-negative `b > 0`.
fn ceil_div(a: i128, b: i128) -> i128 {
    if b <= 0 {
        return 0;
    }
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

/// A Kubernetes quantity (`500m`, `1.5Gi`, `2`, `1e3`, `128974848`) in billionths, rounded up.
pub(crate) fn parse_quantity(text: &str) -> Result<i128, String> {
    let bad = || format!("invalid quantity {text:?}");
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, number) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    if !(int_part.bytes().all(|b| b.is_ascii_digit())
        && frac_part.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().map_err(|_| bad())?;
    // value = mantissa * 10^exp10 * 2^exp2
    let mut exp10: i32 = -(i32::try_from(frac_part.len()).map_err(|_| bad())?);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .and_then(|e| e.parse::<i32>().ok())
                .ok_or_else(bad)?;
            exp10 += exponent;
        }
    }
    exp10 += 9; // to billionths
    let scaled = mantissa
        .checked_mul(1_i128.checked_shl(exp2).ok_or_else(bad)?)
        .ok_or_else(bad)?;
    let value = if exp10 >= 0 {
        let factor = 10_i128.checked_pow(exp10.unsigned_abs()).ok_or_else(bad)?;
        scaled.checked_mul(factor).ok_or_else(bad)?
    } else {
        let factor = 10_i128.checked_pow(exp10.unsigned_abs()).ok_or_else(bad)?;
        ceil_div(scaled, factor)
    };
    Ok(if negative { -value } else { value })
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
    fn secret_and_config_map_refs_honour_optional() {
        let p = pod(&format!(
            r#"{POD}    env:
    - name: TOKEN
      valueFrom: {{secretKeyRef: {{name: creds, key: token}}}}
    - name: MODE
      valueFrom: {{configMapKeyRef: {{name: cfg, key: mode}}}}
    - name: OPT
      valueFrom: {{secretKeyRef: {{name: absent, key: k, optional: true}}}}
    - name: OPTKEY
      valueFrom: {{configMapKeyRef: {{name: cfg, key: nokey, optional: true}}}}
"#
        ));
        let c = container(&p);
        let (secrets, cms) = referenced_objects(&c);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["absent", "creds"]);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["cfg"]);

        let mut sources = EnvSources::default();
        sources
            .secrets
            .insert("creds".into(), data(&[("token", "s3cr3t")]));
        sources.secrets.insert("absent".into(), None);
        sources
            .config_maps
            .insert("cfg".into(), data(&[("mode", "fast")]));
        let env = resolve_env(&p, &c, &sources).unwrap();
        assert_eq!(get(&env, "TOKEN"), Some("s3cr3t"));
        assert_eq!(get(&env, "MODE"), Some("fast"));
        assert_eq!(get(&env, "OPT"), None);
        assert_eq!(get(&env, "OPTKEY"), None);

        let mut missing = sources.clone();
        missing.secrets.insert("creds".into(), None);
        assert_eq!(
            resolve_env(&p, &c, &missing).unwrap_err().to_string(),
            "secret \"creds\" not found"
        );
        let mut no_key = sources.clone();
        no_key
            .secrets
            .insert("creds".into(), data(&[("other", "x")]));
        assert_eq!(
            resolve_env(&p, &c, &no_key).unwrap_err().to_string(),
            "couldn't find key token in Secret ns1/creds"
        );
        let mut no_cm = sources.clone();
        no_cm.config_maps.remove("cfg");
        assert_eq!(
            resolve_env(&p, &c, &no_cm).unwrap_err().to_string(),
            "configmap \"cfg\" not found"
        );
        let mut no_cm_key = sources;
        no_cm_key.config_maps.insert("cfg".into(), data(&[]));
        assert_eq!(
            resolve_env(&p, &c, &no_cm_key).unwrap_err().to_string(),
            "couldn't find key mode in ConfigMap ns1/cfg"
        );
    }

    #[test]
    fn env_from_applies_prefixes_and_env_overrides() {
        let p = pod(&format!(
            r#"{POD}    envFrom:
    - configMapRef: {{name: cfg}}
      prefix: CFG_
    - secretRef: {{name: creds}}
    - secretRef: {{name: maybe, optional: true}}
    env:
    - {{name: user, value: "override-$(CFG_mode)"}}
"#
        ));
        let c = container(&p);
        let mut sources = EnvSources::default();
        sources
            .config_maps
            .insert("cfg".into(), data(&[("mode", "fast"), ("bad=key", "x")]));
        sources
            .secrets
            .insert("creds".into(), data(&[("user", "alice"), ("pass", "pw")]));
        let env = resolve_env(&p, &c, &sources).unwrap();
        assert_eq!(get(&env, "CFG_mode"), Some("fast"));
        assert_eq!(get(&env, "CFG_bad=key"), None);
        assert_eq!(get(&env, "pass"), Some("pw"));
        assert_eq!(get(&env, "user"), Some("override-fast"));
        sources.secrets.remove("creds");
        assert_eq!(
            resolve_env(&p, &c, &sources).unwrap_err(),
            EnvError::SecretNotFound("creds".into())
        );
    }

    #[test]
    fn resource_field_refs() {
        let p = pod(POD);
        let other = &p.spec.as_ref().unwrap().containers[0];
        let main = &p.spec.as_ref().unwrap().containers[1];
        assert_eq!(resource_value(main, "limits.cpu", None).unwrap(), "1");
        assert_eq!(
            resource_value(main, "limits.cpu", Some("1m")).unwrap(),
            "500"
        );
        assert_eq!(
            resource_value(main, "requests.cpu", Some("1m")).unwrap(),
            "250"
        );
        assert_eq!(
            resource_value(main, "limits.memory", None).unwrap(),
            "1073741824"
        );
        assert_eq!(
            resource_value(main, "limits.memory", Some("1Mi")).unwrap(),
            "1024"
        );
        // Requests default to limits, limits to the node's allocatable.
        assert_eq!(
            resource_value(other, "requests.memory", Some("1Mi")).unwrap(),
            "64"
        );
        assert_eq!(resource_value(other, "limits.cpu", None).unwrap(), "8");
        assert_eq!(resource_value(other, "requests.cpu", None).unwrap(), "0");
        assert_eq!(
            resource_value(other, "limits.ephemeral-storage", Some("1Gi")).unwrap(),
            "100"
        );
        assert!(resource_value(other, "limits.gpu", None).is_err());

        let p = pod(&format!(
            "{POD}    env:\n    - name: OTHER_MEM\n      valueFrom: {{resourceFieldRef: {{containerName: other, resource: limits.memory, divisor: 1Mi}}}}\n"
        ));
        let env = resolve_env(&p, &container(&p), &EnvSources::default()).unwrap();
        assert_eq!(get(&env, "OTHER_MEM"), Some("64"));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1").unwrap(), NANO);
        assert_eq!(parse_quantity("500m").unwrap(), NANO / 2);
        assert_eq!(parse_quantity("1.5").unwrap(), 3 * NANO / 2);
        assert_eq!(parse_quantity("1Ki").unwrap(), 1024 * NANO);
        assert_eq!(parse_quantity("1.5Gi").unwrap(), 3 * (1 << 29) * NANO);
        assert_eq!(parse_quantity("2k").unwrap(), 2000 * NANO);
        assert_eq!(parse_quantity("1e3").unwrap(), 1000 * NANO);
        assert_eq!(parse_quantity("1E").unwrap(), 10_i128.pow(18) * NANO);
        assert_eq!(parse_quantity("1n").unwrap(), 1);
        assert_eq!(parse_quantity(".5").unwrap(), NANO / 2);
        assert!(parse_quantity("abc").is_err());
        assert!(parse_quantity("1Xi").is_err());
        assert!(parse_quantity("").is_err());
    }
}

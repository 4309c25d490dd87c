//! The objects a session owns in the cluster, built as plain JSON apply bodies: what is
//! written here is exactly what server-side apply sends (and what the tests compare).
//!
//! Per session, both named `cake-session-<session id>`:
//!
//! - a **Pod**: init container `data-plane-init` (the init image's own entrypoint prepares
//!   `/workspace` and the git config in `$HOME`), container `data-plane` running
//!   `opencode serve --hostname 0.0.0.0 --port 4096` in `/workspace`; emptyDir volumes for the
//!   workspace, `$HOME` (`/home/cake`, where OpenCode keeps its database and history) and
//!   `/tmp`, so the root filesystem can be read-only, each with a `sizeLimit`
//!   (`CAKE_DATA_PLANE_VOLUME_SIZE_LIMITS`: a session that fills one is evicted with a reason
//!   saying which, instead of filling the node's disk); non-root (uid 1000), no privilege
//!   escalation, every capability dropped, seccomp `RuntimeDefault`, no service-account token,
//!   restart policy `Never`, a TCP readiness probe on 4096 (OpenCode asks for a password on
//!   every HTTP route, so an HTTP probe would need it);
//! - a **Secret** with the session's material as env vars: `OPENCODE_SERVER_PASSWORD`,
//!   `OPENCODE_CONFIG_CONTENT`, the provider keys the config references and, when the owner
//!   granted the session credentials, its broker token `CAKE_BROKER_TOKEN` (the pod then also
//!   gets `CAKE_BROKER_URL`, for `cake git-credential`); the container
//!   reads each with a `secretKeyRef`, so no secret is in the pod spec. The Secret is owned by
//!   the Pod (ownerReferences), so the garbage collector removes it with the Pod even if the
//!   control plane never gets to.

use std::collections::BTreeMap;

use base64::Engine;
use cake_core::ports::RuntimeSpec;
use cake_core::session::SessionId;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::KubeSettings;

/// The port OpenCode listens on in every data-plane pod.
pub const OPENCODE_PORT: u16 = 4096;
/// The label holding the session id.
pub const SESSION_LABEL: &str = "cake.ai/session-id";
/// `app.kubernetes.io/managed-by` of everything the control plane creates.
pub const MANAGED_BY: &str = "cake-agents";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "cake-control-plane";
/// `$HOME` of both containers (an emptyDir).
pub const HOME: &str = "/home/cake";
/// The project directory (an emptyDir shared with the init container).
pub const WORKSPACE: &str = "/workspace";
/// The container running OpenCode.
pub const DATA_PLANE_CONTAINER: &str = "data-plane";
/// The init container preparing the workspace.
pub const INIT_CONTAINER: &str = "data-plane-init";
/// The emptyDir volumes of a session pod and where they are mounted.
pub const VOLUMES: [(&str, &str); 3] = [("workspace", WORKSPACE), ("home", HOME), ("tmp", "/tmp")];
/// Secret key of the OpenCode password.
pub const PASSWORD_KEY: &str = "OPENCODE_SERVER_PASSWORD";
/// The Secret key (and env var) of the session's broker token, present when its owner granted
/// it credentials; `cake git-credential` presents it to the control plane.
pub const BROKER_TOKEN_KEY: &str = "CAKE_BROKER_TOKEN";
/// The env var telling `cake git-credential` where the control plane's broker is.
pub const BROKER_URL_ENV: &str = "CAKE_BROKER_URL";
/// Secret key of the OpenCode config.
pub const CONFIG_KEY: &str = "OPENCODE_CONFIG_CONTENT";

/// The name of a session's Pod and Secret.
pub fn object_name(id: SessionId) -> String {
    format!("cake-session-{}", id.0)
}

/// The label selector of every data-plane pod of this installation.
pub fn selector(instance: &str) -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/instance={instance}")
}

/// The Kubernetes recommended labels, plus the session id.
pub fn labels(instance: &str, id: SessionId) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "cake-agents".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), instance.to_owned()),
        ("app.kubernetes.io/component".to_owned(), "data-plane".to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "cake-agents".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned()),
        (SESSION_LABEL.to_owned(), id.0.to_string()),
    ])
}

/// The env every OpenCode gets besides its secrets: the same isolation and hardening as the
/// local runtime (its own `HOME` and XDG dirs; no model catalogue fetch, no self-update, no
/// project-level config from the user's repository).
fn hardening_env() -> Vec<Value> {
    [
        ("LANG", "C.UTF-8".to_owned()),
        ("HOME", HOME.to_owned()),
        ("TMPDIR", "/tmp".to_owned()),
        ("XDG_CONFIG_HOME", format!("{HOME}/.config")),
        ("XDG_DATA_HOME", format!("{HOME}/.local/share")),
        ("XDG_CACHE_HOME", format!("{HOME}/.cache")),
        ("XDG_STATE_HOME", format!("{HOME}/.local/state")),
        ("OPENCODE_DISABLE_MODELS_FETCH", "1".to_owned()),
        ("OPENCODE_DISABLE_AUTOUPDATE", "1".to_owned()),
        ("OPENCODE_DISABLE_PROJECT_CONFIG", "1".to_owned()),
        // An agent cannot answer git's password prompt: fail instead of hanging.
        ("GIT_TERMINAL_PROMPT", "0".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| json!({"name": name, "value": value}))
    .collect()
}

/// The names of the Secret's keys, in the order the container's env lists them.
pub fn secret_keys(spec: &RuntimeSpec) -> Vec<String> {
    let mut keys = vec![PASSWORD_KEY.to_owned(), CONFIG_KEY.to_owned()];
    keys.extend(spec.env.iter().map(|(name, _)| name.clone()));
    if spec.broker_token.is_some() {
        keys.push(BROKER_TOKEN_KEY.to_owned());
    }
    keys
}

fn container_security_context() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

fn mounts() -> Value {
    VOLUMES.iter().map(|(name, path)| json!({"name": name, "mountPath": path})).collect()
}

/// The emptyDir volumes, each with its size limit when one is set.
fn volumes(settings: &KubeSettings) -> Value {
    VOLUMES
        .iter()
        .map(|(name, _)| match settings.volume_size_limits.get(*name) {
            Some(limit) => json!({"name": name, "emptyDir": {"sizeLimit": limit}}),
            None => json!({"name": name, "emptyDir": {}}),
        })
        .collect()
}

/// The Pod of one session (the server-side apply body).
pub fn pod(settings: &KubeSettings, namespace: &str, spec: &RuntimeSpec) -> Value {
    let name = object_name(spec.session_id);
    let mut env = hardening_env();
    env.extend(
        secret_keys(spec)
            .into_iter()
            .map(|key| json!({"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})),
    );
    if spec.broker_token.is_some()
        && let Some(url) = &settings.broker_url
    {
        env.push(json!({"name": BROKER_URL_ENV, "value": url}));
    }
    let resources = settings.resources.clone();
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "initContainers": [{
            "name": INIT_CONTAINER,
            "image": settings.init_image,
            "imagePullPolicy": settings.image_pull_policy,
            "env": [
                {"name": "HOME", "value": HOME},
                {"name": "CAKE_WORKSPACE", "value": WORKSPACE},
                {"name": "CAKE_SESSION_ID", "value": spec.session_id.0.to_string()}
            ],
            "workingDir": WORKSPACE,
            "volumeMounts": mounts(),
            "resources": resources,
            "securityContext": container_security_context()
        }],
        "containers": [{
            "name": DATA_PLANE_CONTAINER,
            "image": settings.image,
            "imagePullPolicy": settings.image_pull_policy,
            "command": ["opencode", "serve", "--hostname", "0.0.0.0", "--port", OPENCODE_PORT.to_string()],
            "workingDir": WORKSPACE,
            "env": env,
            "ports": [{"name": "opencode", "containerPort": OPENCODE_PORT, "protocol": "TCP"}],
            "readinessProbe": {
                "tcpSocket": {"port": OPENCODE_PORT},
                "initialDelaySeconds": 1,
                "periodSeconds": 2,
                "timeoutSeconds": 1,
                "failureThreshold": 3
            },
            "volumeMounts": mounts(),
            "resources": resources,
            "securityContext": container_security_context()
        }],
        "volumes": volumes(settings)
    });
    if let Some(sa) = &settings.service_account {
        pod_spec["serviceAccountName"] = json!(sa);
    }
    if !settings.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(settings.node_selector);
    }
    if !settings.tolerations.is_empty() {
        pod_spec["tolerations"] = json!(settings.tolerations);
    }
    if !settings.image_pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] =
            settings.image_pull_secrets.iter().map(|name| json!({"name": name})).collect::<Value>();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(&settings.instance, spec.session_id)},
        "spec": pod_spec
    })
}

/// The Secret of one session, owned by its Pod (the server-side apply body). Holds secrets:
/// never log it.
pub fn secret(instance: &str, namespace: &str, spec: &RuntimeSpec, pod_uid: &str) -> Value {
    let name = object_name(spec.session_id);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let mut data = serde_json::Map::new();
    data.insert(PASSWORD_KEY.to_owned(), json!(b64(spec.password.expose_secret())));
    data.insert(CONFIG_KEY.to_owned(), json!(b64(&spec.opencode_config)));
    for (key, value) in &spec.env {
        data.insert(key.clone(), json!(b64(value.expose_secret())));
    }
    if let Some(token) = &spec.broker_token {
        data.insert(BROKER_TOKEN_KEY.to_owned(), json!(b64(token.expose_secret())));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(instance, spec.session_id),
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Pod",
                "name": name,
                "uid": pod_uid,
                "controller": true
            }]
        },
        "data": data
    })
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use uuid::Uuid;

    use super::*;

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            session_id: SessionId(Uuid::from_u128(7)),
            opencode_config: "{\"model\":\"p/m\"}".into(),
            env: vec![("CAKE_PROVIDER_0_API_KEY".into(), SecretString::from("sk-1".to_owned()))],
            password: SecretString::from("pw".to_owned()),
            broker_token: None,
            previous: None,
        }
    }

    #[test]
    fn the_pod_reads_every_secret_by_reference_and_holds_none() {
        let settings = KubeSettings::for_images("cake/data-plane:1", "cake/data-plane-init:1");
        let pod = pod(&settings, "ns", &spec());
        let text = pod.to_string();
        assert!(!text.contains("sk-1") && !text.contains("\"pw\""), "{text}");
        let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
        let refs: Vec<&str> = env.iter().filter_map(|e| e["valueFrom"]["secretKeyRef"]["key"].as_str()).collect();
        assert_eq!(refs, [PASSWORD_KEY, CONFIG_KEY, "CAKE_PROVIDER_0_API_KEY"]);
        assert_eq!(object_name(spec().session_id), "cake-session-00000000-0000-0000-0000-000000000007");
    }

    #[test]
    fn the_secret_is_owned_by_the_pod_and_carries_the_material() {
        let secret = secret("cake-agents", "ns", &spec(), "uid-1");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(secret["data"]["CAKE_PROVIDER_0_API_KEY"], "c2stMQ==");
        assert_eq!(secret["data"][PASSWORD_KEY], "cHc=");
    }

    #[test]
    fn broker_material_is_in_the_secret_only_for_sessions_granted_credentials() {
        let mut settings = KubeSettings::for_images("cake/data-plane:1", "cake/data-plane-init:1");
        settings.broker_url = Some("http://cake-agents.cake.svc.cluster.local".into());
        // No grant: no token, no URL.
        let plain = pod(&settings, "ns", &spec());
        assert!(!plain.to_string().contains("CAKE_BROKER"), "{plain}");
        assert!(secret("cake-agents", "ns", &spec(), "uid-1")["data"].get(BROKER_TOKEN_KEY).is_none());
        // Granted: the token in the Secret, read by reference; the URL as plain env.
        let mut granted = spec();
        granted.broker_token = Some(SecretString::from("cakeb_tok".to_owned()));
        let pod = pod(&settings, "ns", &granted);
        assert!(!pod.to_string().contains("cakeb_tok"));
        let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
        let token_ref = env.iter().find(|e| e["name"] == BROKER_TOKEN_KEY).unwrap();
        assert_eq!(token_ref["valueFrom"]["secretKeyRef"]["key"], BROKER_TOKEN_KEY);
        let url = env.iter().find(|e| e["name"] == BROKER_URL_ENV).unwrap();
        assert_eq!(url["value"], "http://cake-agents.cake.svc.cluster.local");
        let secret = secret("cake-agents", "ns", &granted, "uid-1");
        assert_eq!(secret["data"][BROKER_TOKEN_KEY], "Y2FrZWJfdG9r");
    }
}

//! A stand-in for the Kubernetes API server: a hand-written HTTP/1.1 server (keep-alive,
//! chunked watch responses) that speaks just enough of the API for the jobsched controller:
//! list + watch (with resourceVersion and a `metadata.name` field selector), get and status
//! merge-patch of `jobsched.io/v1alpha1` SchedulerConfigs in one namespace, an empty
//! JobSchedule collection (list + a watch that stays open), creation of `events.k8s.io/v1`
//! Events, and get/create/replace of `coordination.k8s.io/v1` Leases with resourceVersion
//! conflicts. Any other request is answered 404 and recorded as unexpected.
//!
//! The controller's own suite runs its replicas in-process against it; the binary's suite runs
//! the `jobsched controller` process against it through [`write_kubeconfig`].

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The stand-in API server's state; serve it with [`serve`].
#[derive(Debug)]
pub struct KubeStandIn {
    /// The one namespace it serves.
    namespace: String,
    inner: Mutex<KubeState>,
}

/// What the stand-in holds and has seen.
#[derive(Debug, Default)]
pub struct KubeState {
    rv: u64,
    /// SchedulerConfigs by name.
    pub objects: BTreeMap<String, Value>,
    /// Every watch event with the resourceVersion it produced (replayed to later watchers).
    history: Vec<(u64, Value)>,
    /// Open watches, each with the object name its field selector allows (`None`: all).
    watchers: Vec<(mpsc::UnboundedSender<Vec<u8>>, Option<String>)>,
    /// The `fieldSelector` of every list and watch request (`""` when none).
    pub selectors: Vec<String>,
    /// Every status merge patch, with the name of the object it patched.
    pub status_patches: Vec<(String, Value)>,
    /// Every Event created.
    pub events: Vec<Value>,
    /// Leases by name.
    pub leases: BTreeMap<String, Value>,
    /// Open watches of the (always empty) JobSchedule collection, kept open.
    schedule_watchers: Vec<mpsc::UnboundedSender<Vec<u8>>>,
    /// Requests it does not serve (`METHOD path`).
    pub unexpected: Vec<String>,
}

impl KubeState {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn broadcast(&mut self, kind: &str, object: Value) {
        let rv = self.rv;
        let event = json!({"type": kind, "object": object});
        let line = watch_line(&event);
        let name = event["object"]["metadata"]["name"]
            .as_str()
            .map(str::to_string);
        self.history.push((rv, event));
        self.watchers
            .retain(|(w, only)| only.is_some() && *only != name || w.send(line.clone()).is_ok());
    }
}

fn watch_line(event: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(event).expect("JSON");
    line.push(b'\n');
    line
}

/// One parsed HTTP request.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// What to send back.
enum Reply {
    Json(u16, Value),
    /// A chunked stream of watch events, one JSON object per line.
    Watch(mpsc::UnboundedReceiver<Vec<u8>>),
}

fn status_error(code: u16, reason: &str, message: &str) -> Reply {
    Reply::Json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": reason, "message": message, "code": code}),
    )
}

impl KubeStandIn {
    /// An empty API server for `namespace`.
    pub fn new(namespace: &str) -> Arc<Self> {
        Arc::new(KubeStandIn {
            namespace: namespace.to_string(),
            inner: Mutex::default(),
        })
    }

    /// Its state, locked.
    pub fn lock(&self) -> MutexGuard<'_, KubeState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The controllers made no API call the stand-in does not serve.
    pub fn assert_served_all(&self) {
        let unexpected = &self.lock().unexpected;
        assert!(
            unexpected.is_empty(),
            "the controller made API calls the stand-in does not serve: {unexpected:?}"
        );
    }

    /// Create the object, or replace its spec (bumping `generation`), as `kubectl apply` would;
    /// returns the object's generation.
    pub fn apply(&self, name: &str, spec: Value) -> i64 {
        let mut state = self.lock();
        let rv = state.next_rv();
        let existing = state.objects.get(name).cloned();
        let id = ("SchedulerConfig", self.namespace.as_str(), name);
        let (kind, object) = kubectl_apply(existing, id, spec, json!(rv));
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
        state.objects.insert(name.to_string(), object.clone());
        state.broadcast(kind, object);
        generation
    }

    /// Delete the object, as `kubectl delete` would.
    pub fn delete(&self, name: &str) {
        let mut state = self.lock();
        let rv = state.next_rv();
        let mut object = state.objects.remove(name).expect("the object exists");
        object["metadata"]["resourceVersion"] = json!(rv);
        state.broadcast("DELETED", object);
    }

    /// The object's status (`null` when it has none or does not exist).
    pub fn status(&self, name: &str) -> Value {
        self.lock()
            .objects
            .get(name)
            .map_or(Value::Null, |o| o["status"].clone())
    }

    /// The status patches of object `name`, oldest first.
    pub fn status_patches(&self, name: &str) -> Vec<Value> {
        let state = self.lock();
        let patches = state.status_patches.iter();
        patches
            .filter(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// How many Events with `reason` were created about object `name`.
    pub fn events(&self, reason: &str, name: &str) -> usize {
        self.lock()
            .events
            .iter()
            .filter(|e| e["reason"] == reason && e["regarding"]["name"] == name)
            .count()
    }

    /// The holder of Lease `name`, if it is held.
    pub fn lease_holder(&self, name: &str) -> Option<String> {
        self.lock()
            .leases
            .get(name)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }

    fn route(&self, req: &Request) -> Reply {
        if req.method == "GET" && req.path == "/version" {
            // What the controller's /readyz asks.
            return Reply::Json(
                200,
                json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "stand-in",
                       "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                       "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"}),
            );
        }
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        // Everything served is namespaced: /apis/<group>/<version>/namespaces/<ns>/<rest>.
        let (group, rest) = match segments.as_slice() {
            ["apis", group, version, "namespaces", ns, rest @ ..] if *ns == self.namespace => {
                (format!("{group}/{version}"), rest)
            }
            _ => return self.unexpected(req),
        };
        match (req.method.as_str(), group.as_str(), rest) {
            ("GET", "jobsched.io/v1alpha1", ["schedulerconfigs"]) => {
                if req
                    .query
                    .get("watch")
                    .is_some_and(|w| w == "true" || w == "1")
                {
                    self.watch(req)
                } else {
                    self.list(req)
                }
            }
            ("GET", "jobsched.io/v1alpha1", ["schedulerconfigs", name]) => {
                match self.lock().objects.get(*name) {
                    Some(object) => Reply::Json(200, object.clone()),
                    None => status_error(404, "NotFound", "schedulerconfig not found"),
                }
            }
            ("PATCH", "jobsched.io/v1alpha1", ["schedulerconfigs", name, "status"]) => {
                self.patch_status(req, name)
            }
            // The controller also follows JobSchedules (with a database): none exist here.
            ("GET", "jobsched.io/v1alpha1", ["jobschedules"]) => {
                if req
                    .query
                    .get("watch")
                    .is_some_and(|w| w == "true" || w == "1")
                {
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.lock().schedule_watchers.push(tx);
                    Reply::Watch(rx)
                } else {
                    let rv = self.lock().rv.to_string();
                    Reply::Json(
                        200,
                        json!({"apiVersion": "jobsched.io/v1alpha1", "kind": "JobScheduleList",
                               "metadata": {"resourceVersion": rv}, "items": []}),
                    )
                }
            }
            ("POST", "events.k8s.io/v1", ["events"]) => {
                match serde_json::from_slice::<Value>(&req.body) {
                    Ok(event) => {
                        self.lock().events.push(event.clone());
                        Reply::Json(201, event)
                    }
                    Err(e) => status_error(400, "BadRequest", &e.to_string()),
                }
            }
            ("POST", "coordination.k8s.io/v1", ["leases"]) => self.create_lease(req),
            ("GET", "coordination.k8s.io/v1", ["leases", name]) => {
                match self.lock().leases.get(*name) {
                    Some(lease) => Reply::Json(200, lease.clone()),
                    None => status_error(404, "NotFound", "lease not found"),
                }
            }
            ("PUT", "coordination.k8s.io/v1", ["leases", name]) => self.replace_lease(req, name),
            _ => self.unexpected(req),
        }
    }

    fn unexpected(&self, req: &Request) -> Reply {
        self.lock()
            .unexpected
            .push(format!("{} {}", req.method, req.path));
        status_error(404, "NotFound", "not served by the stand-in")
    }

    /// The object name a request's `fieldSelector=metadata.name=<name>` allows (recorded).
    fn selected(&self, req: &Request) -> Option<String> {
        let selector = req.query.get("fieldSelector").cloned().unwrap_or_default();
        self.lock().selectors.push(selector.clone());
        selector.strip_prefix("metadata.name=").map(str::to_string)
    }

    fn list(&self, req: &Request) -> Reply {
        let only = self.selected(req);
        let state = self.lock();
        Reply::Json(
            200,
            json!({
                "apiVersion": "jobsched.io/v1alpha1",
                "kind": "SchedulerConfigList",
                "metadata": {"resourceVersion": state.rv.to_string()},
                "items": state
                    .objects
                    .iter()
                    .filter(|(name, _)| only.as_ref().is_none_or(|o| o == *name))
                    .map(|(_, object)| object.clone())
                    .collect::<Vec<_>>(),
            }),
        )
    }

    fn watch(&self, req: &Request) -> Reply {
        let since: u64 = req
            .query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let only = self.selected(req);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        for (rv, event) in &state.history {
            let name = event["object"]["metadata"]["name"].as_str();
            if *rv > since && only.as_deref().is_none_or(|o| Some(o) == name) {
                let _ = tx.send(watch_line(event));
            }
        }
        state.watchers.push((tx, only));
        Reply::Watch(rx)
    }

    fn patch_status(&self, req: &Request, name: &str) -> Reply {
        let content_type = req.headers.get("content-type").map(String::as_str);
        if content_type != Some("application/merge-patch+json") {
            return status_error(
                415,
                "UnsupportedMediaType",
                &format!("the stand-in only takes merge patches, got {content_type:?}"),
            );
        }
        let patch: Value = match serde_json::from_slice(&req.body) {
            Ok(p) => p,
            Err(e) => return status_error(400, "BadRequest", &e.to_string()),
        };
        let mut state = self.lock();
        let Some(mut object) = state.objects.get(name).cloned() else {
            return status_error(404, "NotFound", "schedulerconfig not found");
        };
        // The status subresource ignores everything but the status.
        merge_patch(&mut object["status"], &patch["status"]);
        let rv = state.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv);
        state.objects.insert(name.to_string(), object.clone());
        state.status_patches.push((name.to_string(), patch));
        state.broadcast("MODIFIED", object.clone());
        Reply::Json(200, object)
    }

    fn create_lease(&self, req: &Request) -> Reply {
        let mut lease: Value = match serde_json::from_slice(&req.body) {
            Ok(l) => l,
            Err(e) => return status_error(400, "BadRequest", &e.to_string()),
        };
        let Some(name) = lease["metadata"]["name"].as_str().map(str::to_string) else {
            return status_error(422, "Invalid", "metadata.name is required");
        };
        let mut state = self.lock();
        if state.leases.contains_key(&name) {
            return status_error(409, "AlreadyExists", "lease exists");
        }
        lease["metadata"]["resourceVersion"] = json!(state.next_rv());
        state.leases.insert(name, lease.clone());
        Reply::Json(201, lease)
    }

    fn replace_lease(&self, req: &Request, name: &str) -> Reply {
        let mut lease: Value = match serde_json::from_slice(&req.body) {
            Ok(l) => l,
            Err(e) => return status_error(400, "BadRequest", &e.to_string()),
        };
        let mut state = self.lock();
        let Some(current) = state.leases.get(name) else {
            return status_error(404, "NotFound", "lease not found");
        };
        if current["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"] {
            return status_error(409, "Conflict", "the lease was modified; read it again");
        }
        lease["metadata"]["resourceVersion"] = json!(state.next_rv());
        state.leases.insert(name.to_string(), lease.clone());
        Reply::Json(200, lease)
    }
}

/// Read one request; `None` when the client closed the connection or sent garbage.
async fn read_request(r: &mut BufReader<OwnedReadHalf>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if r.read_line(&mut header).await.ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (key, value) = header.split_once(':')?;
        headers.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await.ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2]; // data + CRLF
            r.read_exact(&mut chunk).await.ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
        body
    } else {
        let len: usize = headers
            .get("content-length")
            .map_or(Some(0), |v| v.parse().ok())?;
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.ok()?;
        body
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    })
}

/// Serve one client connection (HTTP/1.1 keep-alive; a watch ends the connection).
async fn connection(stream: TcpStream, api: Arc<KubeStandIn>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    while let Some(req) = read_request(&mut read).await {
        match api.route(&req) {
            Reply::Json(code, body) => {
                let body = serde_json::to_vec(&body).expect("JSON");
                let head = format!(
                    "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    if code < 300 { "OK" } else { "Error" },
                    body.len()
                );
                if write.write_all(head.as_bytes()).await.is_err()
                    || write.write_all(&body).await.is_err()
                {
                    return;
                }
            }
            Reply::Watch(mut events) => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if write.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut probe = [0u8; 1];
                loop {
                    tokio::select! {
                        line = events.recv() => {
                            let Some(line) = line else {
                                let _ = write.write_all(b"0\r\n\r\n").await;
                                return;
                            };
                            let mut chunk = format!("{:x}\r\n", line.len()).into_bytes();
                            chunk.extend_from_slice(&line);
                            chunk.extend_from_slice(b"\r\n");
                            if write.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                        // The client went away (EOF) or broke the connection.
                        n = read.read(&mut probe) => if matches!(n, Ok(0) | Err(_)) { return },
                    }
                }
            }
        }
    }
}

/// `%XX` escapes and `+` of a query component, decoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Start the stand-in on a free loopback port; the server stops when the guard is dropped.
pub async fn serve(api: Arc<KubeStandIn>) -> (u16, AbortOnDrop) {
    serve_on(api, 0).await
}

/// Start the stand-in on `port` (0: a free one).
pub async fn serve_on(api: Arc<KubeStandIn>, port: u16) -> (u16, AbortOnDrop) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the stand-in API server");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(connection(stream, api.clone()));
        }
    });
    (port, AbortOnDrop(task))
}

/// Aborts the server task (and with it every open connection) when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Write a kubeconfig into `dir` that points at the stand-in on `port`, in `namespace`,
/// without authentication; returns its path.
pub fn write_kubeconfig(dir: &Path, port: u16, namespace: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: stand-in
  cluster:
    server: http://127.0.0.1:{port}
contexts:
- name: stand-in
  context:
    cluster: stand-in
    namespace: {namespace}
    user: anonymous
current-context: stand-in
users:
- name: anonymous
  user: {{}}
"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// Apply a JSON merge patch (RFC 7386) to `target`: objects merge key by key, `null` removes
/// a key, anything else replaces. What a Kubernetes API server does with a merge patch, for
/// the stand-ins the controller tests run against.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(object) = target.as_object_mut() {
        for (key, value) in fields {
            if value.is_null() {
                object.remove(key);
            } else {
                let slot = object.entry(key.clone()).or_insert(serde_json::Value::Null);
                merge_patch(slot, value);
            }
        }
    }
}

/// What `kubectl apply` of `spec` makes of the stored `jobsched.io/v1alpha1` object of `kind`
/// named `name` (`existing`; `None`: not there yet), at resource version `rv`: the watch event
/// (`ADDED` or `MODIFIED`, the generation bumped) and the new object. For the Kubernetes API
/// stand-ins the controller tests run against.
fn kubectl_apply(
    existing: Option<serde_json::Value>,
    (kind, namespace, name): (&str, &str, &str),
    spec: serde_json::Value,
    rv: serde_json::Value,
) -> (&'static str, serde_json::Value) {
    match existing {
        Some(mut object) => {
            object["spec"] = spec;
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            object["metadata"]["generation"] = generation.into();
            object["metadata"]["resourceVersion"] = rv;
            ("MODIFIED", object)
        }
        None => (
            "ADDED",
            serde_json::json!({
                "apiVersion": "jobsched.io/v1alpha1",
                "kind": kind,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": format!("uid-{name}"),
                    "generation": 1,
                    "resourceVersion": rv,
                    "creationTimestamp": "2025-01-01T00:00:00Z",
                },
                "spec": spec,
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn merge_patch_merges_removes_and_replaces() {
        let mut doc = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let patch = serde_json::json!({"a": null, "b": {"c": 4}, "e": {"f": 5}, "g": "h"});
        super::merge_patch(&mut doc, &patch);
        let want = serde_json::json!({"b": {"c": 4, "d": 3}, "e": {"f": 5}, "g": "h"});
        assert_eq!(doc, want);
        super::merge_patch(&mut doc, &serde_json::json!(7));
        assert_eq!(doc, serde_json::json!(7));
    }
}

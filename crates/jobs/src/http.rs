//! `http`: call an HTTP endpoint; its response is the job's result.
//!
//! Payload: `{"url", "method"? (default POST), "headers"?, "body"?, "timeout_seconds"?}`. A
//! header value is a string, or `{"secret": "<name>"}`: the value is then read from the file
//! `<name>` in `JOBSCHED_SECRETS_DIR` (a mounted Kubernetes Secret) when the job runs, so the
//! secret never sits in the payload, the store or a log. A string `body` is sent as it is
//! (`text/plain` unless a header says otherwise); any other JSON value is sent as
//! `application/json`.
//!
//! Result: `{"status", "headers": {"content-type"}, "body"}`, the body as JSON when the
//! response says it is JSON and parses, else as text; at most [`MAX_RESPONSE`] bytes (a larger
//! response fails the run). 2xx completes the job; 5xx, 429, timeouts and connection errors
//! are retried (with the job's backoff); any other status fails it at once.
//!
//! SSRF guard: a URL's host must match `JOBSCHED_HTTP_ALLOW` (comma-separated patterns:
//! `api.example.com`, `*.example.com` for its subdomains, `host:port` to pin a port, `*` for
//! any host); unset, the type refuses every URL and says how to allow one. Redirects are
//! followed (at most [`MAX_REDIRECTS`]) only to the request's own host; a redirect anywhere else
//! fails the run. The pattern matches the host name as written in the URL; names are resolved
//! by the worker's resolver.

use crate::sdk::{Ctx, Handler};
use crate::{FieldError, JobError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Hosts the type may call (see the module docs).
pub const ALLOW_ENV: &str = "JOBSCHED_HTTP_ALLOW";
/// Directory of the secrets header values can name.
pub const SECRETS_DIR_ENV: &str = "JOBSCHED_SECRETS_DIR";
/// Largest response body kept, bytes (1 MiB).
pub const MAX_RESPONSE: usize = 1 << 20;
/// Most redirects followed.
pub const MAX_REDIRECTS: usize = 5;
/// Request timeout when the payload sets none, seconds.
pub const DEFAULT_REQUEST_TIMEOUT: f64 = 30.0;
/// Longest request timeout a payload may ask for, seconds.
pub const MAX_REQUEST_TIMEOUT: f64 = 300.0;

/// The request method.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST (the default).
    #[default]
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
}

/// A header's value: the text, or the name of a secret holding it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum HeaderValue {
    /// The value itself.
    Text(String),
    /// `{"secret": "<name>"}`: the value is the file `<name>` in `JOBSCHED_SECRETS_DIR`.
    Secret {
        /// The secret's name (letters, digits, `.`, `_`, `-`).
        secret: String,
    },
}

/// Payload of `http`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpPayload {
    /// `http://` or `https://` URL; its host must be allowed by `JOBSCHED_HTTP_ALLOW`.
    #[schemars(length(min = 1, max = 4096))]
    pub url: String,
    /// GET, POST (default), PUT, PATCH, DELETE or HEAD.
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// Request headers: a value, or `{"secret": "<name>"}`.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// Request body: a string is sent as it is, other JSON as `application/json`.
    #[serde(default)]
    pub body: Option<Value>,
    /// Seconds the request may take, from connecting to the last byte (default 30).
    #[schemars(range(min = 0.001, max = 300))]
    pub timeout_seconds: Option<f64>,
}

/// The hosts the type may call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<String>,
}

impl AllowList {
    /// From comma-separated patterns (see the module docs); blanks are ignored.
    pub fn parse(spec: &str) -> AllowList {
        AllowList {
            patterns: spec
                .split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// Whether `host` (with `port`, the URL's or its scheme's default) may be called.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.patterns.iter().any(|p| {
            let (pattern, pinned) = match p.rsplit_once(':') {
                Some((h, port_text)) if !h.contains(']') || h.ends_with(']') => {
                    match port_text.parse::<u16>() {
                        Ok(n) => (h, Some(n)),
                        Err(_) => (p.as_str(), None),
                    }
                }
                _ => (p.as_str(), None),
            };
            if pinned.is_some_and(|n| n != port) {
                return false;
            }
            let pattern = pattern.trim_start_matches('[').trim_end_matches(']');
            if pattern == "*" {
                return true;
            }
            match pattern.strip_prefix("*.") {
                Some(domain) => host.len() > domain.len() && host.ends_with(&format!(".{domain}")),
                None => host == pattern,
            }
        })
    }

    /// Whether no host is allowed.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// The `http` job type.
#[derive(Debug, Clone)]
pub struct HttpJob {
    allow: AllowList,
    secrets: Option<PathBuf>,
    client: reqwest::Client,
}

impl HttpJob {
    /// The type with this allow list and secrets directory.
    pub fn new(allow: AllowList, secrets: Option<PathBuf>) -> HttpJob {
        // Redirects are followed by hand (each hop's host is checked).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        HttpJob {
            allow,
            secrets,
            client,
        }
    }

    /// The type as `JOBSCHED_HTTP_ALLOW` and `JOBSCHED_SECRETS_DIR` configure it.
    pub fn from_env() -> HttpJob {
        let allow = AllowList::parse(&std::env::var(ALLOW_ENV).unwrap_or_default());
        let secrets = std::env::var_os(SECRETS_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        HttpJob::new(allow, secrets)
    }

    /// The URL, or why it cannot be called.
    fn target(&self, raw: &str) -> Result<reqwest::Url, JobError> {
        let url = reqwest::Url::parse(raw)
            .map_err(|e| JobError::Fatal(format!("payload.url `{raw}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(JobError::Fatal(format!(
                "payload.url must be http:// or https://, got {}://",
                url.scheme()
            )));
        }
        self.check_host(&url)?;
        Ok(url)
    }

    fn check_host(&self, url: &reqwest::Url) -> Result<(), JobError> {
        let host = url.host_str().unwrap_or("");
        let port = url.port_or_known_default().unwrap_or(0);
        if self.allow.is_empty() {
            return Err(JobError::Fatal(format!(
                "the http job type may call no host yet: set {ALLOW_ENV} on the workers to the \
                 hosts it may call (e.g. `api.example.com,*.internal.example.com`); refused {host}"
            )));
        }
        if !self.allow.allows(host, port) {
            return Err(JobError::Fatal(format!(
                "host {host}:{port} is not allowed by {ALLOW_ENV}; add it there to let jobs call it"
            )));
        }
        Ok(())
    }

    /// A header value, reading a named secret.
    fn header_value(&self, name: &str, v: &HeaderValue) -> Result<String, JobError> {
        match v {
            HeaderValue::Text(t) => Ok(t.clone()),
            HeaderValue::Secret { secret } => {
                let dir = self.secrets.as_deref().ok_or_else(|| {
                    JobError::Fatal(format!(
                        "header {name} names the secret `{secret}`, but {SECRETS_DIR_ENV} is not \
                         set on this worker; mount the secrets there"
                    ))
                })?;
                read_secret(dir, secret).map_err(|why| {
                    JobError::Fatal(format!("header {name}: secret `{secret}`: {why}"))
                })
            }
        }
    }
}

/// Whether `name` can name a secret file.
fn secret_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn read_secret(dir: &Path, name: &str) -> Result<String, String> {
    if !secret_name_ok(name) {
        return Err("a secret name holds only letters, digits, `.`, `_` and `-`".into());
    }
    let text = std::fs::read_to_string(dir.join(name))
        .map_err(|e| format!("cannot read it from {}: {e}", dir.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Whether `status` is worth another attempt.
fn retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

impl Handler for HttpJob {
    type Payload = HttpPayload;
    const NAME: &'static str = "http";
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(360);

    fn check(&self, p: &HttpPayload, _data_dir: &crate::DataDir) -> Vec<FieldError> {
        let mut errors = Vec::new();
        match reqwest::Url::parse(&p.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            Ok(u) => errors.push(FieldError::new(
                "payload.url",
                format!(
                    "must be an http:// or https:// URL with a host, got {}://",
                    u.scheme()
                ),
            )),
            Err(e) => errors.push(FieldError::new("payload.url", format!("is not a URL: {e}"))),
        }
        for (name, v) in &p.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(FieldError::new(
                    format!("payload.headers.{name}"),
                    "is not a valid header name",
                ));
            }
            if let HeaderValue::Secret { secret } = v
                && !secret_name_ok(secret)
            {
                errors.push(FieldError::new(
                    format!("payload.headers.{name}.secret"),
                    "must name a secret: letters, digits, `.`, `_` and `-`",
                ));
            }
        }
        errors
    }

    async fn run(&self, ctx: Ctx, p: HttpPayload) -> Result<Value, JobError> {
        let mut url = self.target(&p.url)?;
        let method = match p.method.unwrap_or_default() {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
            HttpMethod::Head => reqwest::Method::HEAD,
        };
        let timeout = Duration::from_secs_f64(
            p.timeout_seconds
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT)
                .clamp(0.001, MAX_REQUEST_TIMEOUT),
        );
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, v) in &p.headers {
            let value = self.header_value(name, v)?;
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| JobError::Fatal(format!("`{name}` is not a valid header name")))?;
            let value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                JobError::Fatal(format!(
                    "the value of header {name} is not a valid header value"
                ))
            })?;
            headers.insert(name, value);
        }
        let origin = (
            url.host_str().unwrap_or("").to_string(),
            url.port_or_known_default(),
        );
        ctx.info(format!(
            "{method} {}://{}{}",
            url.scheme(),
            origin.0,
            url.path()
        ));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut hops = 0;
        let response = loop {
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match &p.body {
                None => {}
                Some(Value::String(text)) => {
                    if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
                        req =
                            req.header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
                    }
                    req = req.body(text.clone());
                }
                Some(other) => req = req.json(other),
            }
            let sent = tokio::select! {
                r = req.send() => r,
                () = ctx.cancelled() => return Err(ctx.stopped()),
            };
            let response = sent.map_err(|e| {
                let what = if e.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                JobError::Retryable(format!("the request to {} {what}: {e}", origin.0))
            })?;
            if !response.status().is_redirection() {
                break response;
            }
            let Some(location) = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                break response;
            };
            let next = url.join(location).map_err(|e| {
                JobError::Fatal(format!(
                    "redirected to `{location}`, which is not a URL: {e}"
                ))
            })?;
            let next_origin = (
                next.host_str().unwrap_or("").to_string(),
                next.port_or_known_default(),
            );
            if next_origin != origin {
                return Err(JobError::Fatal(format!(
                    "{} redirected to another host ({}); redirects are followed only on the \
                     request's own host",
                    origin.0, next_origin.0
                )));
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(JobError::Fatal(format!(
                    "more than {MAX_REDIRECTS} redirects from {}",
                    origin.0
                )));
            }
            ctx.info(format!("redirected to {}", next.path()));
            url = next;
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE as u64)
        {
            return Err(JobError::Fatal(format!(
                "the response of {} is over {MAX_RESPONSE} bytes",
                origin.0
            )));
        }
        let mut body: Vec<u8> = Vec::new();
        let mut response = response;
        loop {
            let chunk = tokio::select! {
                c = response.chunk() => c,
                () = ctx.cancelled() => return Err(ctx.stopped()),
            };
            match chunk {
                Ok(Some(bytes)) => {
                    if body.len().saturating_add(bytes.len()) > MAX_RESPONSE {
                        return Err(JobError::Fatal(format!(
                            "the response of {} is over {MAX_RESPONSE} bytes",
                            origin.0
                        )));
                    }
                    body.extend_from_slice(&bytes);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(JobError::Retryable(format!(
                        "reading the response of {} failed: {e}",
                        origin.0
                    )));
                }
            }
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let is_json = content_type.as_deref().is_some_and(|c| c.contains("json"));
        let body_value = if is_json {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        } else {
            Value::String(text.clone())
        };
        ctx.info(format!("HTTP {status}, {} bytes", body.len()));
        if (200..=299).contains(&status) {
            return Ok(json!({
                "status": status,
                "headers": {"content-type": content_type},
                "body": body_value,
            }));
        }
        let excerpt: String = text.chars().take(200).collect();
        let message = format!("{} answered HTTP {status}: {excerpt}", origin.0);
        if retryable_status(status) {
            Err(JobError::Retryable(message))
        } else {
            Err(JobError::Fatal(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_patterns() {
        let a = AllowList::parse(" api.example.com , *.internal.example , local:8080 ");
        assert!(a.allows("api.example.com", 443));
        assert!(a.allows("API.Example.com.", 80));
        assert!(!a.allows("example.com", 443));
        assert!(!a.allows("evil-api.example.com", 443));
        assert!(a.allows("db.internal.example", 443));
        assert!(!a.allows("internal.example", 443));
        assert!(a.allows("local", 8080));
        assert!(!a.allows("local", 8081));
        assert!(AllowList::parse("").is_empty());
        assert!(AllowList::parse("*").allows("anything", 1));
        assert!(!AllowList::default().allows("a", 80));
    }

    #[test]
    fn statuses() {
        assert!(retryable_status(503) && retryable_status(429) && retryable_status(500));
        assert!(!retryable_status(404) && !retryable_status(400) && !retryable_status(301));
    }

    #[test]
    fn secret_names() {
        assert!(secret_name_ok("api-token") && secret_name_ok("a.b_c"));
        assert!(!secret_name_ok("../etc/passwd") && !secret_name_ok(".hidden"));
        assert!(!secret_name_ok("a/b") && !secret_name_ok(""));
    }
}

//! Payload checks against a JSON Schema (draft 7, the subset `schemars` writes).
//!
//! A [`crate::Handler`]'s payload type derives its schema; a submission is checked against it
//! here, so a 422 names each bad field by its dotted path (`payload.items[2].url`) and the rule
//! it breaks, where a plain deserialization error would name only a line and column.
//!
//! Understood: `type` (one or a list), `enum`, `const`, `$ref` into `#/definitions` or
//! `#/$defs`, `allOf`, `anyOf`, `oneOf`, `not`, `properties`, `required`,
//! `additionalProperties`, `minProperties`, `maxProperties`, `items` (one schema or a tuple),
//! `minItems`, `maxItems`, `minLength`, `maxLength`, `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum`, `multipleOf`, and the integer `format`s schemars writes (`uint8` …
//! `int64`, whose ranges it leaves out). Other keywords (`pattern`, string formats) are not
//! checked here; the payload's deserialization and the handler's own check still run.

use crate::FieldError;
use serde_json::{Map, Value};

/// Most errors reported for one payload.
pub const MAX_ERRORS: usize = 50;

/// Deepest `$ref` / nesting followed (a schema that refers to itself stops here).
const MAX_DEPTH: usize = 64;

/// Every way `value` breaks `schema`; fields are dotted paths under `payload`. Empty = valid.
pub fn check(schema: &Value, value: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    walk(schema, schema, value, "payload", 0, &mut out);
    out.truncate(MAX_ERRORS);
    out
}

/// What a JSON value is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `v` is of JSON Schema type `t`.
fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        _ => true,
    }
}

fn type_name(t: &str) -> &str {
    match t {
        "null" => "null",
        "boolean" => "a boolean",
        "object" => "an object",
        "array" => "an array",
        "string" => "a string",
        "number" => "a number",
        "integer" => "an integer",
        other => other,
    }
}

/// The schema a `$ref` points to (`#/definitions/X`, `#/$defs/X`, or any JSON pointer).
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

fn join_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", Value::String(key.to_string()))
    }
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// The range an integer `format` implies.
fn format_range(format: &str) -> Option<(f64, f64)> {
    Some(match format {
        "uint8" => (0.0, u8::MAX as f64),
        "uint16" => (0.0, u16::MAX as f64),
        "uint32" => (0.0, u32::MAX as f64),
        "uint64" | "uint" => (0.0, u64::MAX as f64),
        "int8" => (i8::MIN as f64, i8::MAX as f64),
        "int16" => (i16::MIN as f64, i16::MAX as f64),
        "int32" => (i32::MIN as f64, i32::MAX as f64),
        "int64" | "int" => (i64::MIN as f64, i64::MAX as f64),
        _ => return None,
    })
}

fn err(out: &mut Vec<FieldError>, path: &str, message: String) {
    if out.len() < MAX_ERRORS {
        out.push(FieldError::new(path, message));
    }
}

fn walk(
    root: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    depth: usize,
    out: &mut Vec<FieldError>,
) {
    if out.len() >= MAX_ERRORS {
        return;
    }
    if depth > MAX_DEPTH {
        err(
            out,
            path,
            "is nested deeper than the schema check follows (64 levels)".into(),
        );
        return;
    }
    let s = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return err(out, path, "is not allowed here".into()),
        Value::Object(s) => s,
        _ => return,
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match resolve(root, r) {
            Some(target) => walk(root, target, value, path, depth + 1, out),
            None => err(
                out,
                path,
                format!("cannot be checked: the job type's schema refers to `{r}`, which it lacks"),
            ),
        }
    }
    if let Some(types) = s.get("type") {
        let names: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.is_empty() && !names.iter().any(|t| is_type(value, t)) {
            let wanted: Vec<&str> = names.iter().map(|t| type_name(t)).collect();
            return err(
                out,
                path,
                format!("must be {}, got {}", wanted.join(" or "), kind(value)),
            );
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let listed: Vec<String> = options.iter().map(Value::to_string).collect();
        return err(
            out,
            path,
            format!("must be one of {}, got {value}", listed.join(", ")),
        );
    }
    if let Some(c) = s.get("const")
        && c != value
    {
        return err(out, path, format!("must be {c}, got {value}"));
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            walk(root, sub, value, path, depth + 1, out);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = s.get(key).and_then(Value::as_array) {
            one_of(root, branches, value, path, depth, out);
        }
    }
    if let Some(not) = s.get("not") {
        let mut scratch = Vec::new();
        walk(root, not, value, path, depth + 1, &mut scratch);
        if scratch.is_empty() {
            err(out, path, "matches a form the job type refuses".into());
        }
    }
    match value {
        Value::Number(n) => number(s, n.as_f64().unwrap_or(0.0), path, out),
        Value::String(text) => string(s, text, path, out),
        Value::Array(items) => array(root, s, items, path, depth, out),
        Value::Object(obj) => object(root, s, obj, path, depth, out),
        _ => {}
    }
}

/// `anyOf` / `oneOf`: at least one branch must hold. With one branch besides `null`, its own
/// errors are reported (the usual shape of an optional field).
fn one_of(
    root: &Value,
    branches: &[Value],
    value: &Value,
    path: &str,
    depth: usize,
    out: &mut Vec<FieldError>,
) {
    let mut first = None;
    let mut non_null = 0;
    for b in branches {
        let mut scratch = Vec::new();
        walk(root, b, value, path, depth + 1, &mut scratch);
        if scratch.is_empty() {
            return;
        }
        let null_only = b.get("type").and_then(Value::as_str) == Some("null");
        if !null_only {
            non_null += 1;
            if first.is_none() {
                first = Some(scratch);
            }
        }
    }
    match first {
        Some(errors) if non_null == 1 => {
            for e in errors {
                err(out, &e.field, e.message);
            }
        }
        _ => err(
            out,
            path,
            format!(
                "matches none of the {} forms the job type accepts (see its schema at GET /job-types)",
                branches.len()
            ),
        ),
    }
}

fn number(s: &Map<String, Value>, v: f64, path: &str, out: &mut Vec<FieldError>) {
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    let (mut min, mut max) = (num("minimum"), num("maximum"));
    if let Some((lo, hi)) = s
        .get("format")
        .and_then(Value::as_str)
        .and_then(format_range)
    {
        min = Some(min.map_or(lo, |m| m.max(lo)));
        max = Some(max.map_or(hi, |m| m.min(hi)));
    }
    let range = match (min, max) {
        (Some(lo), Some(hi)) => format!("from {} to {}", fmt_num(lo), fmt_num(hi)),
        (Some(lo), None) => format!("at least {}", fmt_num(lo)),
        (None, Some(hi)) => format!("at most {}", fmt_num(hi)),
        (None, None) => String::new(),
    };
    if min.is_some_and(|lo| v < lo) || max.is_some_and(|hi| v > hi) {
        err(out, path, format!("must be {range}, got {}", fmt_num(v)));
    }
    if let Some(lo) = num("exclusiveMinimum")
        && v <= lo
    {
        err(
            out,
            path,
            format!("must be more than {}, got {}", fmt_num(lo), fmt_num(v)),
        );
    }
    if let Some(hi) = num("exclusiveMaximum")
        && v >= hi
    {
        err(
            out,
            path,
            format!("must be less than {}, got {}", fmt_num(hi), fmt_num(v)),
        );
    }
    if let Some(m) = num("multipleOf")
        && m > 0.0
        && ((v / m).round() * m - v).abs() > 1e-9 * v.abs().max(1.0)
    {
        err(
            out,
            path,
            format!("must be a multiple of {}, got {}", fmt_num(m), fmt_num(v)),
        );
    }
}

fn string(s: &Map<String, Value>, text: &str, path: &str, out: &mut Vec<FieldError>) {
    let n = text.chars().count() as u64;
    if let Some(lo) = s.get("minLength").and_then(Value::as_u64)
        && n < lo
    {
        err(
            out,
            path,
            format!("must be at least {lo} characters long, got {n}"),
        );
    }
    if let Some(hi) = s.get("maxLength").and_then(Value::as_u64)
        && n > hi
    {
        err(
            out,
            path,
            format!("must be at most {hi} characters long, got {n}"),
        );
    }
}

fn array(
    root: &Value,
    s: &Map<String, Value>,
    items: &[Value],
    path: &str,
    depth: usize,
    out: &mut Vec<FieldError>,
) {
    let n = items.len() as u64;
    if let Some(lo) = s.get("minItems").and_then(Value::as_u64)
        && n < lo
    {
        err(out, path, format!("must have at least {lo} items, got {n}"));
    }
    if let Some(hi) = s.get("maxItems").and_then(Value::as_u64)
        && n > hi
    {
        err(out, path, format!("must have at most {hi} items, got {n}"));
    }
    match s.get("items") {
        Some(Value::Array(tuple)) => {
            for (i, (item, sub)) in items.iter().zip(tuple).enumerate() {
                walk(root, sub, item, &format!("{path}[{i}]"), depth + 1, out);
            }
            if let Some(extra) = s.get("additionalItems") {
                for (i, item) in items.iter().enumerate().skip(tuple.len()) {
                    walk(root, extra, item, &format!("{path}[{i}]"), depth + 1, out);
                }
            }
        }
        Some(sub) => {
            for (i, item) in items.iter().enumerate() {
                walk(root, sub, item, &format!("{path}[{i}]"), depth + 1, out);
            }
        }
        None => {}
    }
}

fn object(
    root: &Value,
    s: &Map<String, Value>,
    obj: &Map<String, Value>,
    path: &str,
    depth: usize,
    out: &mut Vec<FieldError>,
) {
    let props = s.get("properties").and_then(Value::as_object);
    if let Some(required) = s.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(key) {
                err(out, &join_key(path, key), "is required".into());
            }
        }
    }
    let n = obj.len() as u64;
    if let Some(lo) = s.get("minProperties").and_then(Value::as_u64)
        && n < lo
    {
        err(
            out,
            path,
            format!("must have at least {lo} fields, got {n}"),
        );
    }
    if let Some(hi) = s.get("maxProperties").and_then(Value::as_u64)
        && n > hi
    {
        err(out, path, format!("must have at most {hi} fields, got {n}"));
    }
    for (key, v) in obj {
        let field = join_key(path, key);
        match props.and_then(|p| p.get(key)) {
            Some(sub) => walk(root, sub, v, &field, depth + 1, out),
            None => match s.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    let known: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    err(
                        out,
                        &field,
                        if known.is_empty() {
                            "is not a known field; this object takes no fields".into()
                        } else {
                            format!("is not a known field; known fields: {}", known.join(", "))
                        },
                    );
                }
                Some(sub) => walk(root, sub, v, &field, depth + 1, out),
                None => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(schema: &Value, v: Value) -> Vec<(String, String)> {
        check(schema, &v)
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        #[schemars(length(min = 1, max = 8))]
        url: String,
        tries: Option<u8>,
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Payload {
        #[schemars(range(min = 0, max = 10))]
        seconds: f64,
        count: u32,
        items: Vec<Item>,
        mode: Option<Mode>,
        headers: std::collections::BTreeMap<String, String>,
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        Fast,
        Slow,
    }

    #[test]
    fn a_derived_schema_names_each_bad_field() {
        let schema = serde_json::to_value(schemars::schema_for!(Payload)).unwrap();
        let ok = json!({"seconds": 1.5, "count": 3, "items": [{"url": "a"}], "mode": null,
                        "headers": {"x": "y"}});
        assert!(check(&schema, &ok).is_empty(), "{:?}", check(&schema, &ok));
        let bad = json!({"seconds": 11, "count": -1,
                         "items": [{"url": "", "tries": 300, "extra": 1}, 5],
                         "mode": "medium", "headers": {"x": 1}});
        let got: std::collections::BTreeMap<String, String> =
            fields(&schema, bad).into_iter().collect();
        let names: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "payload.count",
                "payload.headers.x",
                "payload.items[0].extra",
                "payload.items[0].tries",
                "payload.items[0].url",
                "payload.items[1]",
                "payload.mode",
                "payload.seconds",
            ],
            "{got:?}"
        );
        assert_eq!(got["payload.seconds"], "must be from 0 to 10, got 11");
        assert_eq!(got["payload.count"], "must be from 0 to 4294967295, got -1");
        assert_eq!(
            got["payload.items[0].url"],
            "must be at least 1 characters long, got 0"
        );
        assert_eq!(
            got["payload.items[0].tries"],
            "must be from 0 to 255, got 300"
        );
        assert!(
            got["payload.items[0].extra"].contains("known fields: tries, url")
                || got["payload.items[0].extra"].contains("known fields: url, tries"),
            "{got:?}"
        );
        assert_eq!(got["payload.items[1]"], "must be an object, got an integer");
        assert!(
            got["payload.mode"].contains("\"fast\", \"slow\""),
            "{got:?}"
        );
        assert_eq!(got["payload.headers.x"], "must be a string, got an integer");
        let mut missing = fields(&schema, json!({"count": 1.5}));
        missing.sort();
        assert_eq!(
            missing,
            [
                (
                    "payload.count".to_string(),
                    "must be an integer, got a number".to_string()
                ),
                ("payload.headers".to_string(), "is required".to_string()),
                ("payload.items".to_string(), "is required".to_string()),
                ("payload.seconds".to_string(), "is required".to_string()),
            ]
        );
        assert_eq!(
            fields(&schema, json!([1])),
            [(
                "payload".to_string(),
                "must be an object, got an array".to_string()
            )]
        );
    }

    #[test]
    fn refs_that_loop_or_dangle_end_with_an_error() {
        let looping =
            json!({"$ref": "#/definitions/a", "definitions": {"a": {"$ref": "#/definitions/a"}}});
        let got = fields(&looping, json!({}));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].1.contains("deeper"), "{got:?}");
        let dangling = json!({"$ref": "#/definitions/nope"});
        assert!(
            fields(&dangling, json!(1))[0]
                .1
                .contains("#/definitions/nope")
        );
    }

    #[test]
    fn errors_are_capped() {
        let schema = json!({"type": "array", "items": {"type": "string"}});
        let many: Vec<Value> = (0..500).map(Value::from).collect();
        assert_eq!(check(&schema, &Value::Array(many)).len(), MAX_ERRORS);
    }
}

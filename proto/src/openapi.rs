//! OpenAPI 3.1 documents built from the API's own types, so the contract
//! cannot drift from what the handlers read and answer.
//!
//! Every body and answer is a Rust type that derives `schemars::JsonSchema`
//! beside its serde derive; its JSON Schema (2020-12, which OpenAPI 3.1
//! uses as is) comes from the same attributes serde reads (`rename_all`,
//! `tag`, `deny_unknown_fields`, `default`). A crate lists its routes with
//! [`ApiDoc::op`], naming the types its handler takes and returns; path
//! parameters come from the path itself, query parameters from the query
//! type's fields. Schemas describe what a handler *accepts* (the
//! deserialize side): an optional field may be missing or `null`.
//!
//! The WebSocket messages get a plain JSON Schema document, [`ws_schema`].

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// JSON content type.
pub const JSON: &str = "application/json";

/// A document under construction.
pub struct ApiDoc {
    generator: SchemaGenerator,
    info: Value,
    servers: Vec<Value>,
    paths: Map<String, Value>,
    security_schemes: Map<String, Value>,
    tags: Vec<Value>,
}

/// One operation under construction (see [`ApiDoc::op`]).
pub struct Op<'a> {
    generator: &'a mut SchemaGenerator,
    path: String,
    value: Map<String, Value>,
    parameters: Vec<Value>,
    responses: Map<String, Value>,
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Malformed or invalid input (`code` says which).",
        401 => "Missing, malformed, expired or wrong credentials.",
        403 => "Not allowed (a ban, or a role below the route's).",
        404 => "No such resource.",
        405 => "This path does not take that method.",
        409 => "Conflicts with the current state.",
        413 => "Request body larger than the route's limit.",
        415 => "Body is not `application/json`.",
        422 => "Well-formed but refused.",
        423 => "Account locked after too many wrong passwords.",
        429 => "Rate limited: retry after `Retry-After` seconds.",
        500 => "Internal error.",
        503 => "A dependency (database, Redis, SFU node, media loop) is unavailable or has no room.",
        _ => "Error.",
    }
}

impl ApiDoc {
    /// A new document with `title`, the crate version and a description.
    pub fn new(title: &str, description: &str) -> ApiDoc {
        let generator = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
            })
            .for_deserialize()
            .into_generator();
        ApiDoc {
            generator,
            info: json!({
                "title": title,
                "version": env!("CARGO_PKG_VERSION"),
                "description": description,
                "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
            }),
            servers: Vec::new(),
            paths: Map::new(),
            security_schemes: Map::new(),
            tags: Vec::new(),
        }
    }

    /// A bearer-token security scheme named `name`.
    pub fn bearer(mut self, name: &str, format: &str, description: &str) -> ApiDoc {
        self.security_schemes.insert(
            name.to_owned(),
            json!({"type": "http", "scheme": "bearer", "bearerFormat": format, "description": description}),
        );
        self
    }

    /// A tag (group of operations) with a description.
    pub fn tag(mut self, name: &str, description: &str) -> ApiDoc {
        self.tags.push(json!({"name": name, "description": description}));
        self
    }

    /// A server URL (relative URLs resolve against where the document was fetched).
    pub fn server(mut self, url: &str) -> ApiDoc {
        self.servers.push(json!({"url": url}));
        self
    }

    /// Adds the operation `method path`, described by `build`.
    pub fn op(mut self, method: &str, path: &str, id: &str, build: impl FnOnce(&mut Op<'_>)) -> ApiDoc {
        let mut op = Op {
            generator: &mut self.generator,
            path: path.to_owned(),
            value: Map::new(),
            parameters: Vec::new(),
            responses: Map::new(),
        };
        op.value.insert("operationId".into(), json!(id));
        for name in path_parameters(path) {
            op.parameters.push(json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
            }));
        }
        build(&mut op);
        let Op {
            mut value,
            parameters,
            responses,
            ..
        } = op;
        if !parameters.is_empty() {
            value.insert("parameters".into(), Value::Array(parameters));
        }
        value.insert("responses".into(), Value::Object(responses));
        let item = self
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(method.to_ascii_lowercase(), Value::Object(value));
        }
        self
    }

    /// Every `(METHOD, path)` documented, for tests that compare with a router.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in &self.paths {
            if let Value::Object(item) = item {
                for method in item.keys() {
                    out.push((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        out.sort();
        out
    }

    /// The finished OpenAPI 3.1 document.
    pub fn into_json(mut self) -> Value {
        let schemas = self.generator.take_definitions(true);
        let mut doc = json!({
            "openapi": "3.1.0",
            "info": self.info,
            "paths": self.paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": self.security_schemes,
            },
        });
        if !self.tags.is_empty() {
            doc["tags"] = Value::Array(self.tags);
        }
        if !self.servers.is_empty() {
            doc["servers"] = Value::Array(self.servers);
        }
        doc
    }
}

/// The `{name}` segments of an axum-style path, in order.
pub fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

impl Op<'_> {
    pub fn summary(&mut self, text: &str) -> &mut Self {
        self.value.insert("summary".into(), json!(text));
        self
    }

    pub fn description(&mut self, text: &str) -> &mut Self {
        self.value.insert("description".into(), json!(text));
        self
    }

    pub fn tag(&mut self, tag: &str) -> &mut Self {
        self.value.insert("tags".into(), json!([tag]));
        self
    }

    /// Needs the bearer scheme `scheme`; adds its 401 answer.
    pub fn auth(&mut self, scheme: &str) -> &mut Self {
        self.value.insert("security".into(), json!([{ scheme: [] }]));
        self.errors(&[401])
    }

    /// A JSON body of type `T`, limited to `max_bytes` (413 beyond, 415
    /// without the JSON content type, 400 when it does not parse).
    pub fn body<T: JsonSchema>(&mut self, max_bytes: usize) -> &mut Self {
        let schema = self.generator.subschema_for::<T>();
        self.value.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "description": format!("JSON, at most {max_bytes} bytes."),
                "content": {JSON: {"schema": schema}},
            }),
        );
        self.errors(&[400, 413, 415])
    }

    /// A body of another content type (`schema` describes it).
    pub fn raw_body(&mut self, content_type: &str, schema: Value, max_bytes: usize) -> &mut Self {
        self.value.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "description": format!("At most {max_bytes} bytes."),
                "content": {content_type: {"schema": schema}},
            }),
        );
        self.errors(&[400, 413])
    }

    /// Query parameters: the fields of `T` (a struct), each optional unless
    /// `T` requires it; a value that does not parse gets 400.
    pub fn query<T: JsonSchema>(&mut self) -> &mut Self {
        let schema = T::json_schema(self.generator);
        let required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if let Some(Value::Object(props)) = schema.get("properties") {
            for (name, prop) in props {
                let mut p = json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(name),
                    "schema": prop,
                });
                if let Some(d) = prop.get("description") {
                    p["description"] = d.clone();
                }
                self.parameters.push(p);
            }
        }
        self.errors(&[400])
    }

    /// A header parameter.
    pub fn header(&mut self, name: &str, description: &str) -> &mut Self {
        self.parameters.push(json!({
            "name": name,
            "in": "header",
            "required": false,
            "description": description,
            "schema": {"type": "string", "maxLength": 4096},
        }));
        self
    }

    /// A `status` answer with a JSON body of type `T`.
    pub fn ok<T: JsonSchema>(&mut self, status: u16, description: &str) -> &mut Self {
        let schema = self.generator.subschema_for::<T>();
        self.responses.insert(
            status.to_string(),
            json!({"description": description, "content": {JSON: {"schema": schema}}}),
        );
        self
    }

    /// A `status` answer with a body of `content_type` (`schema` describes it).
    pub fn ok_raw(&mut self, status: u16, description: &str, content_type: &str, schema: Value) -> &mut Self {
        self.responses.insert(
            status.to_string(),
            json!({"description": description, "content": {content_type: {"schema": schema}}}),
        );
        self
    }

    /// A `status` answer without a body.
    pub fn empty(&mut self, status: u16, description: &str) -> &mut Self {
        self.responses
            .insert(status.to_string(), json!({"description": description}));
        self
    }

    /// Error answers, each with the JSON [`crate::signal::ErrorBody`] (429
    /// also with `Retry-After`).
    pub fn errors(&mut self, statuses: &[u16]) -> &mut Self {
        let schema = self.generator.subschema_for::<crate::signal::ErrorBody>();
        for &status in statuses {
            let mut r = json!({
                "description": error_description(status),
                "content": {JSON: {"schema": schema.clone()}},
            });
            if status == 429 || status == 503 {
                r["headers"] = json!({"Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 1},
                }});
            }
            self.responses.entry(status.to_string()).or_insert(r);
        }
        self
    }

    /// The path this operation is on.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The schema of `T` under the extension key `x-…` (what an operation
    /// carries that OpenAPI has no field for, e.g. the events of a stream).
    pub fn extension<T: JsonSchema>(&mut self, key: &str) -> &mut Self {
        let schema = self.generator.subschema_for::<T>();
        self.value.insert(key.to_owned(), schema.to_value());
        self
    }
}

/// The JSON Schema (2020-12) of every WebSocket message: `$defs` holds
/// `ClientMsg` and `ServerMsg` (signaling's `/ws`) and `SfuClientMsg` and
/// `SfuServerMsg` (an SFU node's `/sfu/ws`); the document itself accepts
/// any one of them.
pub fn ws_schema() -> Value {
    use crate::sfu_ws::{SfuClientMsg, SfuServerMsg};
    use crate::signal::{ClientMsg, ServerMsg};
    let mut generator = SchemaSettings::draft2020_12().for_deserialize().into_generator();
    let refs = vec![
        generator.subschema_for::<ClientMsg>(),
        generator.subschema_for::<ServerMsg>(),
        generator.subschema_for::<SfuClientMsg>(),
        generator.subschema_for::<SfuServerMsg>(),
    ];
    let defs = generator.take_definitions(true);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "duet-websocket-messages",
        "title": "duet WebSocket messages",
        "description": "Signaling `/ws`: the page sends `ClientMsg`, the server `ServerMsg`. SFU `/sfu/ws`: the page sends `SfuClientMsg`, the node `SfuServerMsg`. Each frame is one JSON object.",
        "anyOf": refs,
        "$defs": defs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_come_from_the_path() {
        assert_eq!(
            path_parameters("/api/admin/reports/{report}/snapshots/{snapshot}"),
            vec!["report", "snapshot"]
        );
        assert!(path_parameters("/api/session").is_empty());
    }

    #[test]
    fn a_document_names_its_bodies_answers_and_errors() {
        let doc = ApiDoc::new("t", "d")
            .bearer("session", "JWT", "session token")
            .op("post", "/api/reports", "create_report", |o| {
                o.auth("session")
                    .body::<crate::signal::ReportRequest>(1024)
                    .ok::<crate::signal::ReportCreated>(201, "stored");
            });
        assert_eq!(doc.operations(), vec![("POST".into(), "/api/reports".into())]);
        let json = doc.into_json();
        let op = &json["paths"]["/api/reports"]["post"];
        assert_eq!(
            op["requestBody"]["content"][JSON]["schema"]["$ref"],
            "#/components/schemas/ReportRequest"
        );
        for status in ["201", "400", "401", "413", "415"] {
            assert!(op["responses"][status].is_object(), "{status}");
        }
        let req = &json["components"]["schemas"]["ReportRequest"];
        assert_eq!(req["additionalProperties"], false, "deny_unknown_fields is kept");
        assert!(json["components"]["schemas"]["ErrorBody"].is_object());
        assert!(json["components"]["schemas"]["ReportCategory"].is_object());
    }

    #[test]
    fn the_websocket_schema_defines_every_message_type() {
        let s = ws_schema();
        for name in ["ClientMsg", "ServerMsg", "SfuClientMsg", "SfuServerMsg"] {
            assert!(s["$defs"][name].is_object(), "{name}");
        }
    }
}

//! OpenAI's `response_format` as moed's output constraint: `json_object` and `json_schema` (its
//! `schema` sent as JSON text in the `json_schema` option); `text` is no constraint.

use moed_dbus::OutputConstraint;
use moed_dbus::options::MAX_JSON_SCHEMA_BYTES;
use moed_dbus::wire;
use serde_json::{Map, Value};

use crate::error::ApiError;

const PARAM: &str = "response_format";
const SCHEMA_PARAM: &str = "response_format.json_schema.schema";

/// The constraint `response_format` in `obj` asks for, if any.
pub fn constraint(obj: &Map<String, Value>) -> Result<Option<OutputConstraint>, ApiError> {
    let format = match obj.get(PARAM) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(f)) => f,
        Some(_) => return Err(ApiError::invalid(PARAM, "must be an object")),
    };
    match format.get("type") {
        Some(Value::String(t)) if t == "text" => Ok(None),
        Some(Value::String(t)) if t == "json_object" => Ok(Some(OutputConstraint::JsonObject)),
        Some(Value::String(t)) if t == "json_schema" => json_schema(format).map(Some),
        Some(Value::String(t)) => Err(ApiError::unsupported(
            "response_format.type",
            format!(
                "{} is not supported; expected text, json_object or json_schema",
                wire::quote(t)
            ),
        )),
        _ => Err(ApiError::invalid(
            "response_format.type",
            "is required: text, json_object or json_schema",
        )),
    }
}

/// `{"type": "json_schema", "json_schema": {"name": .., "schema": {..}, "strict": ..}}`. The
/// output always keeps to the schema, so `strict` changes nothing; `name` and `description` are
/// the client's labels.
fn json_schema(format: &Map<String, Value>) -> Result<OutputConstraint, ApiError> {
    let spec = match format.get("json_schema") {
        Some(Value::Object(s)) => s,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "response_format.json_schema",
                "is required with type json_schema",
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "response_format.json_schema",
                "must be an object",
            ));
        }
    };
    if !matches!(
        spec.get("strict"),
        None | Some(Value::Null | Value::Bool(_))
    ) {
        return Err(ApiError::invalid(
            "response_format.json_schema.strict",
            "must be true or false",
        ));
    }
    let schema = match spec.get("schema") {
        Some(s @ (Value::Object(_) | Value::Bool(_))) => s,
        None | Some(Value::Null) => return Err(ApiError::invalid(SCHEMA_PARAM, "is required")),
        Some(_) => {
            return Err(ApiError::invalid(
                SCHEMA_PARAM,
                "must be a JSON schema (an object)",
            ));
        }
    };
    let text = serde_json::to_string(schema)
        .map_err(|e| ApiError::invalid(SCHEMA_PARAM, format!("cannot be written as JSON: {e}")))?;
    if text.len() > MAX_JSON_SCHEMA_BYTES {
        return Err(ApiError::invalid(
            SCHEMA_PARAM,
            format!(
                "is {} bytes of JSON, at most {MAX_JSON_SCHEMA_BYTES}",
                text.len()
            ),
        ));
    }
    Ok(OutputConstraint::JsonSchema(text))
}

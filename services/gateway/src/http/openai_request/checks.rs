//! The checks of single fields: types, ranges, the shapes of tools and
//! tool calls.

use protocol::ErrorCode;
use serde_json::Value;

/// Why a request is refused: a code, a message, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
}

pub(super) fn invalid(param: &str, why: impl Into<String>) -> Refusal {
    Refusal {
        code: ErrorCode::InvalidParameter,
        message: why.into(),
        param: Some(param.to_owned()),
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Check {
    Number(f64, f64),
    Integer(i64, i64),
    Bool,
    Text(usize),
    OneOf(&'static [&'static str]),
    Stop,
    LogitBias,
    ResponseFormat,
    Tools,
    ToolChoice,
}

/// An assistant message's `tool_calls`.
pub(super) fn tool_calls(at: &str, value: &Value) -> Result<(), Refusal> {
    let at = format!("{at}.tool_calls");
    let Value::Array(calls) = value else {
        return Err(invalid(&at, "`tool_calls` must be an array"));
    };
    for (i, call) in calls.iter().enumerate() {
        let function = call.get("function");
        let ok = call.get("id").is_some_and(Value::is_string)
            && call.get("type").and_then(Value::as_str) == Some("function")
            && function
                .and_then(|f| f.get("name"))
                .is_some_and(Value::is_string)
            && function
                .and_then(|f| f.get("arguments"))
                .is_some_and(Value::is_string);
        if !ok {
            return Err(invalid(
                &format!("{at}[{i}]"),
                "a tool call needs `id`, `type: \"function\"` and `function` with `name` and `arguments` (a string)",
            ));
        }
    }
    Ok(())
}

/// A tool's name: what OpenAI allows.
fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Check {
    pub(super) fn apply(self, field: &str, value: &Value) -> Result<(), Refusal> {
        if value.is_null() {
            return Ok(());
        }
        let fail = |why: String| Err(invalid(field, why));
        match self {
            Self::Number(lo, hi) => match value.as_f64() {
                Some(n) if (lo..=hi).contains(&n) => Ok(()),
                _ => fail(format!("`{field}` must be a number from {lo} to {hi}")),
            },
            Self::Integer(lo, hi) => match value.as_i64() {
                Some(n) if (lo..=hi).contains(&n) => Ok(()),
                _ => fail(format!("`{field}` must be an integer from {lo} to {hi}")),
            },
            Self::Bool if value.is_boolean() => Ok(()),
            Self::Bool => fail(format!("`{field}` must be a boolean")),
            Self::Text(max) => match value.as_str() {
                Some(s) if s.chars().count() <= max && !s.chars().any(char::is_control) => Ok(()),
                _ => fail(format!("`{field}` must be a string of at most {max} characters, without control characters")),
            },
            Self::OneOf(allowed) => match value.as_str() {
                Some(s) if allowed.contains(&s) => Ok(()),
                _ => fail(format!("`{field}` must be one of {allowed:?}")),
            },
            Self::Stop => match value {
                Value::String(_) => Ok(()),
                Value::Array(stops) if stops.len() <= 4 && stops.iter().all(Value::is_string) => Ok(()),
                _ => fail("`stop` must be a string or up to 4 strings".into()),
            },
            Self::LogitBias => match value {
                Value::Object(bias)
                    if bias.len() <= 1024
                        && bias.iter().all(|(token, b)| {
                            token.parse::<u64>().is_ok()
                                && b.as_f64().is_some_and(|b| (-100.0..=100.0).contains(&b))
                        }) =>
                {
                    Ok(())
                }
                _ => fail("`logit_bias` maps token ids to numbers from -100 to 100".into()),
            },
            Self::ResponseFormat => {
                let kind = value.get("type").and_then(Value::as_str);
                match kind {
                    Some("text" | "json_object") => Ok(()),
                    Some("json_schema")
                        if value
                            .get("json_schema")
                            .and_then(|s| s.get("name"))
                            .is_some_and(Value::is_string) =>
                    {
                        Ok(())
                    }
                    _ => fail("`response_format.type` must be text, json_object or json_schema (with `json_schema.name`)".into()),
                }
            }
            Self::Tools => {
                let Value::Array(tools) = value else {
                    return fail("`tools` must be an array".into());
                };
                if tools.len() > 128 {
                    return fail("at most 128 tools".into());
                }
                for (i, tool) in tools.iter().enumerate() {
                    let function = tool.get("function");
                    let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
                    let parameters = function.and_then(|f| f.get("parameters"));
                    let ok = tool.get("type").and_then(Value::as_str) == Some("function")
                        && name.is_some_and(is_tool_name)
                        && parameters.is_none_or(|p| p.is_object() || p.is_null());
                    if !ok {
                        return Err(invalid(
                            &format!("tools[{i}]"),
                            "a tool is `{\"type\": \"function\", \"function\": {\"name\": …}}` with a name of 1–64 letters, digits, _ or -, and `parameters` a JSON Schema object",
                        ));
                    }
                }
                Ok(())
            }
            Self::ToolChoice => match value {
                Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(()),
                Value::Object(_)
                    if value.get("type").and_then(Value::as_str) == Some("function")
                        && value
                            .get("function")
                            .and_then(|f| f.get("name"))
                            .and_then(Value::as_str)
                            .is_some_and(is_tool_name) =>
                {
                    Ok(())
                }
                _ => fail("`tool_choice` must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": …}}".into()),
            },
        }
    }
}

//! The tool result that tells the model a call failed (`isError`), shared
//! by every tool.

use serde_json::{json, Value};

/// A failed call's result: one text item the model can read.
pub fn tool_error(text: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}], "isError": true})
}

//! JSON written the way Python's `json.dumps` writes it, for the chat templates' `tojson` filter.
//!
//! transformers renders chat templates with `tojson` = `json.dumps(x, ensure_ascii=False,
//! indent=indent, separators=separators, sort_keys=sort_keys)`: `", "` and `": "` between items,
//! no HTML escaping. minijinja's own `tojson` is compact and HTML-escaped, so tool schemas rendered
//! into a prompt would differ from what the model was trained on.

use std::io::{self, Write};

use serde::Serialize;

/// Separators of `json.dumps` without indent: `", "` and `": "`.
struct PythonCompact;

impl serde_json::ser::Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        item_separator(w, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

/// `", "` before every item but the first, as `json.dumps` separates them.
fn item_separator<W: ?Sized + Write>(writer: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

/// Options of `tojson` that templates use.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonStyle {
    pub indent: Option<usize>,
    pub ensure_ascii: bool,
    pub sort_keys: bool,
}

/// Serializes `value` as Python's `json.dumps` would with these options.
pub fn dumps<T: Serialize>(value: &T, style: JsonStyle) -> Result<String, serde_json::Error> {
    let out = if style.sort_keys {
        // serde_json keeps maps in insertion order (`preserve_order`, which llguidance turns
        // on), as Python's dicts are; sort_keys sorts them.
        let mut sorted = serde_json::to_value(value)?;
        sorted.sort_all_objects();
        write(&sorted, style.indent)?
    } else {
        write(value, style.indent)?
    };
    Ok(if style.ensure_ascii {
        escape_non_ascii(&out)
    } else {
        out
    })
}

fn write<T: Serialize>(value: &T, indent: Option<usize>) -> Result<String, serde_json::Error> {
    let mut out = Vec::new();
    match indent {
        Some(n) => {
            let spaces = " ".repeat(n);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))?;
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonCompact,
        ))?,
    }
    String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// Non-ASCII characters only occur inside JSON strings, so escaping them anywhere is safe.
fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        let v = json!({"name": "get_weather", "args": [1, 2.5, null, true], "d": "<b>é</b>"});
        // Python: json.dumps(v, ensure_ascii=False, sort_keys=True)
        let style = JsonStyle {
            sort_keys: true,
            ..JsonStyle::default()
        };
        assert_eq!(
            dumps(&v, style).expect("json"),
            r#"{"args": [1, 2.5, null, true], "d": "<b>é</b>", "name": "get_weather"}"#
        );
        // Python: json.dumps(v, ensure_ascii=False): insertion order.
        assert_eq!(
            dumps(&v, JsonStyle::default()).expect("json"),
            r#"{"name": "get_weather", "args": [1, 2.5, null, true], "d": "<b>é</b>"}"#
        );
        // Python: json.dumps(v, ensure_ascii=True, sort_keys=True, indent=2)
        let style = JsonStyle {
            indent: Some(2),
            ensure_ascii: true,
            sort_keys: true,
        };
        assert_eq!(
            dumps(&json!({"b": ["🦀"], "a": {}}), style).expect("json"),
            "{\n  \"a\": {},\n  \"b\": [\n    \"\\ud83e\\udd80\"\n  ]\n}"
        );
    }
}

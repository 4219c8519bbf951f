//! Plain text from a document as added: `.txt` and Markdown as they are (their markup is
//! punctuation, which the index ignores), HTML rendered to text by html2text (tags, scripts and
//! styles dropped).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Markdown,
    Html,
}

impl Format {
    /// By the name's extension, case-insensitively.
    pub fn of(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" => Format::Text,
            "md" | "markdown" => Format::Markdown,
            "html" | "htm" => Format::Html,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
        }
    }
}

/// The extensions [`Format::of`] knows, for messages.
pub const EXTENSIONS: &str = ".txt, .md, .markdown, .html, .htm";

/// Lines wider than this are wrapped by the HTML renderer; wide enough never to split a
/// paragraph a person would write, which keeps chunks readable.
const HTML_WIDTH: usize = 100_000;

pub fn extract(format: Format, bytes: &[u8]) -> Result<String, String> {
    match format {
        Format::Text | Format::Markdown => std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|e| format!("is not UTF-8 text ({e})")),
        Format::Html => {
            std::str::from_utf8(bytes).map_err(|e| format!("is not UTF-8 HTML ({e})"))?;
            html2text::config::plain_no_decorate()
                .string_from_read(bytes, HTML_WIDTH)
                .map_err(|e| format!("cannot be read as HTML: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_loses_its_tags_scripts_and_styles() {
        let html = b"<html><head><title>T</title><style>p { color: red }</style>\
            <script>var secret = 1;</script></head><body><h1>Returns</h1>\
            <p>Refunds within <b>30 days</b>.</p></body></html>";
        let text = extract(Format::Html, html).expect("html");
        assert!(
            text.contains("Returns") && text.contains("Refunds within 30 days."),
            "{text}"
        );
        assert!(
            !text.contains('<') && !text.contains("secret") && !text.contains("color"),
            "{text}"
        );
        assert_eq!(Format::of("a/B.HTM"), Some(Format::Html));
        assert_eq!(Format::of("notes.md"), Some(Format::Markdown));
        assert_eq!(Format::of("image.png"), None);
        assert!(extract(Format::Text, &[0xff, 0xfe]).is_err());
    }
}

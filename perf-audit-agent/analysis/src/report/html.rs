//! `report.html`: the markdown report as one self-contained page, with the
//! flamegraphs embedded (interactive, in sandboxed `srcdoc` frames so that
//! each SVG's script and ids stay separate). No network access needed:
//! no external CSS, fonts or scripts.

use pulldown_cmark::{Options, Parser, html};

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}code{background:#f5f5f5;padding:0 3px;border-radius:3px}pre{background:#f5f5f5;padding:10px;overflow-x:auto}\
pre code{background:none}blockquote{border-left:4px solid #e0a000;margin:1em 0;padding:0.2em 1em;background:#fff8e0}\
iframe{width:100%;border:1px solid #ccc;margin:0.5em 0}h2{border-bottom:2px solid #ddd}";

/// A flamegraph to embed: a heading and the SVG bytes inferno wrote.
pub struct Embedded<'a> {
    pub title: &'a str,
    pub svg: &'a [u8],
}

pub fn render(title: &str, markdown: &str, flamegraphs: &[Embedded<'_>]) -> String {
    let mut body = String::new();
    html::push_html(&mut body, Parser::new_ext(markdown, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH));
    let mut page = String::with_capacity(body.len() + 64 * 1024);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    page.push_str(&escape(title));
    page.push_str("</title><style>");
    page.push_str(STYLE);
    page.push_str("</style></head><body>\n");
    page.push_str(&body);
    if !flamegraphs.is_empty() {
        page.push_str("<h2>Flamegraphs</h2>\n");
    }
    for fg in flamegraphs {
        let svg = String::from_utf8_lossy(fg.svg);
        page.push_str("<h3>");
        page.push_str(&escape(fg.title));
        page.push_str("</h3>\n<iframe sandbox=\"allow-scripts\" height=\"620\" srcdoc=\"");
        page.push_str(&escape(&svg));
        page.push_str("\"></iframe>\n");
    }
    page.push_str("</body></html>\n");
    page
}

/// Escapes text for HTML content and double-quoted attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_and_embeds_the_svg_escaped() {
        let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>var a = 1 < 2;</script></svg>";
        let page = render("Audit", "## Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", &[Embedded { title: "CPU", svg }]);
        assert!(page.contains("<table>"), "tables are rendered");
        assert!(page.contains("srcdoc=\"&lt;svg xmlns=&quot;http://www.w3.org/2000/svg&quot;&gt;"));
        assert!(!page.contains("<link") && !page.contains("src=\"http"), "no external resources");
    }
}

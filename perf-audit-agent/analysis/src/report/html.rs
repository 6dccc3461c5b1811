//! `report.html`: one self-contained page for a browser. The layout (what
//! to fix first, baseline, sections with their plots and flamegraphs) and
//! its Content-Security-Policy are in `page.rs`; the flamegraphs stay
//! interactive (search, click to zoom) in sandboxed `srcdoc` frames, so
//! that each SVG's script and ids stay separate. No network access needed:
//! no external CSS, fonts or scripts.

use super::Report;

/// A flamegraph to embed: a heading, the SVG bytes inferno wrote, and the
/// id of the report section it belongs to (`cpu`, `async`, `memory`).
pub struct Embedded<'a> {
    pub title: &'a str,
    pub svg: &'a [u8],
    pub section: &'a str,
}

pub fn render(report: &Report, markdown: &str, flamegraphs: &[Embedded<'_>]) -> String {
    super::page::render(report, markdown, flamegraphs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_and_embeds_the_svg_escaped() {
        let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\" height=\"100\"><script type=\"text/ecmascript\"><![CDATA[var a = 1 < 2;]]></script></svg>";
        let report = super::super::summary::tests::report();
        let page = render(
            &report,
            "## Title\n\n---\n\n### CPU Profiling Results\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
            &[Embedded { title: "CPU", svg, section: "cpu" }],
        );
        assert!(page.contains("<table>"), "tables are rendered");
        assert!(page.contains("srcdoc=\"&lt;!DOCTYPE html&gt;"), "{page}");
        assert!(page.contains("&lt;svg xmlns=&quot;http://www.w3.org/2000/svg&quot;"));
        assert!(page.contains("var a = 1 &lt; 2;"));
        assert!(!page.contains("<link") && !page.contains("src=\"http"), "no external resources");
    }
}

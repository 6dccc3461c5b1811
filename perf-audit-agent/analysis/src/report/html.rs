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

/// The audit's page with its flamegraphs, each in the section it belongs
/// to (the CPU one always; off-CPU and memory when they were drawn).
pub fn render_with_flamegraphs(report: &Report, markdown: &str, cpu: &[u8], offcpu: Option<&[u8]>, memory: Option<&[u8]>) -> String {
    let mut embedded = vec![Embedded { title: "CPU flamegraph (flamegraph.svg)", svg: cpu, section: "cpu" }];
    if let Some(svg) = offcpu {
        embedded.push(Embedded { title: "Off-CPU flamegraph (offcpu.svg)", svg, section: "async" });
    }
    if let Some(svg) = memory {
        embedded.push(Embedded { title: "Memory flamegraph (memory.svg)", svg, section: "memory" });
    }
    render(report, markdown, &embedded)
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

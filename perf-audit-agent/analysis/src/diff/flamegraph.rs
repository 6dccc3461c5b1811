//! The differential flamegraph (`diff.svg`), with inferno's differential
//! mode: `inferno::differential` pairs the two folded profiles into
//! `stack old new` lines, which the flamegraph renders sized by NEW and
//! coloured by the change (red grew, blue shrank). OLD is normalized to
//! NEW's sample count, so audits of different lengths compare. Pure:
//! folded text in, SVG bytes out; colours are deterministic.

use crate::error::{Error, Result};

pub fn differential_svg(title: &str, subtitle: &str, old_folded: &str, new_folded: &str) -> Result<Vec<u8>> {
    let mut paired = Vec::new();
    let options = inferno::differential::Options { normalize: true, ..Default::default() };
    inferno::differential::from_readers(options, old_folded.as_bytes(), new_folded.as_bytes(), &mut paired)
        .map_err(|e| Error::internal(format!("pairing the folded stacks failed: {e}")))?;
    let paired = String::from_utf8_lossy(&paired).into_owned();
    let mut lines: Vec<&str> = paired.lines().filter(|l| !l.trim().is_empty()).collect();
    // inferno refuses an empty profile; render a clear empty graph.
    if lines.is_empty() {
        lines.push("no samples in either profile 0 1");
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.subtitle = Some(subtitle.to_string());
    options.count_name = "samples".to_string();
    options.hash = true;
    options.deterministic = true;
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, lines, &mut svg)
        .map_err(|e| Error::internal(format!("rendering the differential flamegraph failed: {e}")))?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_stack_is_red_and_a_shrunk_one_blue() {
        let old = "main;a 50\nmain;b 50\n";
        let new = "main;a 90\nmain;b 10\n";
        let svg = String::from_utf8(differential_svg("t", "s", old, new).unwrap()).unwrap();
        // inferno writes the change of the frame's share of samples into its title.
        let title_of = |f: &str| {
            let at = svg.find(&format!("<title>{f} (")).unwrap_or_else(|| panic!("{f} in svg"));
            svg[at..at + svg[at..].find("</title>").unwrap()].to_string()
        };
        assert!(title_of("a").contains("+40.00%"), "{}", title_of("a"));
        assert!(title_of("b").contains("-40.00%"), "{}", title_of("b"));
        assert_eq!(differential_svg("t", "s", old, new).unwrap(), svg.as_bytes(), "deterministic");
    }

    #[test]
    fn empty_profiles_still_render() {
        let svg = String::from_utf8(differential_svg("t", "s", "", "").unwrap()).unwrap();
        assert!(svg.contains("no samples in either profile"));
    }
}

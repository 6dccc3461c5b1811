//! Flamegraphs (inferno) from folded stacks. Deterministic: colours come
//! from a hash of the frame name, never from a random generator.

use crate::error::{Error, ErrorKind, Result};

pub fn flamegraph_svg(title: &str, subtitle: &str, count_name: &str, folded: &[String]) -> Result<Vec<u8>> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.subtitle = Some(subtitle.to_string());
    options.count_name = count_name.to_string();
    options.hash = true;
    options.deterministic = true;
    let mut svg = Vec::new();
    if folded.is_empty() {
        // inferno refuses an empty profile; render a clear empty graph.
        let placeholder = ["no samples 1".to_string()];
        inferno::flamegraph::from_lines(&mut options, placeholder.iter().map(String::as_str), &mut svg)
    } else {
        inferno::flamegraph::from_lines(&mut options, folded.iter().map(String::as_str), &mut svg)
    }
    .map_err(|e| Error::new(ErrorKind::Internal, format!("rendering the flamegraph failed: {e}")))?;
    Ok(svg)
}

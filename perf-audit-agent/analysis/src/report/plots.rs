//! The report's plots, as inline SVG written here (no plotting library, no
//! script): plain data in, a `<svg>` string out. Deterministic like the
//! other renderers: fixed palette, coordinates rounded to 0.1 px, no
//! clock. Every mark carries a `<title>` so hovering shows its value.
//!
//! - [`latency`]: p50/p99 per second of the load, with the p99 alert line
//! - [`memory`]: RSS and anonymous memory with their least-squares fits
//! - [`cpu_by_role`]: CPU cores per thread role, stacked, with the CPU alert line
//! - [`worker_time`]: one bar per Tokio worker: on-CPU, blocked in tasks,
//!   idle, run queue

use std::fmt::Write as _;

use super::{CpuTimeline, CpuTimelinePoint, OffCpuThreadRow};
use crate::{memory::faults::RssSeries, profile::async_runtime::ThreadRole, report::schema::LatencySeries};

const WIDTH: f64 = 720.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const PLOT_HEIGHT: f64 = 180.0;
const BOTTOM: f64 = 34.0;

const BLUE: &str = "#1f6fb4";
const ORANGE: &str = "#e07b00";
const PURPLE: &str = "#7b4fa8";
const GREEN: &str = "#2e9d4e";
const RED: &str = "#c9302c";
const GREY: &str = "#b8b8b8";
const AXIS: &str = "#555";
const GRID: &str = "#e4e4e4";
/// Stacked series, bottom first.
const STACK: [&str; 3] = ["#2e9d4e", "#e07b00", "#7f8c99"];

/// Escapes text for SVG/HTML content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate, to 0.1 px.
fn c(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == 0.0 { "0".to_string() } else { format!("{r}") }
}

/// A value with at most `decimals` decimals, without trailing zeros.
fn num(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if s == "-0" { "0".to_string() } else { s }
}

/// A "nice" tick step (1, 2 or 5 x 10^k) for about `ticks` ticks over `span`.
fn nice_step(span: f64, ticks: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / ticks;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let f = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

fn decimals_for(step: f64) -> usize {
    if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize }
}

/// Linear axes of one chart.
struct Axes {
    top: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
    y_step: f64,
}

impl Axes {
    /// Y from `y_min` (0 for quantities that start at nothing) to a nice
    /// value above `y_hi`.
    fn new(top: f64, x_max: f64, y_lo: f64, y_hi: f64) -> Axes {
        let y_hi = if y_hi > y_lo { y_hi } else { y_lo + 1.0 };
        let step = nice_step(y_hi - y_lo, 4.0);
        let y_min = (y_lo / step).floor() * step;
        let y_max = (y_hi / step).ceil() * step;
        let y_max = if y_max <= y_min { y_min + step } else { y_max };
        Axes { top, x_max: x_max.max(1.0), y_min, y_max, y_step: step }
    }

    fn bottom(&self) -> f64 {
        self.top + PLOT_HEIGHT
    }

    fn height(&self) -> f64 {
        self.bottom() + BOTTOM
    }

    fn x(&self, v: f64) -> f64 {
        LEFT + (v / self.x_max).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        self.top + PLOT_HEIGHT - ((v - self.y_min) / (self.y_max - self.y_min)).clamp(0.0, 1.0) * PLOT_HEIGHT
    }
}

/// The `<svg>` element around a chart's `body`.
fn wrap(id: &str, title: &str, height: f64, body: &str) -> String {
    let mut svg = String::with_capacity(body.len() + 512);
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot-svg\" id=\"{id}\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{}\" font-family=\"system-ui, -apple-system, Segoe UI, sans-serif\" font-size=\"12\">",
        c(WIDTH),
        c(height),
        escape(title)
    );
    let _ = writeln!(svg, "<title>{}</title>", escape(title));
    let _ = writeln!(svg, "<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#fff\"/>", c(WIDTH), c(height));
    let _ = writeln!(
        svg,
        "<text x=\"8\" y=\"18\" font-size=\"14\" font-weight=\"bold\" fill=\"#222\">{}</text>",
        escape(title)
    );
    svg.push_str(body);
    svg.push_str("</svg>\n");
    svg
}

/// The legend under the title, in as many rows as it needs: (colour,
/// dashed, text). Returns where the plot area starts.
fn legend(svg: &mut String, entries: &[(&str, bool, String)]) -> f64 {
    let mut x = LEFT;
    let mut y = 32.0;
    for (colour, dashed, text) in entries {
        // ~6.5 px per character at 12 px.
        let width = 22.0 + text.chars().count() as f64 * 6.5;
        if x > LEFT && x + width > WIDTH - RIGHT {
            x = LEFT;
            y += 16.0;
        }
        let dash = if *dashed { " stroke-dasharray=\"6 4\"" } else { "" };
        let _ = writeln!(
            svg,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"3\"{dash}/><text x=\"{}\" y=\"{}\" fill=\"#333\">{}</text>",
            c(x),
            c(y),
            c(x + 18.0),
            c(y),
            c(x + 22.0),
            c(y + 4.0),
            escape(text)
        );
        x += width + 20.0;
    }
    y + 16.0
}

/// Grid, axes, ticks and labels; `y_label` formats a y tick.
fn axes(svg: &mut String, a: &Axes, x_label: &str, y_label: &dyn Fn(f64, usize) -> String) {
    let decimals = decimals_for(a.y_step);
    let mut v = a.y_min;
    let mut i = 0;
    while v <= a.y_max + a.y_step * 1e-6 && i < 50 {
        let y = a.y(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{GRID}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"{AXIS}\">{}</text>",
            c(LEFT),
            c(y),
            c(WIDTH - RIGHT),
            c(y),
            c(LEFT - 6.0),
            c(y + 4.0),
            escape(&y_label(v, decimals))
        );
        i += 1;
        v = a.y_min + a.y_step * i as f64;
    }
    let x_step = nice_step(a.x_max, 8.0).max(1.0);
    let mut t = 0.0;
    let mut i = 0;
    while t <= a.x_max + 1e-9 && i < 100 {
        let x = a.x(t);
        let _ = writeln!(
            svg,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{AXIS}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{AXIS}\">{}</text>",
            c(x),
            c(a.bottom()),
            c(x),
            c(a.bottom() + 4.0),
            c(x),
            c(a.bottom() + 17.0),
            num(t, 0)
        );
        i += 1;
        t = x_step * i as f64;
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{AXIS}\"/><line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{AXIS}\"/>",
        c(LEFT),
        c(a.top),
        c(LEFT),
        c(a.bottom()),
        c(LEFT),
        c(a.bottom()),
        c(WIDTH - RIGHT),
        c(a.bottom())
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{AXIS}\">{}</text>",
        c(LEFT + (WIDTH - LEFT - RIGHT) / 2.0),
        c(a.bottom() + 31.0),
        escape(x_label)
    );
}

/// A line through `points` (x, y, hover text); `None` breaks it. Points
/// with a hover text get a mark.
fn polyline(svg: &mut String, a: &Axes, colour: &str, dashed: bool, points: &[Option<(f64, f64, String)>]) {
    let dash = if dashed { " stroke-dasharray=\"6 4\"" } else { "" };
    for run in points.split(|p| p.is_none()) {
        let run: Vec<&(f64, f64, String)> = run.iter().flatten().collect();
        if run.len() > 1 {
            let coords: Vec<String> = run.iter().map(|(x, y, _)| format!("{},{}", c(a.x(*x)), c(a.y(*y)))).collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-linejoin=\"round\"{dash} points=\"{}\"/>",
                coords.join(" ")
            );
        }
    }
    for (x, y, text) in points.iter().flatten() {
        if text.is_empty() {
            continue;
        }
        let _ = writeln!(
            svg,
            "<circle cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"{colour}\"><title>{}</title></circle>",
            c(a.x(*x)),
            c(a.y(*y)),
            escape(text)
        );
    }
}

/// A dashed horizontal threshold line with its label above it, at the right.
fn threshold(svg: &mut String, a: &Axes, value: f64, label: &str) {
    let y = a.y(value);
    let _ = writeln!(
        svg,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{RED}\" stroke-width=\"1.5\" stroke-dasharray=\"8 4\"><title>{}</title></line><text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"{RED}\">{}</text>",
        c(LEFT),
        c(y),
        c(WIDTH - RIGHT),
        c(y),
        escape(label),
        c(WIDTH - RIGHT - 4.0),
        c(y - 4.0),
        escape(label)
    );
}

fn ms_label(v: f64, decimals: usize) -> String {
    format!("{} ms", num(v, decimals))
}

/// Request latency per second of the load (p50, p99) with the p99 alert
/// threshold of alerts.yml. `None` when no request was answered.
pub fn latency(series: &LatencySeries, p99_alert_ms: Option<f64>, duration_s: f64) -> Option<String> {
    let answered = |p: &crate::report::schema::LatencyPoint| p.p99_ms > 0.0;
    if !series.points.iter().any(answered) {
        return None;
    }
    let interval = series.interval_s.max(1e-3);
    let end = series.points.last().map(|p| p.t_s + interval).unwrap_or(0.0);
    let mut body = String::new();
    let mut entries = vec![(BLUE, false, "p50".to_string()), (ORANGE, false, "p99".to_string())];
    if let Some(t) = p99_alert_ms {
        entries.push((RED, true, format!("alerts.yml HighLatency: p99 > {} ms", num(t, 1))));
    }
    let errors: u64 = series.points.iter().map(|p| p.errors).sum();
    if errors > 0 {
        entries.push((RED, false, format!("seconds with errors ({errors} in all)")));
    }
    let top = legend(&mut body, &entries);
    let hi = series.points.iter().map(|p| p.p99_ms).fold(0.0, f64::max).max(p99_alert_ms.unwrap_or(0.0));
    let a = Axes::new(top, duration_s.max(end), 0.0, hi * 1.05);
    axes(&mut body, &a, "seconds since the load started (planned send time)", &ms_label);
    let line = |value: fn(&crate::report::schema::LatencyPoint) -> f64, name: &str| -> Vec<Option<(f64, f64, String)>> {
        series
            .points
            .iter()
            .map(|p| {
                answered(p).then(|| {
                    let text = format!(
                        "{}-{} s: {name} {} ms ({} requests{})",
                        num(p.t_s, 0),
                        num(p.t_s + interval, 0),
                        num(value(p), 3),
                        p.requests,
                        if p.errors > 0 { format!(", {} errors", p.errors) } else { String::new() }
                    );
                    (p.t_s + interval / 2.0, value(p), text)
                })
            })
            .collect()
    };
    polyline(&mut body, &a, BLUE, false, &line(|p| p.p50_ms, "p50"));
    polyline(&mut body, &a, ORANGE, false, &line(|p| p.p99_ms, "p99"));
    if let Some(t) = p99_alert_ms {
        threshold(&mut body, &a, t, &format!("alert: p99 > {} ms", num(t, 1)));
    }
    for p in series.points.iter().filter(|p| p.errors > 0) {
        let x = a.x(p.t_s + interval / 2.0);
        let y = a.bottom();
        let _ = writeln!(
            body,
            "<path d=\"M{} {}L{} {}L{} {}Z\" fill=\"{RED}\"><title>{}-{} s: {} of {} requests failed</title></path>",
            c(x),
            c(y - 9.0),
            c(x - 5.0),
            c(y - 1.0),
            c(x + 5.0),
            c(y - 1.0),
            num(p.t_s, 0),
            num(p.t_s + interval, 0),
            p.errors,
            p.requests
        );
    }
    Some(wrap("plot-latency-svg", "Request latency over the audit (per second)", a.height(), &body))
}

/// Bytes in a unit chosen for the axis maximum.
fn byte_unit(max: f64) -> (f64, &'static str) {
    const KIB: f64 = 1024.0;
    if max >= KIB * KIB * KIB * 2.0 {
        (KIB * KIB * KIB, "GiB")
    } else if max >= KIB * KIB * 2.0 {
        (KIB * KIB, "MiB")
    } else {
        (KIB, "KiB")
    }
}

fn rate(bytes_per_s: f64) -> String {
    let (div, unit) = byte_unit(bytes_per_s.abs());
    format!("{}{} {unit}/s", if bytes_per_s >= 0.0 { "+" } else { "" }, num(bytes_per_s / div, 1))
}

/// RSS and anonymous memory over the audit with their least-squares fits
/// (dashed). The y axis spans the readings, not zero to them, so that
/// growth shows. `None` with fewer than two readings.
pub fn memory(series: &RssSeries) -> Option<String> {
    let points = &series.points;
    if points.len() < 2 {
        return None;
    }
    let first = points[0].t_s;
    let last = points[points.len() - 1].t_s;
    let lo = points.iter().map(|p| p.anon_bytes.min(p.rss_bytes)).min().unwrap_or(0) as f64;
    let hi = points.iter().map(|p| p.rss_bytes.max(p.anon_bytes)).max().unwrap_or(0) as f64;
    let (div, unit) = byte_unit(hi);
    let fit_text = |name: &str, fit: &Option<crate::memory::analysis::Fit>| match fit {
        Some(f) => format!("{name} fit {} (r² {})", rate(f.slope), num(f.r2, 2)),
        None => format!("{name} fit: none"),
    };
    let mut body = String::new();
    let top = legend(
        &mut body,
        &[
            (BLUE, false, "RSS".to_string()),
            (PURPLE, false, "anonymous".to_string()),
            (BLUE, true, fit_text("RSS", &series.rss_fit)),
            (PURPLE, true, fit_text("anonymous", &series.anon_fit)),
        ],
    );
    // In the unit, so that ticks fall on round numbers of it.
    let a = Axes::new(top, last.max(1.0), lo / div * 0.95, hi / div * 1.02);
    axes(&mut body, &a, "seconds since the memory collector started", &|v, d| format!("{} {unit}", num(v, d)));
    let line = |value: fn(&crate::memory::faults::RssPoint) -> u64, name: &str| -> Vec<Option<(f64, f64, String)>> {
        // Hover marks on at most ~60 points, so long series stay light.
        let every = points.len().div_ceil(60).max(1);
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let v = value(p) as f64 / div;
                let text = if i % every == 0 || i + 1 == points.len() {
                    format!("{} s: {name} {} {unit}", num(p.t_s, 1), num(v, 2))
                } else {
                    String::new()
                };
                Some((p.t_s, v, text))
            })
            .collect()
    };
    polyline(&mut body, &a, BLUE, false, &line(|p| p.rss_bytes, "RSS"));
    polyline(&mut body, &a, PURPLE, false, &line(|p| p.anon_bytes, "anonymous"));
    for (fit, colour) in [(&series.rss_fit, BLUE), (&series.anon_fit, PURPLE)] {
        if let Some(f) = fit {
            let at = |t: f64| (f.intercept + f.slope * t) / div;
            let ends = [Some((first, at(first), String::new())), Some((last, at(last), String::new()))];
            polyline(&mut body, &a, colour, true, &ends);
        }
    }
    Some(wrap("plot-memory-svg", "Memory over the audit: RSS and anonymous memory", a.height(), &body))
}

/// CPU cores per thread role over the audit, stacked, with the CPU alert
/// threshold of alerts.yml. `None` without a timeline.
pub fn cpu_by_role(timeline: &CpuTimeline, cpu_alert_cores: Option<f64>) -> Option<String> {
    if timeline.points.is_empty() || timeline.roles.is_empty() {
        return None;
    }
    let interval = timeline.interval_s.max(1e-3);
    let end = timeline.points.last().map(|p| p.t_s + interval).unwrap_or(0.0);
    let total = |p: &CpuTimelinePoint| p.cores.iter().sum::<f64>();
    let n = timeline.points.len() as f64;
    let mut entries: Vec<(&str, bool, String)> = timeline
        .roles
        .iter()
        .enumerate()
        .map(|(i, role)| {
            let mean = timeline.points.iter().map(|p| p.cores.get(i).copied().unwrap_or(0.0)).sum::<f64>() / n;
            let mean = if mean > 0.0 && mean < 0.005 { "<0.01".to_string() } else { num(mean, 2) };
            (STACK[i % STACK.len()], false, format!("{role} (mean {mean} cores)"))
        })
        .collect();
    if let Some(t) = cpu_alert_cores {
        entries.push((RED, true, format!("alerts.yml HighCpuUsage: > {} cores", num(t, 2))));
    }
    let mut body = String::new();
    let top = legend(&mut body, &entries);
    let hi = timeline.points.iter().map(total).fold(0.0, f64::max).max(cpu_alert_cores.unwrap_or(0.0));
    let a = Axes::new(top, end, 0.0, hi.max(0.1) * 1.05);
    axes(&mut body, &a, "seconds since collection started", &|v, d| num(v, d));
    // Steps: each bucket is flat over its interval.
    let mut below = vec![0.0; timeline.points.len()];
    for (i, role) in timeline.roles.iter().enumerate() {
        let above: Vec<f64> =
            timeline.points.iter().zip(&below).map(|(p, b)| b + p.cores.get(i).copied().unwrap_or(0.0)).collect();
        let mut d = String::new();
        for (k, p) in timeline.points.iter().enumerate() {
            let cmd = if k == 0 { 'M' } else { 'L' };
            let _ = write!(
                d,
                "{cmd}{} {}L{} {}",
                c(a.x(p.t_s)),
                c(a.y(above[k])),
                c(a.x(p.t_s + interval)),
                c(a.y(above[k]))
            );
        }
        for (k, p) in timeline.points.iter().enumerate().rev() {
            let _ =
                write!(d, "L{} {}L{} {}", c(a.x(p.t_s + interval)), c(a.y(below[k])), c(a.x(p.t_s)), c(a.y(below[k])));
        }
        d.push('Z');
        let colour = STACK[i % STACK.len()];
        let _ = writeln!(
            body,
            "<path d=\"{d}\" fill=\"{colour}\" fill-opacity=\"0.85\" stroke=\"{colour}\"><title>{}</title></path>",
            escape(role)
        );
        below = above;
    }
    // Hover per bucket: the breakdown.
    for p in &timeline.points {
        let parts: Vec<String> =
            timeline.roles.iter().zip(&p.cores).map(|(r, v)| format!("{r} {}", num(*v, 2))).collect();
        let _ = writeln!(
            body,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#000\" fill-opacity=\"0\"><title>{}-{} s: {} cores ({})</title></rect>",
            c(a.x(p.t_s)),
            c(a.top),
            c(a.x(p.t_s + interval) - a.x(p.t_s)),
            c(PLOT_HEIGHT),
            num(p.t_s, 0),
            num(p.t_s + interval, 0),
            num(total(p), 2),
            escape(&parts.join(", "))
        );
    }
    if let Some(t) = cpu_alert_cores {
        threshold(&mut body, &a, t, &format!("alert: CPU > {} cores", num(t, 2)));
    }
    Some(wrap("plot-cpu-roles-svg", "CPU by thread role over the audit (cores)", a.height(), &body))
}

/// One horizontal bar per Tokio worker: time on the CPU, blocked inside
/// tasks (what blocking-in-async costs), idle (parked), waiting in the run
/// queue; as shares of the worker's time seen. `None` without workers.
pub fn worker_time(threads: &[OffCpuThreadRow]) -> Option<String> {
    let mut workers: Vec<&OffCpuThreadRow> = threads.iter().filter(|t| t.role == ThreadRole::Worker).collect();
    if workers.is_empty() {
        return None;
    }
    workers.sort_by(|a, b| a.name.cmp(&b.name).then(a.tid.cmp(&b.tid)));
    const LABEL: f64 = 170.0;
    const BAR: f64 = 22.0;
    const GAP: f64 = 10.0;
    let parts = [(GREEN, "on CPU"), (RED, "blocked in tasks"), (GREY, "idle (parked)"), (ORANGE, "run queue")];
    let mut body = String::new();
    let top = legend(&mut body, &parts.iter().map(|(col, name)| (*col, false, name.to_string())).collect::<Vec<_>>());
    let x0 = LEFT.max(LABEL);
    let span = WIDTH - RIGHT - x0 - 44.0;
    for (row, w) in workers.iter().enumerate() {
        let y = top + row as f64 * (BAR + GAP);
        let blocked_in_tasks = w.blocked_in_tasks_ms.min(w.blocked_ms);
        let values = [w.on_cpu_ms, blocked_in_tasks, (w.blocked_ms - blocked_in_tasks).max(0.0), w.runqueue_ms];
        let total: f64 = values.iter().sum();
        let label = format!("{} ({})", w.name, w.tid);
        let _ = writeln!(
            body,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#222\">{}</text>",
            c(x0 - 6.0),
            c(y + BAR / 2.0 + 4.0),
            escape(&label)
        );
        let mut x = x0;
        for ((colour, name), v) in parts.iter().zip(values) {
            let share = if total > 0.0 { v / total } else { 0.0 };
            let width = share * span;
            if width > 0.0 {
                let _ = writeln!(
                    body,
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{colour}\"><title>{}: {name} {} ms ({}%)</title></rect>",
                    c(x),
                    c(y),
                    c(width),
                    c(BAR),
                    escape(&label),
                    num(v, 1),
                    num(share * 100.0, 1)
                );
            }
            x += width;
        }
        let busy =
            if total > 0.0 { format!("{}%", num(values[0] / total * 100.0, 0)) } else { "no time seen".to_string() };
        let _ = writeln!(
            body,
            "<text x=\"{}\" y=\"{}\" fill=\"#222\">{busy}</text>",
            c(if total > 0.0 { x0 + span + 6.0 } else { x0 }),
            c(y + BAR / 2.0 + 4.0)
        );
    }
    let bottom = top + workers.len() as f64 * (BAR + GAP);
    let _ = writeln!(
        body,
        "<text x=\"{}\" y=\"{}\" fill=\"{AXIS}\">shares of each worker's time seen by the scheduler; the number is the on-CPU share</text>",
        c(x0),
        c(bottom + 8.0)
    );
    Some(wrap("plot-worker-time-svg", "Worker time: where each Tokio worker's time went", bottom + 22.0, &body))
}

#[cfg(test)]
pub(crate) mod tests {
    //! Golden files: `snapshots/*.snap` next to this file. Bless changes
    //! with `INSTA_UPDATE=always cargo test -p perf-audit-analysis`
    //! and review the diff.
    use super::*;
    use crate::{
        memory::{analysis::Fit, faults::RssPoint},
        report::schema::LatencyPoint,
    };

    fn golden(name: &str, svg: &str) {
        insta::with_settings!({ prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(name, svg);
        });
    }

    pub(crate) fn latency_series() -> LatencySeries {
        let points = (0..12)
            .map(|s| {
                let stall = s == 7;
                LatencyPoint {
                    t_s: s as f64,
                    requests: if s == 9 { 0 } else { 100 },
                    errors: if stall { 3 } else { 0 },
                    p50_ms: if s == 9 {
                        0.0
                    } else if stall {
                        21.5
                    } else {
                        1.2 + 0.1 * s as f64
                    },
                    p99_ms: if s == 9 {
                        0.0
                    } else if stall {
                        48.0
                    } else {
                        4.0 + 0.25 * s as f64
                    },
                    max_ms: if s == 9 {
                        0.0
                    } else if stall {
                        60.1
                    } else {
                        6.0
                    },
                }
            })
            .collect();
        LatencySeries { interval_s: 1.0, points }
    }

    pub(crate) fn rss_series() -> RssSeries {
        let mib = 1024 * 1024;
        let points: Vec<RssPoint> = (0..21)
            .map(|i| RssPoint {
                t_s: i as f64 * 0.5,
                rss_bytes: 40 * mib + i * 512 * 1024 + if i % 4 == 0 { 300_000 } else { 0 },
                anon_bytes: 22 * mib + i * 480 * 1024,
                heap_bytes: 8 * mib,
                huge_page_bytes: 0,
            })
            .collect();
        RssSeries {
            interval_ms: 500,
            rss_fit: Some(Fit { slope: 1_063_000.0, intercept: 42_000_000.0, r2: 0.987, points: 21 }),
            anon_fit: Some(Fit { slope: 983_040.0, intercept: 23_068_672.0, r2: 1.0, points: 21 }),
            peak_rss_bytes: points.iter().map(|p| p.rss_bytes).max().unwrap(),
            current_rss_bytes: points.last().unwrap().rss_bytes,
            points,
        }
    }

    pub(crate) fn cpu_timeline() -> CpuTimeline {
        CpuTimeline {
            interval_s: 1.0,
            roles: vec!["Tokio workers".into(), "blocking pool".into(), "other threads".into()],
            points: (0..10)
                .map(|s| CpuTimelinePoint {
                    t_s: s as f64,
                    cores: vec![0.4 + 0.05 * s as f64, if s % 3 == 0 { 0.2 } else { 0.0 }, 0.05],
                })
                .collect(),
        }
    }

    pub(crate) fn worker_rows() -> Vec<OffCpuThreadRow> {
        let row = |tid, name: &str, role, on, blocked, in_tasks, rq| OffCpuThreadRow {
            tid,
            name: name.to_string(),
            role,
            on_cpu_ms: on,
            blocked_ms: blocked,
            blocked_in_tasks_ms: in_tasks,
            runqueue_ms: rq,
            max_run_ms: 3.0,
        };
        vec![
            row(102, "tokio-runtime-w", ThreadRole::Worker, 4200.0, 5500.0, 1800.0, 300.0),
            row(101, "tokio-runtime-w", ThreadRole::Worker, 2500.0, 7400.0, 120.0, 100.0),
            row(100, "demo-service", ThreadRole::Other, 10.0, 9990.0, 0.0, 0.0),
            row(103, "tokio-runtime-w", ThreadRole::Worker, 0.0, 0.0, 0.0, 0.0),
        ]
    }

    #[test]
    fn latency_plot_golden() {
        golden("plot_latency", &latency(&latency_series(), Some(54.0), 12.0).unwrap());
    }

    #[test]
    fn memory_plot_golden() {
        golden("plot_memory", &memory(&rss_series()).unwrap());
    }

    #[test]
    fn cpu_by_role_plot_golden() {
        golden("plot_cpu_by_role", &cpu_by_role(&cpu_timeline(), Some(1.5)).unwrap());
    }

    #[test]
    fn worker_time_plot_golden() {
        golden("plot_worker_time", &worker_time(&worker_rows()).unwrap());
    }

    #[test]
    fn plots_without_data_are_left_out() {
        assert_eq!(latency(&LatencySeries::default(), Some(50.0), 10.0), None);
        let mut rss = rss_series();
        rss.points.truncate(1);
        assert_eq!(memory(&rss), None);
        assert_eq!(cpu_by_role(&CpuTimeline { interval_s: 1.0, roles: vec![], points: vec![] }, None), None);
        assert_eq!(worker_time(&worker_rows()[2..3]), None);
    }

    #[test]
    fn plots_are_deterministic_and_escape_names() {
        let mut rows = worker_rows();
        rows[0].name = "<script>&\"".to_string();
        let a = worker_time(&rows).unwrap();
        assert_eq!(a, worker_time(&rows).unwrap());
        assert!(a.contains("&lt;script&gt;&amp;&quot;") && !a.contains("<script>"), "{a}");
        assert!(!a.contains("NaN") && !a.contains("inf"));
    }

    #[test]
    fn nice_steps_and_numbers() {
        assert_eq!(nice_step(48.0, 4.0), 20.0);
        assert_eq!(nice_step(0.9, 4.0), 0.5);
        assert_eq!(nice_step(7.0, 8.0), 1.0);
        assert_eq!(num(1.50, 2), "1.5");
        assert_eq!(num(-0.0001, 2), "0");
        assert_eq!(c(12.345), "12.3");
    }
}

//! Training metrics: one JSON object per optimizer step appended to `metrics.jsonl`, and a
//! self-contained SVG line plot (loss curve, or any other series) drawn from it. No plotting
//! library: a polyline, axes and a few tick labels are all a loss curve needs.

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Write;
use std::path::Path;

pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    /// Open `path` for appending (a resumed run continues the same log). Lines of steps at or
    /// after `from_step` are dropped first, so a resume after a crash does not log steps twice.
    pub fn open(path: &Path, from_step: u64) -> Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path)?;
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(Value::as_u64))
                        .is_some_and(|s| s < from_step)
                })
                .collect();
            let mut s = kept.join("\n");
            if !s.is_empty() {
                s.push('\n');
            }
            std::fs::write(path, s)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file })
    }

    pub fn write(&mut self, v: &Value) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(v)?)?;
        Ok(())
    }
}

/// Read the series `key` (x = `step`) from a metrics JSONL file.
pub fn read_series(path: &Path, key: &str) -> Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get(key)?.as_f64()?)))
        .collect())
}

/// A line plot of `points` as an SVG document.
pub fn svg_plot(points: &[(f64, f64)], title: &str, ylabel: &str) -> String {
    let (w, h, ml, mr, mt, mb) = (640.0, 400.0, 70.0, 20.0, 40.0, 50.0);
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let finite: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let (x0, x1) = bounds(finite.iter().map(|p| p.0));
    let (y0, y1) = bounds(finite.iter().map(|p| p.1));
    let sx = |x: f64| ml + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| mt + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        w / 2.0,
        escape(title)
    );
    s += &format!(
        "<line x1=\"{ml}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{ml}\" y1=\"{mt}\" x2=\"{ml}\" y2=\"{}\" stroke=\"black\"/>\n",
        mt + ph,
        ml + pw,
        mt + ph,
        mt + ph
    );
    for i in 0..=4 {
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        s += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<line x1=\"{ml}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
            ml - 6.0,
            sy(fy) + 4.0,
            fmt(fy),
            sy(fy),
            ml + pw,
            sy(fy)
        );
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", sx(fx), mt + ph + 18.0, fmt(fx));
    }
    s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", ml + pw / 2.0, h - 10.0);
    s += &format!(
        "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
        mt + ph / 2.0,
        mt + ph / 2.0,
        escape(ylabel)
    );
    let pts: Vec<String> = finite.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
    s += &format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>\n</svg>\n",
        pts.join(" ")
    );
    s
}

/// Write `<key>.svg` next to the metrics log from its `key` series.
pub fn write_plot(log: &Path, key: &str, out: &Path, title: &str) -> Result<()> {
    let pts = read_series(log, key)?;
    std::fs::write(out, svg_plot(&pts, title, key)).with_context(|| format!("writing {}", out.display()))
}

fn bounds(it: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in it {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    (lo, hi)
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_has_one_point_per_step_and_survives_odd_input() {
        let svg = svg_plot(&[(0.0, 3.0), (1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0)], "loss <sft>", "loss");
        assert!(svg.starts_with("<svg") && svg.contains("loss &lt;sft&gt;"));
        let pts = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(pts.split(' ').count(), 3);
        assert!(svg_plot(&[], "empty", "loss").contains("<polyline"));
    }
}

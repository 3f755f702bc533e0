//! The report's timeline as a PNG (plotters, bitmap backend). Text uses DejaVu Sans from
//! Debian's fonts-dejavu-core (installed when missing, as root), loaded at run time.

use crate::report::Report;
use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            if !Path::new(FONT_PATH).exists() && crate::services::install::is_root() {
                let _ = std::process::Command::new("apt-get")
                    .args(["install", "-y", "-qq", "fonts-dejavu-core"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status();
            }
            let bytes = std::fs::read(FONT_PATH)
                .map_err(|e| format!("{FONT_PATH}: {e} (apt-get install fonts-dejavu-core)"))?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT_PATH} is not a usable font"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

pub(crate) const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

type Series = (String, Vec<(f64, f64)>);

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let x_max = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

pub fn draw(report: &Report, path: &Path) -> Result<()> {
    ensure_font()?;
    let tl = &report.timeline;
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((2, 2));

    let mut queues: Vec<Series> = Vec::new();
    if let Some(first) = tl.first() {
        for q in first.queue_depth.keys() {
            queues.push((
                q.clone(),
                tl.iter()
                    .map(|s| (s.t_s, s.queue_depth.get(q).copied().unwrap_or(0) as f64))
                    .collect(),
            ));
        }
    }
    panel(
        &areas[0],
        "Queue depth (visible + in flight)",
        "messages",
        &queues,
    )?;

    let rate = |f: fn(&crate::report::Sample) -> u64| -> Vec<(f64, f64)> {
        tl.windows(2)
            .map(|w| {
                let dt = (w[1].t_s - w[0].t_s).max(1e-6);
                (w[1].t_s, (f(&w[1]).saturating_sub(f(&w[0]))) as f64 / dt)
            })
            .collect()
    };
    let stages: Vec<Series> = vec![
        ("accepted/s".into(), rate(|s| s.accepted)),
        ("persisted/s".into(), rate(|s| s.persisted)),
        ("sent/s".into(), rate(|s| s.sent)),
        ("final/s".into(), rate(|s| s.final_status)),
    ];
    panel(
        &areas[1],
        "Throughput per stage",
        "notifications/s",
        &stages,
    )?;

    let idle = report.critical_read_idle.p99_ms;
    let p99: Vec<(f64, f64)> = tl
        .iter()
        .filter_map(|s| s.critical_read_p99_ms.map(|v| (s.t_s, v)))
        .collect();
    let x_end = tl.last().map_or(1.0, |s| s.t_s);
    panel(
        &areas[2],
        "Critical read p99 (GET /v2/notifications/{id})",
        "ms",
        &[
            ("p99 per sample".into(), p99),
            ("idle p99".into(), vec![(0.0, idle), (x_end, idle)]),
            (
                "2x idle (goal)".into(),
                vec![(0.0, 2.0 * idle), (x_end, 2.0 * idle)],
            ),
        ],
    )?;

    let budget = report.connection_budget as f64;
    panel(
        &areas[3],
        "Database connections",
        "connections",
        &[
            (
                "primary (server)".into(),
                tl.iter()
                    .map(|s| (s.t_s, s.primary_connections as f64))
                    .collect(),
            ),
            (
                "replica (server)".into(),
                tl.iter()
                    .map(|s| (s.t_s, s.replica_connections as f64))
                    .collect(),
            ),
            (
                "lanes (proxy clients)".into(),
                tl.iter()
                    .map(|s| (s.t_s, s.lane_connections as f64))
                    .collect(),
            ),
            ("budget".into(), vec![(0.0, budget), (x_end, budget)]),
        ],
    )?;
    root.present().context("writing the PNG")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Sample;

    #[test]
    fn draws_a_png_timeline() {
        let mut report = Report {
            connection_budget: 27,
            ..Report::default()
        };
        for i in 0..60u64 {
            let mut s = Sample {
                t_s: i as f64 * 0.5,
                accepted: i * 300,
                persisted: i * 280,
                sent: i * 250,
                final_status: i * 200,
                primary_connections: 5 + i % 7,
                replica_connections: 3,
                lane_connections: 12 + i % 5,
                critical_read_p99_ms: Some(2.0 + (i % 10) as f64 / 5.0),
                ..Sample::default()
            };
            s.queue_depth.insert("intake-bulk".into(), (i * 37) % 500);
            s.queue_depth.insert("send-normal".into(), (i * 11) % 200);
            report.timeline.push(s);
        }
        report.critical_read_idle.p99_ms = 2.5;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.png");
        draw(&report, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        assert!(
            bytes.len() > 20_000,
            "suspiciously small: {} bytes",
            bytes.len()
        );
        if let Ok(out) = std::env::var("FLOODGATE_KEEP_CHART") {
            std::fs::copy(&path, out).unwrap();
        }
    }
}

//! The capacity chart: each lane's stage rates against its bound (log scale), and the cost
//! per million emails by line item.

use super::CapacityReport;
use crate::report::chart::{COLOURS, ensure_font};
use anyhow::{Result, anyhow};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use std::path::Path;

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Horizontal bars on a log scale, one row each: (label, value, colour index).
fn bars(area: &Area<'_>, title: &str, x_desc: &str, rows: &[(String, f64, usize)]) -> Result<()> {
    let n = rows.len().max(1);
    let max = rows.iter().map(|r| r.1).fold(1e-9f64, f64::max) * 1.5;
    let floor = rows
        .iter()
        .map(|r| r.1)
        .filter(|v| *v > 0.0)
        .fold(max, f64::min)
        / 2.0;
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let y_fmt = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(330)
        .build_cartesian_2d((floor..max).log_scale(), (0..n).into_segmented())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_labels(n)
        .y_label_formatter(&y_fmt)
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let mut bar = Rectangle::new(
                [
                    (floor, SegmentValue::Exact(i)),
                    (r.1.max(floor), SegmentValue::Exact(i + 1)),
                ],
                COLOURS[r.2 % COLOURS.len()].filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

pub fn draw(r: &CapacityReport, path: &Path) -> Result<()> {
    ensure_font()?;
    let root = BitMapBackend::new(path, (1600, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(800);

    // Rows are drawn bottom-up: reverse so the first lane reads at the top.
    let mut rate_rows = Vec::new();
    for (li, l) in r.capacity.lanes.iter().enumerate() {
        for s in &l.stages {
            let colour = if s.stage == l.bound { 3 } else { li };
            rate_rows.push((
                format!("{}: {}", l.lane, s.stage),
                s.emails_per_second * 3600.0,
                colour,
            ));
        }
    }
    rate_rows.push((
        format!("all lanes: bound {}", r.capacity.bound),
        r.capacity.emails_per_hour(),
        3,
    ));
    rate_rows.reverse();
    bars(
        &left,
        "Emails/hour each stage sustains (red: the bound)",
        "emails/hour (log scale)",
        &rate_rows,
    )?;

    let (volume, _) = r.cost.at_volume;
    let mut cost_rows: Vec<(String, f64, usize)> = r
        .cost
        .per_email
        .iter()
        .map(|i| (i.name.clone(), i.usd, 0))
        .chain(r.cost.fixed.iter().map(|i| {
            (
                format!("{} (fixed)", i.name),
                i.usd / (volume / 1e6).max(1e-12),
                1,
            )
        }))
        .collect();
    cost_rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    bars(
        &right,
        &format!(
            "USD per million emails at {:.0} million a month ({} prices, {})",
            volume / 1e6,
            r.cost.region,
            r.cost.date
        ),
        "USD per million emails, log scale (orange: fixed monthly, amortised)",
        &cost_rows,
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

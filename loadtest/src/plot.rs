//! SVG plots of a run: latency percentiles of cattail and its baselines, and server memory
//! against connected agents during the connect storm.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;
use crate::stats::Summary;

fn points(s: &Summary) -> Vec<(f64, f64)> {
    [
        (50.0, s.p50),
        (90.0, s.p90),
        (99.0, s.p99),
        (99.9, s.p999),
        (100.0, s.max),
    ]
    .iter()
    .map(|(q, v)| (*q, *v as f64 / 1_000.0))
    .collect()
}

/// Latency (ms) at p50, p90, p99, p99.9 and max, one line per series.
pub fn latency(path: &Path, report: &Report) -> anyhow::Result<()> {
    let series = [
        ("cattail fan-out", &report.fanout_us, RED),
        ("cattail end-to-end", &report.e2e_us, MAGENTA),
        ("TCP baseline", &report.tcp_latency_us, BLUE),
        ("direct end-to-end", &report.direct_e2e_us, GREEN),
    ];
    let top = series
        .iter()
        .map(|(_, s, _)| s.max as f64 / 1_000.0)
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency percentiles (ms)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(50f64..100f64, 0f64..top)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (name, summary, color) in series {
        chart
            .draw_series(LineSeries::new(points(summary), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Server RSS (MiB) against agents synced.
pub fn memory(path: &Path, report: &Report) -> anyhow::Result<()> {
    let mut pts: Vec<(f64, f64)> = vec![(0.0, report.server_rss_idle as f64 / 1_048_576.0)];
    pts.extend(
        report
            .memory_curve
            .iter()
            .map(|(a, b)| (f64::from(*a), *b as f64 / 1_048_576.0)),
    );
    let max_x = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("cattail server RSS vs agents synced", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("agents synced")
        .y_desc("MiB")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(pts.iter().map(|p| Circle::new(*p, 3, RED.filled())))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

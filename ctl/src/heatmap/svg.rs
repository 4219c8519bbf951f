//! The heatmap as a standalone SVG picture: the same grid and colour ramp as the terminal, one
//! rectangle per (layer, expert) with a tooltip, layer and expert labels, a legend and the
//! expert cache hit rate.

use std::fmt::Write;

use moed_dbus::ExpertStatistics;

use super::{EMPTY_RGB, Grid, cache_line, ramp};

const LEFT: usize = 70;
const TOP: usize = 64;
const RIGHT: usize = 190;
const BOTTOM: usize = 70;

pub fn render(stats: &ExpertStatistics) -> String {
    let grid = Grid::new(stats);
    let experts = grid.experts.max(1);
    let cell_w = if experts <= 32 {
        18
    } else {
        (1152 / experts).clamp(3, 18)
    };
    let cell_h = 18;
    let rows = grid.layers.len().max(1);
    let legend = format!(
        "{} tokens: the busiest cell (one expert in one layer)",
        grid.max
    );
    let title = format!(
        "Expert activation of {} ({} requests)",
        if stats.model.is_empty() {
            "?"
        } else {
            stats.model.as_str()
        },
        stats.requests
    );
    // Text widths are estimated (about 0.6 em per character) so that nothing is cut off.
    let text_width = |chars: usize, size: f64| (chars as f64 * size * 0.6).ceil() as usize;
    let width = (LEFT + experts * cell_w + RIGHT)
        .max(LEFT + 246 + text_width(legend.chars().count(), 12.0) + 10)
        .max(LEFT + text_width(title.chars().count(), 16.0) + 10);
    let height = TOP + rows * cell_h + BOTTOM;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"##
    );
    let _ = writeln!(
        svg,
        r##"<rect width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{}</text>"##,
        escape(&title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="40" fill="#444444">{}</text>"##,
        escape(&cache_line(stats))
    );

    // Expert indices along the top.
    let step = match experts {
        0..=16 => 1,
        17..=64 => 4,
        65..=160 => 10,
        _ => 16,
    };
    for expert in (0..grid.experts).step_by(step) {
        let x = LEFT + expert * cell_w + cell_w / 2;
        let _ = writeln!(
            svg,
            r##"<text x="{x}" y="{}" text-anchor="middle" font-size="10" fill="#444444">{expert}</text>"##,
            TOP - 6
        );
    }

    for (row, counts) in grid.counts.iter().enumerate() {
        let y = TOP + row * cell_h;
        let layer = grid.layers[row];
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end">layer {layer}</text>"##,
            LEFT - 8,
            y + cell_h - 5
        );
        let summary = grid.row_summary(row);
        for (expert, &count) in counts.iter().enumerate() {
            let rgb = if count == 0 {
                EMPTY_RGB
            } else {
                ramp(grid.intensity(count))
            };
            let share = if summary.total == 0 {
                0.0
            } else {
                count as f64 * 100.0 / summary.total as f64
            };
            let _ = writeln!(
                svg,
                r##"<rect x="{}" y="{y}" width="{cell_w}" height="{cell_h}" fill="{}" stroke="#ffffff" stroke-width="0.5"><title>layer {layer}, expert {expert}: {count} tokens ({share:.1}% of the layer)</title></rect>"##,
                LEFT + expert * cell_w,
                hex(rgb)
            );
        }
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" font-size="11" fill="#444444">top e{} {:.1}%, imbalance {:.2}x</text>"##,
            LEFT + experts * cell_w + 8,
            y + cell_h - 5,
            summary.top,
            summary.top_share * 100.0,
            summary.imbalance
        );
    }

    // Legend: the ramp from the rarest to the busiest cell, and the colour of an empty cell.
    let legend_y = TOP + rows * cell_h + 22;
    let _ = writeln!(
        svg,
        r##"<defs><linearGradient id="ramp" x1="0" x2="1" y1="0" y2="0">{}</linearGradient></defs>"##,
        (0..=10)
            .map(|i| {
                let t = f64::from(i) / 10.0;
                format!(r##"<stop offset="{t:.1}" stop-color="{}"/>"##, hex(ramp(t)))
            })
            .collect::<String>()
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{legend_y}" width="14" height="12" fill="{}"/><text x="{}" y="{}">0</text>"##,
        hex(EMPTY_RGB),
        LEFT + 18,
        legend_y + 10
    );
    let bar_x = LEFT + 40;
    let _ = writeln!(
        svg,
        r##"<rect x="{bar_x}" y="{legend_y}" width="200" height="12" fill="url(#ramp)"/><text x="{}" y="{}">{}</text>"##,
        bar_x + 206,
        legend_y + 10,
        escape(&legend)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{}" font-size="11" fill="#444444">layers down, experts across; counts accumulated over {} requests</text>"##,
        legend_y + 32,
        stats.requests
    );
    svg.push_str("</svg>\n");
    svg
}

fn hex(rgb: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2])
}

/// Escapes text for XML character data and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use moed_dbus::LayerActivations;

    #[test]
    fn one_rectangle_per_cell_with_escaped_names() {
        let stats = ExpertStatistics {
            model: "a<b&c".into(),
            layers: vec![
                LayerActivations {
                    layer: 1,
                    counts: vec![0, 5, 10],
                },
                LayerActivations {
                    layer: 2,
                    counts: vec![3, 3, 3],
                },
            ],
            cache_hits: 1,
            cache_misses: 1,
            cache_evictions: 0,
            requests: 1,
            ..ExpertStatistics::default()
        };
        let svg = render(&stats);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<title>layer ").count(), 6);
        assert!(svg.contains("a&lt;b&amp;c"));
        assert!(svg.contains("layer 1, expert 2: 10 tokens (66.7% of the layer)"));
        assert!(svg.contains(&format!("fill=\"{}\"", hex(ramp(1.0)))));
        assert!(svg.contains("50.0% hit rate"));
    }
}

//! The expert-activation heatmap: layers down, experts across, each cell coloured by how many
//! tokens that layer routed to that expert relative to the busiest cell. The terminal and the
//! SVG picture ([`svg`]) are drawn from the same [`Grid`] and colour ramp.

pub mod svg;

use moed_dbus::ExpertStatistics;

use crate::style::Style;

/// The share of expert lookups the cache served; `None` before any lookup.
pub fn hit_rate(stats: &ExpertStatistics) -> Option<f64> {
    let total = stats.cache_hits + stats.cache_misses;
    (total > 0).then(|| stats.cache_hits as f64 / total as f64)
}

/// Activation counts, one row per MoE layer (in layer order), one column per expert.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub layers: Vec<u32>,
    pub experts: usize,
    /// `counts[row][expert]`; rows shorter than `experts` are padded with zeros.
    pub counts: Vec<Vec<u64>>,
    /// The largest count of any cell (0 when nothing was routed).
    pub max: u64,
}

impl Grid {
    pub fn new(stats: &ExpertStatistics) -> Grid {
        let mut layers: Vec<_> = stats.layers.iter().collect();
        layers.sort_by_key(|l| l.layer);
        let experts = layers.iter().map(|l| l.counts.len()).max().unwrap_or(0);
        let counts: Vec<Vec<u64>> = layers
            .iter()
            .map(|l| {
                let mut row = l.counts.clone();
                row.resize(experts, 0);
                row
            })
            .collect();
        let max = counts.iter().flatten().copied().max().unwrap_or(0);
        Grid {
            layers: layers.iter().map(|l| l.layer).collect(),
            experts,
            counts,
            max,
        }
    }

    /// A cell's count relative to the busiest cell, in [0, 1].
    pub fn intensity(&self, count: u64) -> f64 {
        if self.max == 0 {
            0.0
        } else {
            count as f64 / self.max as f64
        }
    }

    /// Tokens routed in a row, its busiest expert, and max/mean (1.0 = perfectly balanced).
    pub fn row_summary(&self, row: usize) -> RowSummary {
        let counts = &self.counts[row];
        let total: u64 = counts.iter().sum();
        let (top, top_count) = counts
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .map(|(i, c)| (i, *c))
            .unwrap_or((0, 0));
        let mean = if counts.is_empty() {
            0.0
        } else {
            total as f64 / counts.len() as f64
        };
        RowSummary {
            total,
            top,
            top_share: if total == 0 {
                0.0
            } else {
                top_count as f64 / total as f64
            },
            imbalance: if mean > 0.0 {
                top_count as f64 / mean
            } else {
                0.0
            },
        }
    }
}

pub struct RowSummary {
    pub total: u64,
    pub top: usize,
    pub top_share: f64,
    pub imbalance: f64,
}

/// The colour ramp (viridis' key colours), dark for rare to bright for busy.
const RAMP: [(f64, [u8; 3]); 5] = [
    (0.0, [68, 1, 84]),
    (0.25, [59, 82, 139]),
    (0.5, [33, 145, 140]),
    (0.75, [94, 201, 98]),
    (1.0, [253, 231, 37]),
];

/// The colour of an empty cell (no token was routed there).
pub const EMPTY_RGB: [u8; 3] = [40, 40, 40];

/// The ramp's colour at `t` in [0, 1].
pub fn ramp(t: f64) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    for pair in RAMP.windows(2) {
        let ((t0, c0), (t1, c1)) = (pair[0], pair[1]);
        if t <= t1 {
            let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 0.0 };
            let mix =
                |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f).round() as u8;
            return [mix(c0[0], c1[0]), mix(c0[1], c1[1]), mix(c0[2], c1[2])];
        }
    }
    RAMP[RAMP.len() - 1].1
}

/// The nearest colour of the xterm 256-colour cube.
pub fn xterm256(rgb: [u8; 3]) -> u8 {
    const LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    let nearest = |v: u8| {
        LEVELS
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| (i16::from(**l) - i16::from(v)).abs())
            .map(|(i, _)| i as u8)
            .unwrap_or(0)
    };
    16 + 36 * nearest(rgb[0]) + 6 * nearest(rgb[1]) + nearest(rgb[2])
}

/// Shade characters for terminals without colour: empty, then quarters of the busiest cell.
const SHADES: [char; 5] = ['·', '░', '▒', '▓', '█'];

fn shade(intensity: f64, count: u64) -> char {
    if count == 0 {
        return SHADES[0];
    }
    SHADES[((intensity * 4.0).ceil() as usize).clamp(1, 4)]
}

/// The heatmap for a terminal `width` columns wide: 256-colour backgrounds when `style` has
/// colour, shade characters otherwise. Experts that do not fit are merged into bins.
pub fn render_terminal(stats: &ExpertStatistics, style: Style, width: usize) -> String {
    let grid = Grid::new(stats);
    let mut lines = Vec::new();
    lines.push(style.bold(&format!(
        "Expert activation of {} ({} requests)",
        if stats.model.is_empty() {
            "?"
        } else {
            &stats.model
        },
        stats.requests
    )));
    if grid.experts == 0 || grid.max == 0 {
        lines.push("no tokens have been routed yet: run a request first".into());
        lines.push(cache_line(stats));
        lines.extend(load_line(stats));
        lines.extend(prefetch_line(stats));
        return lines.join("\n") + "\n";
    }
    let label_width = format!("layer {}", grid.layers.last().copied().unwrap_or(0)).len();
    let summary_width = 34;
    let room = width.saturating_sub(label_width + 2 + summary_width).max(8);
    let (bin, cell) = if grid.experts * 2 <= room {
        (1, 2)
    } else if grid.experts <= room {
        (1, 1)
    } else {
        (grid.experts.div_ceil(room), 1)
    };
    let columns = grid.experts.div_ceil(bin);
    // Binned cells compare against the busiest bin, so the colours stay comparable.
    let binned: Vec<Vec<u64>> = grid
        .counts
        .iter()
        .map(|row| row.chunks(bin).map(|c| c.iter().sum()).collect())
        .collect();
    let bin_max = binned.iter().flatten().copied().max().unwrap_or(0).max(1);

    lines.push(format!(
        "{:label_width$}  {}",
        "",
        ruler(columns, cell, bin, grid.experts)
    ));
    for (row, counts) in binned.iter().enumerate() {
        let mut cells = String::new();
        for &count in counts {
            let intensity = count as f64 / bin_max as f64;
            if style.colour {
                let rgb = if count == 0 {
                    EMPTY_RGB
                } else {
                    ramp(intensity)
                };
                cells.push_str(&style.background(xterm256(rgb), &" ".repeat(cell)));
            } else {
                cells.extend(std::iter::repeat_n(shade(intensity, count), cell));
            }
        }
        let summary = grid.row_summary(row);
        lines.push(format!(
            "{:>label_width$}  {cells}  {}",
            format!("layer {}", grid.layers[row]),
            style.dim(&format!(
                "top e{} {:4.1}%  imbalance {:.2}x",
                summary.top,
                summary.top_share * 100.0,
                summary.imbalance
            ))
        ));
    }
    let scale = if style.colour {
        let swatch = |t: f64| style.background(xterm256(ramp(t)), "  ");
        format!(
            "scale: {} 0  {}{}{}{} up to {bin_max} tokens (the busiest cell)",
            style.background(xterm256(EMPTY_RGB), "  "),
            swatch(0.05),
            swatch(0.5),
            swatch(0.75),
            swatch(1.0),
        )
    } else {
        format!("scale: · 0  ░ <=25%  ▒ <=50%  ▓ <=75%  █ <=100% of {bin_max} tokens")
    };
    lines.push(scale);
    if bin > 1 {
        lines.push(format!("each column sums {bin} experts"));
    }
    lines.push(cache_line(stats));
    lines.extend(load_line(stats));
    lines.extend(prefetch_line(stats));
    lines.join("\n") + "\n"
}

/// Expert indices above the columns, every few columns as space allows.
fn ruler(columns: usize, cell: usize, bin: usize, experts: usize) -> String {
    let width = columns * cell;
    let mut ruler = vec![' '; width + 8];
    let step_columns = if cell == 2 { 5 } else { 10 };
    let mut column = 0;
    while column < columns {
        let label = (column * bin).min(experts.saturating_sub(1)).to_string();
        let at = column * cell;
        for (i, ch) in label.chars().enumerate() {
            if let Some(slot) = ruler.get_mut(at + i) {
                *slot = ch;
            }
        }
        column += step_columns;
    }
    ruler.into_iter().collect::<String>().trim_end().to_string()
}

pub fn cache_line(stats: &ExpertStatistics) -> String {
    match hit_rate(stats) {
        Some(rate) => format!(
            "expert cache: {:.1}% hit rate ({} hits, {} misses, {} evictions)",
            rate * 100.0,
            stats.cache_hits,
            stats.cache_misses,
            stats.cache_evictions
        ),
        None => "expert cache: no lookups yet".into(),
    }
}

/// What the misses cost, once there were misses and tokens to put them over.
pub fn load_line(stats: &ExpertStatistics) -> Option<String> {
    load_figures(stats).map(|load| {
        format!(
            "per token: {:.2} MB of experts loaded, {:.2} MB read from storage; {:.1} ms a load",
            load.mb_per_token, load.storage_mb_per_token, load.ms_per_miss
        )
    })
}

/// How well predictive prefetch guessed, once it guessed anything.
pub fn prefetch_line(stats: &ExpertStatistics) -> Option<String> {
    if stats.prefetch_guessed == 0 {
        return None;
    }
    let right = stats.prefetch_guessed_right as f64;
    Some(format!(
        "prefetch: {:.1}% of {} guessed experts chosen, covering {:.1}% of the {} chosen",
        right * 100.0 / stats.prefetch_guessed as f64,
        stats.prefetch_guessed,
        right * 100.0 / stats.prefetch_chosen.max(1) as f64,
        stats.prefetch_chosen
    ))
}

/// What the expert cache's misses cost: expert bytes loaded and bytes read from storage per token
/// run, and the time of one load (creating the session); `None` before any token ran or any miss.
pub struct LoadFigures {
    pub mb_per_token: f64,
    pub storage_mb_per_token: f64,
    pub ms_per_miss: f64,
}

pub fn load_figures(stats: &ExpertStatistics) -> Option<LoadFigures> {
    if stats.tokens == 0 || stats.cache_misses == 0 {
        return None;
    }
    let tokens = stats.tokens as f64;
    Some(LoadFigures {
        mb_per_token: stats.expert_load_bytes as f64 / 1e6 / tokens,
        storage_mb_per_token: stats.storage_read_bytes as f64 / 1e6 / tokens,
        ms_per_miss: stats.expert_load_nanos as f64 / 1e6 / stats.cache_misses as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moed_dbus::LayerActivations;

    fn stats(layers: Vec<(u32, Vec<u64>)>) -> ExpertStatistics {
        ExpertStatistics {
            model: "m".into(),
            layers: layers
                .into_iter()
                .map(|(layer, counts)| LayerActivations { layer, counts })
                .collect(),
            cache_hits: 3,
            cache_misses: 1,
            cache_evictions: 0,
            requests: 2,
            tokens: 4,
            expert_load_bytes: 3 << 20,
            expert_load_nanos: 6_000_000,
            storage_read_bytes: 1 << 20,
            prefetch_guessed: 8,
            prefetch_guessed_right: 6,
            prefetch_chosen: 10,
        }
    }

    #[test]
    fn grid_sorts_layers_pads_rows_and_finds_the_busiest_cell() {
        let grid = Grid::new(&stats(vec![(3, vec![1, 9]), (1, vec![4, 0, 2])]));
        assert_eq!(grid.layers, vec![1, 3]);
        assert_eq!(grid.counts, vec![vec![4, 0, 2], vec![1, 9, 0]]);
        assert_eq!(grid.max, 9);
        let row = grid.row_summary(1);
        assert_eq!((row.total, row.top), (10, 1));
        assert!((row.imbalance - 2.7).abs() < 1e-9);
    }

    #[test]
    fn shades_without_colour_and_backgrounds_with_it() {
        let s = stats(vec![(0, vec![0, 1, 4]), (1, vec![2, 3, 4])]);
        let plain = render_terminal(&s, Style { colour: false }, 80);
        assert!(plain.contains("layer 0  ··░░██"), "{plain}");
        assert!(!plain.contains('\x1b'));
        assert!(plain.contains("75.0% hit rate"));
        // 3 MiB over 4 tokens, 1 MiB of it from storage, 6 ms for the one miss.
        assert!(
            plain.contains(
                "per token: 0.79 MB of experts loaded, 0.26 MB read from storage; 6.0 ms a load"
            ),
            "{plain}"
        );
        let cold = ExpertStatistics {
            tokens: 0,
            ..s.clone()
        };
        assert_eq!(load_line(&cold), None);
        assert_eq!(
            prefetch_line(&s).as_deref(),
            Some("prefetch: 75.0% of 8 guessed experts chosen, covering 60.0% of the 10 chosen")
        );
        let unguessed = ExpertStatistics {
            prefetch_guessed: 0,
            ..s.clone()
        };
        assert_eq!(prefetch_line(&unguessed), None);
        let coloured = render_terminal(&s, Style { colour: true }, 80);
        assert!(coloured.contains("\x1b[48;5;"), "{coloured}");
    }

    #[test]
    fn too_many_experts_are_binned() {
        let s = stats(vec![(0, (0..200).collect())]);
        let text = render_terminal(&s, Style { colour: false }, 80);
        assert!(text.contains("each column sums"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    }

    #[test]
    fn ramp_ends_and_cube_colours() {
        assert_eq!(ramp(0.0), [68, 1, 84]);
        assert_eq!(ramp(1.0), [253, 231, 37]);
        assert_eq!(xterm256([0, 0, 0]), 16);
        assert_eq!(xterm256([255, 255, 255]), 231);
    }
}

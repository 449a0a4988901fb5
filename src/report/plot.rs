//! SVG plots: latency percentile curves and load ramps.
//!
//! Drawn with `plotters`' SVG backend built without its font features: the
//! backend writes `<text>` elements that the viewer renders with its own
//! fonts, and plotters only estimates text widths for layout, so no system
//! font library is needed to build or run this.
//!
//! - [`latency_svg`]: one curve per histogram, HdrHistogram-plotter style:
//!   the x axis is the percentile on a log scale of `1/(1-p)` (0 %, 90 %,
//!   99 %, 99.9 %, …), the y axis the value in the caller's unit.
//! - [`ramp_svg`]: answered rate and loss against offered rate, one line per
//!   server, from a load ramp.

use super::hgrm::hgrm_rows;
use super::{NamedHist, fmt_rate};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::ops::Range;

/// Size of the latency plot, in pixels.
const LATENCY_SIZE: (u32, u32) = (960, 600);
/// Size of the ramp plot (two panels side by side), in pixels.
const RAMP_SIZE: (u32, u32) = (1280, 520);
/// Most decades of `1/(1-p)` shown (99.9999999 %).
const MAX_DECADES: f64 = 9.0;
/// Radius of point markers, in pixels.
const MARKER_SIZE: u32 = 3;
/// Font of axis labels and descriptions.
const LABEL_FONT: (&str, u32) = ("sans-serif", 14);
/// The faint grid between labelled ticks.
const LIGHT_LINE: RGBAColor = RGBAColor(0, 0, 0, 0.03);
/// Line colours, one per series, cycled (Tableau 10).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// An argument or data point that cannot be plotted (NaN, infinite, ≤ 0 ratio).
    #[error("cannot plot: {0}")]
    Input(String),
    /// The drawing library failed.
    #[error("drawing failed: {0}")]
    Draw(String),
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// One measured step of a load ramp.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct RampPoint {
    /// Requests sent per second.
    pub offered: f64,
    /// Replies received per second.
    pub answered: f64,
    /// Fraction of requests unanswered, 0..=1.
    pub loss: f64,
}

/// A chart on an SVG string with `X` on the x axis and a linear y axis.
type Chart<'a, 'b, X = RangedCoordf64> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, RangedCoordf64>>;

/// Percentile curves of `series`, values divided by `unit_ratio` and shown
/// in `unit_label` (e.g. 1e3 and "us"). Empty histograms draw no line but
/// keep a legend entry marked "(no data)".
pub fn latency_svg(
    title: &str,
    unit_label: &str,
    unit_ratio: f64,
    series: &[NamedHist],
) -> Result<String, PlotError> {
    if !(unit_ratio.is_finite() && unit_ratio > 0.0) {
        return Err(PlotError::Input(format!("unit ratio {unit_ratio}")));
    }
    let curves: Vec<Vec<(f64, f64)>> = series.iter().map(|h| curve(h, unit_ratio)).collect();
    let points = || curves.iter().flatten();
    // At least 0 %..99 %; as far as the data goes, up to MAX_DECADES.
    let decades = points()
        .map(|p| p.0)
        .fold(2.0, f64::max)
        .ceil()
        .min(MAX_DECADES);
    let y = padded_range(points().map(|p| p.1));
    render(LATENCY_SIZE, |root| {
        let mut chart = latency_chart(root, title, unit_label, decades, y)?;
        for (i, (h, pts)) in series.iter().zip(&curves).enumerate() {
            let clipped = pts.iter().copied().filter(|p| p.0 <= decades);
            // A lone point (one distinct value) needs a marker to be seen.
            let marker = if pts.len() == 1 { MARKER_SIZE } else { 0 };
            add_line(&mut chart, &legend_name(h), style(i), clipped, marker)?;
        }
        if !series.is_empty() {
            draw_legend(&mut chart)?;
        }
        Ok(())
    })
}

/// The empty chart with its axes: `decades` of percentiles by `y` values.
fn latency_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    unit_label: &str,
    decades: f64,
    (y0, y1): (f64, f64),
) -> Result<Chart<'a, 'b, DecadeAxis>, PlotError> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .margin_right(40)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(DecadeAxis(decades), y0..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc(unit_label)
        .label_style(LABEL_FONT)
        .axis_desc_style(LABEL_FONT)
        .light_line_style(LIGHT_LINE)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&axis_formatter(y1 - y0))
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

fn legend_name(h: &NamedHist) -> String {
    if h.hist.is_empty() {
        format!("{} (no data)", h.name)
    } else {
        h.name.to_string()
    }
}

/// The curve's points: `(log10(1/(1-p)), value)` for every percentile row but 100 %.
fn curve(h: &NamedHist, unit_ratio: f64) -> Vec<(f64, f64)> {
    hgrm_rows(h, unit_ratio)
        .iter()
        .filter_map(|r| r.inverted.map(|inv| (inv.log10(), r.value)))
        .collect()
}

/// The x axis of [`latency_svg`]: `log10(1/(1-p))` from 0 to the given number
/// of decades, linear in that, with a tick on every whole decade.
struct DecadeAxis(f64);

impl Ranged for DecadeAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(0.0..self.0).map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, _: H) -> Vec<f64> {
        (0..=self.0 as u32).map(f64::from).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0
    }
}

/// "0%", "90%", "99%", "99.9%", … for whole decades; nothing in between.
pub fn percentile_label(decades: f64) -> String {
    let k = decades.round();
    if (decades - k).abs() > 1e-9 || k < 0.0 {
        return String::new();
    }
    let decimals = (k as usize).saturating_sub(2);
    format!("{:.*}%", decimals, 100.0 - 100.0 / 10f64.powf(k))
}

/// Answered rate and loss against offered rate, one line with markers per
/// `(name, points)` series, as two panels side by side.
pub fn ramp_svg(title: &str, series: &[(&str, &[RampPoint])]) -> Result<String, PlotError> {
    check_ramp(series)?;
    let all = || series.iter().flat_map(|s| s.1.iter());
    let x_max = nice_max(all().map(|p| p.offered));
    let y_max = nice_max(all().map(|p| p.answered.max(p.offered)));
    let loss_max = nice_max(all().map(|p| p.loss * 100.0).chain([1.0]));
    render(RAMP_SIZE, |root| {
        let root = root.titled(title, ("sans-serif", 22)).map_err(draw_err)?;
        let (left, right) = root.split_horizontally(RAMP_SIZE.0 / 2);
        let rate_axes = ("answered vs offered", "answered /s", x_max, y_max);
        let mut rate = ramp_panel(&left, rate_axes, fmt_rate_label)?;
        let grey: ShapeStyle = BLACK.mix(0.3).into();
        add_line(
            &mut rate,
            "answered = offered",
            grey,
            [(0.0, 0.0), (x_max, x_max)],
            0,
        )?;
        let loss_axes = ("loss vs offered", "loss %", x_max, loss_max);
        let mut loss = ramp_panel(&right, loss_axes, fmt_percent)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let answered = pts.iter().map(|p| (p.offered, p.answered));
            add_line(&mut rate, name, style(i), answered, MARKER_SIZE)?;
            let lost = pts.iter().map(|p| (p.offered, p.loss * 100.0));
            add_line(&mut loss, name, style(i), lost, MARKER_SIZE)?;
        }
        if !series.is_empty() {
            draw_legend(&mut rate)?;
            draw_legend(&mut loss)?;
        }
        Ok(())
    })
}

/// Draws on a white SVG canvas of `size` pixels and returns the SVG text.
fn render(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), PlotError>,
) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn check_ramp(series: &[(&str, &[RampPoint])]) -> Result<(), PlotError> {
    for (name, pts) in series {
        let bad = pts.iter().find(|p| {
            ![p.offered, p.answered, p.loss]
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0)
        });
        if let Some(p) = bad {
            return Err(PlotError::Input(format!("{name}: point {p:?}")));
        }
    }
    Ok(())
}

/// One ramp panel, `(caption, y description, x max, y max)`, rate on the x axis.
fn ramp_panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    (caption, y_desc, x_max, y_max): (&str, &str, f64, f64),
    y_fmt: fn(&f64) -> String,
) -> Result<Chart<'a, 'b>, PlotError> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("offered /s")
        .y_desc(y_desc)
        .label_style(LABEL_FONT)
        .axis_desc_style(LABEL_FONT)
        .light_line_style(LIGHT_LINE)
        .x_label_formatter(&fmt_rate_label)
        .y_label_formatter(&y_fmt)
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

/// Draws a line through `points` (with round markers of `marker` pixels
/// if not 0) and gives it a legend entry `name`.
fn add_line<'a, 'b: 'a, X: Ranged<ValueType = f64>>(
    chart: &mut Chart<'a, 'b, X>,
    name: &str,
    style: ShapeStyle,
    points: impl IntoIterator<Item = (f64, f64)>,
    marker: u32,
) -> Result<(), PlotError> {
    chart
        .draw_series(LineSeries::new(points, style).point_size(marker))
        .map_err(draw_err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    Ok(())
}

fn draw_legend<'a, 'b: 'a, X: Ranged<ValueType = f64>>(
    chart: &mut Chart<'a, 'b, X>,
) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw_err)
}

fn style(i: usize) -> ShapeStyle {
    PALETTE[i % PALETTE.len()].filled().stroke_width(2)
}

/// The values' range, padded 5 % and always including 0 and a non-empty span.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.05).max(f64::EPSILON);
    let lo = if lo < 0.0 { lo - pad } else { 0.0 };
    let hi = if hi > lo + pad { hi + pad } else { lo + 1.0 };
    (lo, hi)
}

/// 5 % above the largest value, or 1 when there is none above 0.
fn nice_max(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.fold(0.0, f64::max);
    if max > 0.0 { max * 1.05 } else { 1.0 }
}

/// Axis labels with as many decimals as a span of `span` needs.
fn axis_formatter(span: f64) -> impl Fn(&f64) -> String {
    let decimals = (1.0 - span.log10().floor()).clamp(0.0, 6.0) as usize;
    move |v| format!("{v:.decimals$}")
}

fn fmt_percent(v: &f64) -> String {
    format!("{}%", trim_point_zero(format!("{v:.1}")))
}

/// [`fmt_rate`] in the shape plotters' label formatters take.
fn fmt_rate_label(v: &f64) -> String {
    fmt_rate(*v)
}

fn trim_point_zero(s: String) -> String {
    match s.strip_suffix(".0") {
        Some(t) if t != "-0" => t.to_string(),
        Some(_) => "0".to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::new_histogram;
    use hdrhistogram::Histogram;

    /// Every element opened is closed, in order; returns the element names seen.
    fn xml_elements(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        for tag in svg.split('<').skip(1) {
            let tag = &tag[..tag.find('>').expect("unclosed '<'")];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
            } else if !tag.starts_with('?') && !tag.starts_with('!') {
                let name = tag.split_whitespace().next().unwrap().trim_end_matches('/');
                seen.push(name.to_string());
                if !tag.ends_with('/') {
                    stack.push(name.to_string());
                }
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        seen
    }

    /// The text of every `<text>` element, trimmed.
    fn texts(svg: &str) -> Vec<&str> {
        let after_open = svg
            .split("<text")
            .skip(1)
            .map(|t| &t[t.find('>').unwrap() + 1..]);
        after_open
            .map(|t| t[..t.find("</text>").unwrap()].trim())
            .collect()
    }

    /// Polylines drawn in series colour `i`.
    fn lines_in_colour(svg: &str, i: usize) -> usize {
        let RGBColor(r, g, b) = PALETTE[i];
        let stroke = format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"");
        svg.split("<polyline")
            .skip(1)
            .filter(|p| p[..p.find('>').unwrap()].contains(&stroke))
            .count()
    }

    fn latencies(scale: u64) -> Histogram<u64> {
        let mut h = new_histogram();
        for us in 1..=1000 {
            h.record(us * scale).unwrap();
        }
        h
    }

    #[test]
    fn latency_plot_has_a_line_per_series() {
        let (a, b, empty) = (latencies(1000), latencies(3000), new_histogram());
        let series = [
            NamedHist {
                name: "ntpx xdp",
                hist: &a,
                bias_ns: 0,
            },
            NamedHist {
                name: "chrony <&>",
                hist: &b,
                bias_ns: 0,
            },
            NamedHist {
                name: "nothing yet",
                hist: &empty,
                bias_ns: 0,
            },
        ];
        let svg = latency_svg("RX->TX latency", "latency (us)", 1e3, &series).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        let elements = xml_elements(&svg);
        assert_eq!(elements[0], "svg");
        for name in [
            "ntpx xdp",
            "chrony &lt;&amp;&gt;",
            "nothing yet",
            "RX-&gt;TX latency",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        // The curve and the legend sample for each non-empty series; only the legend for the empty one.
        assert_eq!(lines_in_colour(&svg, 0), 2);
        assert_eq!(lines_in_colour(&svg, 1), 2);
        assert_eq!(lines_in_colour(&svg, 2), 1);
        let texts = texts(&svg);
        for label in ["0%", "90%", "99%", "99.9%", "latency (us)", "percentile"] {
            assert!(texts.contains(&label), "{label} missing from {texts:?}");
        }
    }

    #[test]
    fn latency_plot_takes_negative_values_and_no_series() {
        let bias = 1_000_000u64;
        let mut h = new_histogram();
        for us in -200i64..200 {
            h.record((us * 1000 + bias as i64) as u64).unwrap();
        }
        let offset = [NamedHist {
            name: "offset",
            hist: &h,
            bias_ns: bias,
        }];
        let svg = latency_svg("offset", "us", 1e3, &offset).unwrap();
        let texts = texts(&svg);
        assert!(
            texts.iter().any(|t| t.starts_with("-1")),
            "no negative y tick: {texts:?}"
        );
        assert_eq!(lines_in_colour(&svg, 0), 2);
        xml_elements(&latency_svg("nothing", "us", 1e3, &[]).unwrap());
        assert!(matches!(
            latency_svg("x", "us", 0.0, &offset),
            Err(PlotError::Input(_))
        ));
    }

    #[test]
    fn a_single_value_gets_a_marker() {
        let mut h = new_histogram();
        h.record(42_000).unwrap();
        let one = [NamedHist {
            name: "one",
            hist: &h,
            bias_ns: 0,
        }];
        let svg = latency_svg("one value", "us", 1e3, &one).unwrap();
        assert_eq!(
            xml_elements(&svg).iter().filter(|e| *e == "circle").count(),
            1
        );
    }

    #[test]
    fn percentile_labels() {
        let got: Vec<String> = [0.0, 1.0, 2.0, 3.0, 5.0, 6.0, 2.5]
            .map(percentile_label)
            .into();
        assert_eq!(
            got,
            ["0%", "90%", "99%", "99.9%", "99.999%", "99.9999%", ""]
        );
    }

    #[test]
    fn rates() {
        let got: Vec<String> = [0.0, 950.0, 10_000.0, 1_500_000.0, 2.5e9]
            .iter()
            .map(fmt_rate_label)
            .collect();
        assert_eq!(got, ["0", "950", "10k", "1.5M", "2.5G"]);
        assert_eq!(fmt_percent(&12.0), "12%");
        assert_eq!(fmt_percent(&0.25), "0.2%");
    }

    fn ramp(peak: f64) -> Vec<RampPoint> {
        (1..=8)
            .map(|i| {
                let offered = f64::from(i) * 250_000.0;
                let answered = offered.min(peak);
                RampPoint {
                    offered,
                    answered,
                    loss: 1.0 - answered / offered,
                }
            })
            .collect()
    }

    #[test]
    fn ramp_plot_has_both_panels_per_series() {
        let (xdp, sock, chrony) = (ramp(5e6), ramp(1.2e6), ramp(3e5));
        let series = [
            ("ntpx xdp", &xdp[..]),
            ("ntpx socket", &sock[..]),
            ("chronyd", &chrony[..]),
        ];
        let svg = ramp_svg("load ramp", &series).unwrap();
        assert!(svg.starts_with("<svg"));
        let elements = xml_elements(&svg);
        for name in [
            "ntpx xdp",
            "ntpx socket",
            "chronyd",
            "load ramp",
            "answered = offered",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        for i in 0..3 {
            // A line and a legend sample in each of the two panels.
            assert_eq!(lines_in_colour(&svg, i), 4, "series {i}");
        }
        assert_eq!(
            elements.iter().filter(|e| *e == "circle").count(),
            3 * 8 * 2
        );
        let texts = texts(&svg);
        for label in ["1M", "200k", "1.2M", "offered /s", "loss %", "answered /s"] {
            assert!(texts.contains(&label), "{label} missing from {texts:?}");
        }
    }

    #[test]
    fn ramp_plot_with_little_or_bad_data() {
        let one = [RampPoint {
            offered: 1000.0,
            answered: 990.0,
            loss: 0.01,
        }];
        for series in [vec![], vec![("empty", &[][..])], vec![("one", &one[..])]] {
            let svg = ramp_svg("r", &series).unwrap();
            xml_elements(&svg);
        }
        let nan = [RampPoint {
            offered: f64::NAN,
            answered: 1.0,
            loss: 0.0,
        }];
        assert!(matches!(
            ramp_svg("r", &[("nan", &nan[..])]),
            Err(PlotError::Input(_))
        ));
    }
}

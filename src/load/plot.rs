//! `ntpx plot`: one ramp plot (answered rate and loss against offered
//! rate) of several `ntpx load` runs, from their JSON summaries: how
//! `scripts/bench` puts ntpx and chronyd side by side.

use super::report::Summary;
use crate::report::plot::{RampPoint, ramp_svg};
use anyhow::{Context, bail};
use std::path::PathBuf;

/// `ntpx plot` arguments.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// Runs as LABEL=FILE, FILE being the JSON summary of `ntpx load --json`
    /// (or its summary.json).
    #[arg(required = true, value_name = "LABEL=FILE")]
    pub runs: Vec<String>,
    /// The SVG file to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Plot title.
    #[arg(long, default_value = "NTP server under a rate ramp")]
    pub title: String,
}

/// The ramp points of a run: one per step that ran.
pub fn points(s: &Summary) -> Vec<RampPoint> {
    s.steps
        .iter()
        .filter(|st| st.seconds > 0.0)
        .map(|st| RampPoint {
            offered: st.sent_rate,
            answered: st.good_rate,
            loss: st.loss,
        })
        .collect()
}

/// Runs `ntpx plot`.
pub fn main(args: &PlotArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for r in &args.runs {
        let Some((label, file)) = r.split_once('=') else {
            bail!("expected LABEL=FILE, got {r:?}");
        };
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        let summary: Summary = serde_json::from_str(&text)
            .with_context(|| format!("{file} is not an `ntpx load --json` summary"))?;
        runs.push((label.to_owned(), points(&summary)));
    }
    let series: Vec<(&str, &[RampPoint])> = runs
        .iter()
        .map(|(l, p)| (l.as_str(), p.as_slice()))
        .collect();
    let svg = ramp_svg(&args.title, &series)?;
    std::fs::write(&args.out, svg).with_context(|| format!("writing {}", args.out.display()))
}

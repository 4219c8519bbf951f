//! `moectl score`: the log-probability of each token of a text (`Engine.Score`), with the total,
//! mean and perplexity.

use moed_dbus::{ScoreOptions, ScoredToken};

use crate::bus::App;
use crate::cli::ScoreArgs;
use crate::error::CtlError;
use crate::style::{out_json_pretty, outln};

pub async fn run(app: &App, args: ScoreArgs) -> Result<(), CtlError> {
    let text = crate::text_or_stdin(&args.text, "text")?;
    let options = ScoreOptions {
        model: args.model.clone(),
        ..ScoreOptions::default()
    };
    let tokens = super::engine(app)
        .await?
        .score(&text, options.to_dict())
        .await
        .map_err(|e| app.fail(e, None))?;
    if app.json {
        return out_json_pretty(&crate::json::scored_tokens(&tokens, args.model.as_deref()));
    }
    let s = &app.out;
    let mut lines = vec![s.bold(&format!(
        "{:>5}  {:>7}  {:>10}  token",
        "#", "id", "logprob"
    ))];
    for (index, token) in tokens.iter().enumerate() {
        let logprob = if token.has_logprob {
            format!("{:>10.4}", token.logprob)
        } else {
            format!("{:>10}", "-")
        };
        lines.push(format!(
            "{index:>5}  {:>7}  {logprob}  {}",
            token.id,
            visible(&token.text)
        ));
    }
    let summary = Summary::of(&tokens);
    lines.push(match summary.mean() {
        Some(mean) => format!(
            "{} tokens, {} scored: total logprob {:.4}, mean {mean:.4}, perplexity {:.3}",
            tokens.len(),
            summary.count,
            summary.total,
            summary.perplexity().unwrap_or(f64::NAN)
        ),
        None => format!(
            "{} tokens: nothing to score (the first token has no context)",
            tokens.len()
        ),
    });
    outln(&lines.join("\n"))
}

/// Token text with whitespace and control characters made visible, quoted.
fn visible(text: &str) -> String {
    format!("{text:?}")
}

/// Totals over the tokens that have a logprob.
pub struct Summary {
    pub count: usize,
    pub total: f64,
}

impl Summary {
    pub fn of(tokens: &[ScoredToken]) -> Summary {
        let scored = tokens.iter().filter(|t| t.has_logprob);
        Summary {
            count: scored.clone().count(),
            total: scored.map(|t| t.logprob).sum(),
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.total / self.count as f64)
    }

    pub fn perplexity(&self) -> Option<f64> {
        self.mean().map(|mean| (-mean).exp())
    }
}

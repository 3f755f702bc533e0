//! `floodgate-local bench-budget`: how much of the SES account's rate the pipeline uses
//! with a backlog in every lane (the demo's mix: half of it one bulk lane), once with each
//! `send` instance pacing at an even share of the rate and once with the shared budget, in
//! the same run. The simulator enforces the account's rate as SES does, so the rate
//! throttles it counts are sends that passed the rate.

use crate::demo::DemoOptions;
use crate::report::SesUse;
use crate::topology::BudgetRule;
use anyhow::{Context, Result};

#[derive(Debug, Clone)]
pub struct BudgetBenchOptions {
    pub notifications: usize,
    pub ses_account_rate: f64,
}

pub async fn bench_budget(opts: &BudgetBenchOptions) -> Result<Vec<(BudgetRule, SesUse)>> {
    let mut results = Vec::new();
    for rule in [BudgetRule::Split, BudgetRule::Shared] {
        let r = super::checked_demo(
            &format!("{rule:?}"),
            DemoOptions {
                notifications: opts.notifications,
                ses_account_rate: opts.ses_account_rate,
                budget: rule,
                ..DemoOptions::default()
            },
        )
        .await?;
        let used = r
            .ses
            .with_context(|| format!("{rule:?}: less than a whole second of sending"))?;
        println!(
            "{:<7} sent {:>6.1}/s of {:.0}/s over {:>3} busy s  use {:.3}  peak second {:>5}  rate throttles {}",
            format!("{rule:?}").to_lowercase(),
            used.sent_per_s_busy,
            used.account_rate,
            used.busy_seconds,
            used.budget_use,
            used.peak_second,
            used.rate_throttled
        );
        println!("        sends per second: {:?}", used.per_second);
        results.push((rule, used));
    }
    if let [(_, split), (_, shared)] = results.as_slice() {
        println!(
            "budget_use_shared={:.3} budget_use_split={:.3} shared_vs_split={:.2} rate_throttles_shared={} rate_throttles_split={}",
            shared.budget_use,
            split.budget_use,
            shared.budget_use / split.budget_use.max(1e-9),
            shared.rate_throttled,
            split.rate_throttled
        );
    }
    Ok(results)
}

//! Benchmarks. Each prints ratios against a baseline measured in the same run.

pub mod budget;
pub mod cold;
pub mod cpu;
pub mod ingest;
pub mod limits;
pub mod persist;
pub mod priority;
pub mod reads;

/// One demo run of a benchmark, quiet, its report in a temporary folder; an error if it
/// lost, duplicated or left anything short of final (a fast run that loses mail proves
/// nothing).
pub(crate) async fn checked_demo(
    what: &str,
    opts: crate::demo::DemoOptions,
) -> anyhow::Result<crate::report::Report> {
    let dir = tempfile::tempdir()?;
    let outcome = crate::demo::demo(crate::demo::DemoOptions {
        report_dir: dir.path().to_path_buf(),
        progress: false,
        callback_failures: None,
        ..opts
    })
    .await?;
    let r = outcome.report;
    anyhow::ensure!(
        r.lost == 0 && r.duplicate_sends == 0 && r.not_final == 0,
        "{what}: lost {} duplicate sends {} not final {}",
        r.lost,
        r.duplicate_sends,
        r.not_final
    );
    Ok(r)
}

//! The fault scoreboard's scenarios as tests: the whole topology on the real services,
//! the knobs as shipped, one fault each (see `floodgate_local::demo::faults` for how each
//! scenario scales time and why the ratios stay the production ones).

use floodgate_local::demo::faults::{self, FaultRow};

/// One scenario at a time: each starts its own services on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(make: fn(&std::path::Path) -> faults::Scenario) -> FaultRow {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let row = faults::run(make(dir.path())).await.expect("scenario runs");
    print!("{}", faults::table(std::slice::from_ref(&row)));
    row
}

fn assert_holds(row: &FaultRow) {
    assert!(row.accepted > 0, "{row:?}");
    assert_eq!(row.lost, 0, "{row:?}");
    assert_eq!(row.duplicate_sends, 0, "{row:?}");
    assert_eq!(row.dead_letters, row.expected_dead_letters, "{row:?}");
    assert_eq!(row.stuck, 0, "nothing left created or sending: {row:?}");
    assert_eq!(row.sent, row.accepted, "{row:?}");
    assert_eq!(row.callbacks_lost, 0, "{row:?}");
    assert!(row.holds());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5000_row_bulk_job_on_a_tight_ses_budget_is_delivered_exactly_once() {
    // The budget lets one invocation send under a tenth of what a bulk batch carries.
    let knobs = floodgate_core::Knobs::embedded();
    let s = faults::tight_ses_budget(std::path::Path::new("."));
    let share = s.options.ses_account_rate / f64::from(knobs.max_concurrency("send"));
    let window = f64::from(knobs.functions["send"].timeout_seconds) / s.options.time_scale
        - 12.0 / s.options.time_scale;
    let per_invocation = share * window;
    assert!(
        per_invocation < faults::bulk_claim_per_invocation() as f64 / 10.0,
        "{per_invocation}"
    );
    assert!(s.options.bulk_rows >= 5_000);
    assert_eq!(
        s.options.budget,
        floodgate_local::topology::BudgetRule::Split,
        "the even share: the shared budget would give one invocation the idle lanes' share"
    );
    assert_holds(&run(faults::tight_ses_budget).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_down_longer_than_every_receive_loses_nothing_and_parks_nothing() {
    let knobs = floodgate_core::Knobs::embedded();
    let s = faults::long_primary_outage(std::path::Path::new("."));
    let outage = s.options.outage.expect("an outage").length;
    let span = std::time::Duration::from_secs(u64::from(
        knobs.sqs.max_receive_count * knobs.visibility_timeout_seconds("persist"),
    ))
    .div_f64(s.options.time_scale);
    assert!(outage > span, "{outage:?} vs {span:?}");
    assert_holds(&run(faults::long_primary_outage).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poisoned_messages_reach_the_dlq_alone() {
    let row = run(faults::poisoned_messages).await;
    assert_eq!(row.expected_dead_letters, 3);
    assert_holds(&row);
}

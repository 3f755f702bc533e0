//! The answer of every SQS-triggered function: ReportBatchItemFailures.

use aws_lambda_events::event::sqs::SqsBatchResponse;
use std::collections::BTreeSet;

/// A record that must fail has no message id, so it cannot be reported alone: the whole
/// invocation must fail (Lambda then retries the batch; every handler is idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a failed record has no messageId; failing the whole batch")]
pub struct UnidentifiedRecord;

/// Builds the batch response from the message ids that failed (`None`: a record without
/// an id). Returns the response and the failed ids, for the handler's report.
pub fn batch_response(
    failed: BTreeSet<Option<String>>,
) -> Result<(SqsBatchResponse, BTreeSet<String>), UnidentifiedRecord> {
    let mut response = SqsBatchResponse::default();
    let mut ids = BTreeSet::new();
    for id in failed {
        let id = id.ok_or(UnidentifiedRecord)?;
        ids.insert(id.clone());
        response.add_failure(id);
    }
    Ok((response, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_by_message_id() {
        let failed = BTreeSet::from([Some("b".to_string()), Some("a".to_string())]);
        let (resp, ids) = batch_response(failed).unwrap();
        let reported: Vec<_> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(reported, ["a", "b"]);
        assert_eq!(ids.len(), 2);
        assert!(
            batch_response(BTreeSet::new())
                .unwrap()
                .0
                .batch_item_failures
                .is_empty()
        );
        assert_eq!(
            batch_response(BTreeSet::from([None, Some("a".into())])).unwrap_err(),
            UnidentifiedRecord
        );
    }
}

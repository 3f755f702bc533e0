//! Benchmarks. Each prints ratios against a baseline measured in the same run.

pub mod budget;
pub mod cold;
pub mod ingest;
pub mod limits;
pub mod persist;
pub mod priority;

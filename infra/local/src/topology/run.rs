//! `run`: the whole topology in the foreground for manual use — services, pipeline and the
//! API front on one address, with a demo service, key and templates.

use crate::topology::{ApiSide, Pipeline, PipelineOptions};
use crate::{LocalStack, StackOptions};
use anyhow::Result;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `run`: everything in the foreground for manual use.
pub async fn run(
    state_dir: PathBuf,
    listen: SocketAddr,
    aws_endpoint: Option<String>,
) -> Result<()> {
    crate::services::lifecycle::refuse_if_up(&state_dir)?;
    floodgate_obs::init("floodgate-local");
    let moto = aws_endpoint.as_deref() == Some("moto");
    let stack = LocalStack::start(StackOptions {
        moto,
        durable: true,
        state_dir: Some(state_dir.join("services")),
        ..StackOptions::default()
    })
    .await?;
    let endpoint = if moto {
        stack.moto_endpoint()
    } else {
        aws_endpoint
    };
    let admin = crate::topology::migrated_admin_lane(&stack).await?;
    let key_file = state_dir.join("encryption-key");
    let enc = match std::fs::read_to_string(&key_file) {
        Ok(k) => k.trim().to_string(),
        Err(_) => {
            let k = floodgate_core::auth::generate_encryption_key();
            std::fs::write(&key_file, &k)?;
            k
        }
    };
    let secrets = Arc::new(
        floodgate_core::auth::SecretBox::from_base64(&enc).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let (service_id, key, templates, from) = crate::demo::seed(&admin, &secrets).await?;
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await?;
    let pipeline = Pipeline::start(
        &stack,
        &PipelineOptions {
            aws_endpoint: endpoint,
            sender_identity: Some(from),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let knobs = floodgate_core::Knobs::embedded();
    let api = ApiSide::start(
        &stack,
        &knobs,
        &pipeline.lanes,
        pipeline.queue.clone(),
        pipeline.limit_store.clone(),
        secrets,
        listen,
    )
    .await?;
    println!("Floodgate is running at {}", api.url());
    println!("service id:  {service_id}");
    println!("API key:     {key}");
    println!(
        "templates:   priority {} · normal {} · bulk {}",
        templates.priority, templates.normal, templates.bulk
    );
    println!("FLOODGATE_WRITER_URL={}", stack.writer_url());
    println!("FLOODGATE_READER_URL={}", stack.reader_url());
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    api.stop();
    pipeline.stop().await;
    drop(stack);
    Ok(())
}

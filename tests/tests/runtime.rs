//! The real binaries as Lambda runs them: each function's `main` (configuration from the
//! environment, SDK clients, the runtime loop) under the Lambda Runtime API emulator of
//! `cargo lambda watch`, invoked with `cargo lambda invoke` and every file of `events/`
//! meant for it. The environment is the one `infra/functions.tf` gives the function,
//! computed by Terraform, with local endpoints in place of AWS ones; every invocation must
//! answer what the in-process handler answers for the same event, and the variables the
//! code reads must be the ones Terraform sets.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::event::sqs::SqsEvent;
use floodgate_api::{ApiCatalog, CachePolicy};
use floodgate_aws::mail::SesMailer;
use floodgate_aws::{DynamoLimitStore, SqsQueue};
use floodgate_core::auth::{SecretBox, generate_encryption_key};
use floodgate_core::{Knobs, ProcessType, QueueName};
use floodgate_e2e::terraform::{env_drift, terraform_environments};
use floodgate_e2e::*;
use floodgate_local::topology::local_sdk;
use floodgate_local::{LocalStack, StackOptions};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const FUNCTIONS: [&str; 7] = [
    "persist",
    "send",
    "receipts",
    "callbacks",
    "ingest",
    "status",
    "admin",
];

/// Variables the code reads that Terraform leaves unset on purpose: tunables with a
/// documented default (README, "Database lanes" and the functions' docs), and the queue
/// URLs `SqsQueue::from_env` looks up for every queue (a function gets only its own).
const OPTIONAL: &[&str] = &[
    "FLOODGATE_QUEUE_URL_*",
    "FLOODGATE_DLQ_URL_*",
    "FLOODGATE_DB_CA_FILE",
    "FLOODGATE_WRITER_*",
    "FLOODGATE_READER_*",
    "FLOODGATE_CACHE_*",
    "FLOODGATE_SEND_*",
    "FLOODGATE_CALLBACK_*",
    "FLOODGATE_ALLOW_LOOPBACK_HTTP_CALLBACKS",
];

/// What cargo-lambda's emulator (1.9.2) sends as `Lambda-Runtime-Deadline-Ms`: ten minutes
/// as a duration, where Lambda sends a time in milliseconds since the epoch. `main` reads it
/// as Lambda's, a time long past, so the in-process handler gets the same deadline (send then
/// claims nothing and defers; its sending within a budget is tested in-process elsewhere).
const EMULATOR_DEADLINE_MS: u64 = 600_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Which function an `events/` file is meant for, by its name.
fn function_of(file: &str) -> Option<&'static str> {
    [
        ("apigw-post-", "ingest"),
        ("apigw-get-", "status"),
        ("sqs-intake-", "persist"),
        ("sqs-send-", "send"),
        ("sqs-receipts-", "receipts"),
        ("sqs-callbacks-", "callbacks"),
        ("admin-", "admin"),
    ]
    .into_iter()
    .find(|(prefix, _)| file.starts_with(prefix))
    .map(|(_, f)| f)
}

/// `cargo-lambda`, installed by the local stack's installer when missing.
fn cargo_lambda() -> PathBuf {
    floodgate_local::services::install::ensure_cargo_lambda()
        .unwrap_or_else(|e| panic!("cargo-lambda: {e:#}"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// Checks every function's binary is built (debug; the test command builds them with
/// `cargo build --workspace --bins` before the tests: a cargo run inside `cargo test` sees
/// the test runner's environment and would rebuild half the dependencies each time), and
/// builds the getenv logger.
fn build(scratch: &Path) -> PathBuf {
    for f in FUNCTIONS {
        let binary = target_dir().join("debug").join(format!("floodgate-{f}"));
        assert!(
            binary.exists(),
            "{} is not built: run `cargo build --workspace --bins` first (infra/local/test-all.sh does)",
            binary.display()
        );
    }
    let shim = scratch.join("getenv_log.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(repo().join("tests/support/getenv_log.c"))
        .status()
        .expect("cc");
    assert!(
        status.success(),
        "compiling tests/support/getenv_log.c failed"
    );
    shim
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills the child when dropped, so a failing assertion leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The emulator: `cargo lambda watch --only-lambda-apis`, which serves the Runtime API and
/// the invoke API without starting a function (the test starts the built binary).
fn start_emulator(port: u16) -> Running {
    let child = Command::new(cargo_lambda())
        .current_dir(repo())
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cargo lambda watch");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Running(child)
}

/// `cargo lambda invoke` with one event file; the function's answer as JSON.
fn invoke(port: u16, event: &Path) -> Value {
    let out = Command::new(cargo_lambda())
        .current_dir(repo())
        .args(["lambda", "invoke", "-A", "127.0.0.1", "-P"])
        .arg(port.to_string())
        .arg("--data-file")
        .arg(event)
        .arg("_")
        .output()
        .expect("cargo lambda invoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "invoking with {}: {stdout}{}",
        event.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{}: the answer is not JSON ({e}): {stdout}",
            event.display()
        )
    })
}

/// The local services standing in for AWS, and what a function's environment points at.
struct Local {
    stack: &'static LocalStack,
    sdk: aws_config::SdkConfig,
    moto: String,
    queues: SqsQueue,
    configuration_set: String,
    limits_table: String,
    key: String,
}

impl Local {
    /// The limit store's table on moto, as `main` builds it from the environment.
    fn limit_store(&self) -> Arc<DynamoLimitStore> {
        Arc::new(DynamoLimitStore::new(
            DynamoLimitStore::client(&self.sdk),
            self.limits_table.clone(),
        ))
    }

    /// Terraform's value of `name` for a function, with local endpoints substituted where
    /// the value is an AWS resource (a `<…>` placeholder) or an AWS-only path; anything
    /// else is passed as Terraform computed it.
    fn value(&self, name: &str, terraform: &str) -> String {
        let queue_url = |suffix: &str| {
            QueueName::ALL
                .into_iter()
                .find(|q| q.as_string().to_uppercase().replace('-', "_") == suffix)
                .and_then(|q| self.queues.url(q).ok())
                .unwrap_or_else(|| panic!("no local queue for {name}"))
                .to_string()
        };
        match name {
            "FLOODGATE_WRITER_URL" => self.stack.writer_url(),
            "FLOODGATE_READER_URL" => self.stack.reader_url(),
            // Local PostgreSQL authenticates with passwords, not RDS IAM tokens.
            "FLOODGATE_DB_IAM_AUTH" => "false".into(),
            "FLOODGATE_API_KEY_ENCRYPTION_KEY" => self.key.clone(),
            "FLOODGATE_SES_CONFIGURATION_SET" => self.configuration_set.clone(),
            "FLOODGATE_LIMITS_TABLE" => self.limits_table.clone(),
            "FLOODGATE_BOOTSTRAP_HOST" => "127.0.0.1".into(),
            "FLOODGATE_BOOTSTRAP_SECRET_ARN" => {
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:local-master".into()
            }
            // The RDS CA bundle exists only in the deployed zip; the system's roots here.
            "FLOODGATE_DB_CA_FILE" => "/etc/ssl/certs/ca-certificates.crt".into(),
            _ => match name.strip_prefix("FLOODGATE_QUEUE_URL_") {
                Some(suffix) => queue_url(suffix),
                None => {
                    assert!(
                        !terraform.contains('<'),
                        "{name}={terraform}: an AWS value this test has no local stand-in for"
                    );
                    terraform.to_string()
                }
            },
        }
    }

    /// The process environment of a function's binary: Terraform's variables (localised),
    /// the Lambda runtime's, and the SDK's pointing at moto.
    fn environment(
        &self,
        terraform: &BTreeMap<String, String>,
        port: u16,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = terraform
            .iter()
            .map(|(k, v)| (k.clone(), self.value(k, v)))
            .collect();
        for (k, v) in [
            (
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            ),
            ("AWS_LAMBDA_FUNCTION_NAME", "_".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "local".into()),
            ("AWS_SECRET_ACCESS_KEY", "local".into()),
            ("AWS_ENDPOINT_URL", self.moto.clone()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ] {
            env.push((k.to_string(), v));
        }
        env
    }
}

/// Replaces what differs between two runs of the same request (ids and times made at
/// acceptance) so answers can be compared.
fn comparable(v: &Value, known: &str) -> Value {
    match v {
        Value::String(s) => {
            if Uuid::parse_str(s).is_ok() && !known.contains(s.as_str()) {
                Value::String("<new id>".into())
            } else if let Some(i) = s.rfind("/v2/notifications/")
                && Uuid::parse_str(&s[i + 18..]).is_ok()
            {
                Value::String(format!("{}<new id>", &s[..i + 18]))
            } else if chrono::DateTime::parse_from_rfc3339(s).is_ok() {
                Value::String("<time>".into())
            } else {
                v.clone()
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| comparable(x, known)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    // An API Gateway answer carries its JSON as a string.
                    let x = match (k.as_str(), x) {
                        ("body", Value::String(b)) => serde_json::from_str::<Value>(b)
                            .map(|inner| comparable(&inner, known))
                            .unwrap_or_else(|_| x.clone()),
                        _ => comparable(x, known),
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// What the in-process handler, built as the function's `main` builds it, answers.
async fn in_process(
    function: &str,
    event_text: &str,
    local: &Local,
    env: &BTreeMap<String, String>,
) -> Value {
    let knobs = Knobs::embedded();
    let secrets = Arc::new(SecretBox::from_base64(&local.key).expect("key"));
    let queue = Arc::new(local.queues.clone());
    match function {
        "ingest" | "status" => {
            let req: ApiGatewayV2httpRequest = serde_json::from_str(event_text).expect("event");
            let catalog = Arc::new(ApiCatalog::new(
                reader_lane(local.stack).await,
                secrets,
                CachePolicy::default(),
            ));
            let resp = if function == "ingest" {
                floodgate_ingest::Ingest::new(catalog, queue, local.limit_store(), &knobs)
                    .handle(req)
                    .await
            } else {
                floodgate_status::Status::new(catalog).handle(req).await
            };
            serde_json::to_value(&resp).expect("an answer")
        }
        "admin" => {
            let command: floodgate_admin::AdminCommand =
                serde_json::from_str(event_text).expect("event");
            floodgate_admin::Admin::new(
                writer_lane(local.stack, |_| {}).await,
                Some(SecretBox::from_base64(&local.key).expect("key")),
                None,
                Some(queue),
            )
            .execute(&command)
            .await
            .expect("admin")
        }
        _ => {
            let event: SqsEvent = serde_json::from_str(event_text).expect("event");
            let writer = writer_lane(local.stack, |_| {}).await;
            let resp = match function {
                "persist" => {
                    floodgate_persist::Persist::new(writer, queue, Arc::new(knobs))
                        .handle(event)
                        .await
                        .expect("persist")
                        .0
                }
                "send" => {
                    let config = floodgate_send::SendConfig::from_lookup(&knobs, |k| {
                        env.get(k).map(|v| local.value(k, v))
                    })
                    .expect("send config");
                    let mailer =
                        SesMailer::from_sdk(&local.sdk, Some(local.configuration_set.clone()));
                    let sender = floodgate_send::Sender::new(
                        writer,
                        Arc::new(mailer),
                        queue,
                        Arc::new(knobs),
                        config,
                    )
                    .with_shared_budget(local.limit_store());
                    // The deadline `main` computes from the emulator's.
                    let deadline = sender.sending_deadline(floodgate_send::invocation_deadline(
                        EMULATOR_DEADLINE_MS,
                    ));
                    sender.handle(event, deadline).await.expect("send").0
                }
                "receipts" => {
                    floodgate_receipts::Receipts::new(writer, queue, &knobs)
                        .handle(event)
                        .await
                        .expect("receipts")
                        .0
                }
                "callbacks" => {
                    floodgate_callbacks::Callbacks::new(queue, secrets, &knobs, false)
                        .expect("callbacks client")
                        .handle(event)
                        .await
                        .expect("callbacks")
                        .0
                }
                other => panic!("no in-process handler for {other}"),
            };
            serde_json::to_value(&resp).expect("an answer")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_binary_answers_under_the_lambda_runtime_api_as_in_process() {
    let environments = terraform_environments(
        &repo().join("infra"),
        &repo().join("infra/terraform.tfvars.example"),
    )
    .expect("Terraform's function environments");
    assert_eq!(
        environments
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        FUNCTIONS.into_iter().collect::<BTreeSet<_>>(),
        "Terraform's functions are the ones this test runs"
    );

    let scratch = tempfile::tempdir().expect("scratch");
    let shim = build(scratch.path());
    let stack: &'static LocalStack = Box::leak(Box::new(
        LocalStack::start(StackOptions {
            moto: true,
            ..StackOptions::default()
        })
        .await
        .expect("stack"),
    ));
    let writer = writer_lane(stack, |_| {}).await;
    {
        let conn = writer.acquire().await.unwrap();
        conn.bounded(floodgate_db::migrate(&conn)).await.unwrap();
        let today = chrono::Utc::now().date_naive();
        conn.bounded(floodgate_db::maintain_partitions(&conn, today, 3, 36_500))
            .await
            .unwrap();
    }
    let moto = stack.moto_endpoint().expect("moto");
    let sdk = local_sdk(&moto).await;
    let queues = SqsQueue::create_all(
        SqsQueue::client(&sdk),
        &format!("runtime-{}", Uuid::now_v7().simple()),
        Duration::from_secs(180),
        5,
    )
    .await
    .expect("queues");
    let limits_table = format!("runtime-limits-{}", Uuid::now_v7().simple());
    DynamoLimitStore::create_table(&DynamoLimitStore::client(&sdk), &limits_table)
        .await
        .expect("limits table");
    let configuration_set = "floodgate-local".to_string();
    let ses = aws_sdk_sesv2::Client::new(&sdk);
    ses.create_configuration_set()
        .configuration_set_name(&configuration_set)
        .send()
        .await
        .expect("configuration set");
    ses.create_email_identity()
        .email_identity(FIXTURE_FROM)
        .send()
        .await
        .expect("sender identity");
    let local = Local {
        stack,
        sdk,
        moto,
        queues,
        configuration_set,
        limits_table,
        key: generate_encryption_key(),
    };
    let secrets = SecretBox::from_base64(&local.key).unwrap();
    seed_api_event_fixtures(stack, &writer, &secrets).await;
    create_service_with_ids(
        &writer,
        FIXTURE_SERVICE.parse().unwrap(),
        FIXTURE_TEMPLATE.parse().unwrap(),
        ProcessType::Normal,
        FIXTURE_FROM,
    )
    .await;

    let events_dir = repo().join("events");
    let mut files: Vec<String> = std::fs::read_dir(&events_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    for f in &files {
        assert!(
            function_of(f).is_some(),
            "events/{f}: which function is it for?"
        );
    }

    let port = free_port();
    let _emulator = start_emulator(port);
    let mut problems = Vec::new();
    let mut mismatches = Vec::new();
    for function in FUNCTIONS {
        let terraform = &environments[function];
        let mine: Vec<&String> = files
            .iter()
            .filter(|f| function_of(f) == Some(function))
            .collect();
        assert!(
            !mine.is_empty(),
            "no file in events/ is meant for {function}"
        );
        let reads_log = scratch.path().join(format!("{function}.reads"));
        let binary = target_dir()
            .join("debug")
            .join(format!("floodgate-{function}"));
        let log = scratch.path().join(format!("{function}.out"));
        let err_log = scratch.path().join(format!("{function}.err"));
        let child = Command::new(&binary)
            .env_clear()
            .envs(local.environment(terraform, port))
            .env("LD_PRELOAD", &shim)
            .env("FG_GETENV_LOG", &reads_log)
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .stderr(Stdio::from(
                std::fs::File::create(&err_log).expect("log file"),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let running = Running(child);
        for f in mine {
            let path = events_dir.join(f);
            let text = std::fs::read_to_string(&path).unwrap();
            let got = invoke(port, &path);
            let want = in_process(function, &text, &local, terraform).await;
            let tail = |p: &Path| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            };
            let (got, want) = (comparable(&got, &text), comparable(&want, &text));
            if got != want {
                mismatches.push(format!(
                    "events/{f}: the binary under the Runtime API answered\n  {got}\n\
                     the in-process handler\n  {want}\nthe binary's log ends:\n{}\n{}",
                    tail(&log),
                    tail(&err_log)
                ));
            }
        }
        drop(running);
        let read: BTreeSet<String> = std::fs::read_to_string(&reads_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let set: BTreeSet<String> = terraform.keys().cloned().collect();
        problems.extend(env_drift(function, &read, &set, OPTIONAL));
    }
    assert!(
        mismatches.is_empty(),
        "{} of the sample events differ:\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
    assert!(
        problems.is_empty(),
        "environment drift:\n{}",
        problems.join("\n")
    );
}

/// A variable renamed in `functions.tf` only (the code still reads the old name) is caught:
/// Terraform now sets a name nobody reads.
#[test]
fn a_variable_renamed_in_terraform_only_is_drift() {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("infra")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let functions_tf = copy.path().join("functions.tf");
    let text = std::fs::read_to_string(&functions_tf).unwrap();
    assert!(text.contains("FLOODGATE_SES_ACCOUNT_RATE "));
    std::fs::write(
        &functions_tf,
        text.replace("FLOODGATE_SES_ACCOUNT_RATE ", "FLOODGATE_SES_RATE         "),
    )
    .unwrap();
    let tfvars = repo().join("infra/terraform.tfvars.example");
    let original = terraform_environments(&repo().join("infra"), &tfvars).unwrap();
    let drifted = terraform_environments(copy.path(), &tfvars).unwrap();
    // What send's code reads: everything Terraform sets for it today.
    let read: BTreeSet<String> = original["send"].keys().cloned().collect();
    let set: BTreeSet<String> = drifted["send"].keys().cloned().collect();
    let problems = env_drift("send", &read, &set, &[]);
    assert_eq!(
        problems,
        [
            "send: Terraform sets FLOODGATE_SES_RATE, which the code never reads",
            "send: the code reads FLOODGATE_SES_ACCOUNT_RATE, which Terraform does not set",
        ],
    );
}

//! `berth-bench`: CreateEvent and ListEvents throughput and latency through the real HTTP stack
//! (SigV4-signed requests over loopback to an in-process server), at 1 and 32 concurrent
//! clients, beside the raw store rate (the same inserts made directly through the store layer,
//! one durable transaction each, committed together when several wait, as `Store::write` does).
//! CreateEvent requests carry a fresh `clientToken`, as boto3 sends. Prints a Markdown table for
//! `docs/PERFORMANCE.md`.
//!
//! Usage: `berth-bench [--postgres URL] [--requests N] [--repeat N]`, or `berth-bench --sandboxes PATH_TO_BERTH
//! [--runs N]` for sandbox cold start per tier (`sandboxes.rs`), `berth-bench --embed MODELS_DIR`
//! for the embedded embedder's throughput, or `berth-bench --retrieval MODELS_DIR` for
//! RetrieveMemoryRecords latency (`retrieval.rs`).

mod extraction;
mod quality;
mod retrieval;
mod sandboxes;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;

use anyhow::Context;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use berth_core::{AccountId, Caller, SystemClock};
use berth_memory::MemoryService;
use berth_memory::store::{self as db, EventRow};
use berth_server::{AccessKey, AppState, KeyStore, ServerSettings, Services};
use berth_store::Store;
use berth_store::jobs::Worker;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const KEY: &str = "AKIABENCHMARK0000001";
const SECRET: &str = "benchmark-secret-key-00000000000000000000";
const ACCOUNT: &str = "123456789012";

#[derive(Parser)]
struct Args {
    /// Also run against this PostgreSQL admin URL (a fresh database is created).
    #[arg(long)]
    postgres: Option<String>,
    /// Requests per measurement.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Measurements per row: raw store inserts and CreateEvent alternate, so that both see the
    /// same machine; each row gives the median with the range in brackets.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Measure sandbox cold start per tier instead, with the guest of this `berth` binary.
    #[arg(long)]
    sandboxes: Option<std::path::PathBuf>,
    /// Sandboxes started per tier.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Measure the embedded embedder's throughput instead, with the models in this directory.
    #[arg(long)]
    embed: Option<std::path::PathBuf>,
    /// Measure RetrieveMemoryRecords at 10k and 100k records instead, with the models in this
    /// directory.
    #[arg(long)]
    retrieval: Option<std::path::PathBuf>,
    /// Measure retrieval quality (recall@5 on a generated conversation set) instead, with the
    /// models in this directory.
    #[arg(long)]
    quality: Option<std::path::PathBuf>,
    /// The seed of the generated conversation set of --quality.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Measure the time from CreateEvent to a retrievable extracted record instead, with the
    /// embedded models in this directory.
    #[arg(long)]
    extraction: Option<std::path::PathBuf>,
}

struct Stats {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn stats(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Stats {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn signed(method: &str, url: &str, body: Vec<u8>) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let identity = Credentials::new(KEY, SECRET, None, None, "bench").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock-agentcore")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()?
        .into();
    let uri: http::Uri = url.parse()?;
    let host = uri.authority().context("url has a host")?.to_string();
    let headers = [("host", host.as_str()), ("content-type", "application/json")];
    let signable = SignableRequest::new(method, url, headers.into_iter(), SignableBody::Bytes(&body))?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    let mut request = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let mut request = request.body(Full::new(Bytes::from(body)))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn send(client: &HttpClient, request: http::Request<Full<Bytes>>, expect: u16) -> anyhow::Result<Bytes> {
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status == expect, "status {status}: {}", String::from_utf8_lossy(&body));
    Ok(body)
}

fn event_body(session: &str, i: usize) -> Vec<u8> {
    serde_json::json!({
        "actorId": "bench-actor", "sessionId": session, "eventTimestamp": 1_800_000_000.0 + i as f64 / 1000.0,
        "payload": [
            {"conversational": {"content": {"text": format!("user message number {i} asking about the weather in Lisbon")}, "role": "USER"}},
            {"conversational": {"content": {"text": "It is sunny and 24 degrees; a light breeze comes from the sea."}, "role": "ASSISTANT"}}
        ],
        "metadata": {"kind": {"stringValue": "turn"}},
        // boto3 fills a fresh client token into every CreateEvent.
        "clientToken": format!("{session}-{i}-{}", berth_core::ids::random_alphanumeric(12))
    })
    .to_string()
    .into_bytes()
}

/// Waits for every client task and summarises their latencies.
async fn gather(mut tasks: JoinSet<anyhow::Result<Vec<Duration>>>, started: Instant) -> anyhow::Result<Stats> {
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    Ok(stats(latencies, started.elapsed()))
}

/// Runs `total` requests from `clients` concurrent clients; `make` builds request `i` of client `c`.
async fn drive<F>(clients: usize, total: usize, make: F) -> anyhow::Result<Stats>
where
    F: Fn(usize, usize) -> anyhow::Result<(http::Request<Full<Bytes>>, u16)>,
{
    // Requests are built and signed before the clock starts, so the load generator's own
    // signing does not compete with the server for the machine's cores while it is measured.
    let per_client = total / clients;
    let mut prepared = Vec::with_capacity(clients);
    for c in 0..clients {
        prepared.push(
            (0..per_client)
                .map(|i| make(c, i))
                .collect::<anyhow::Result<Vec<_>>>()?,
        );
    }
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for requests in prepared {
        tasks.spawn(async move {
            let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
            let mut latencies = Vec::with_capacity(requests.len());
            for (request, expect) in requests {
                let t = Instant::now();
                send(&client, request, expect).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    gather(tasks, started).await
}

/// Inserts through the store layer's write path, as CreateEvent does.
async fn raw_store(store: &Store, memory_id: &str, clients: usize, total: usize) -> anyhow::Result<Stats> {
    let per_client = total / clients;
    let mut prepared = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut rows = Vec::with_capacity(per_client);
        for i in 0..per_client {
            let body: serde_json::Value = serde_json::from_slice(&event_body("raw", i))?;
            rows.push(EventRow {
                seq: 0,
                memory_id: memory_id.to_string(),
                actor_id: "bench-actor".into(),
                session_id: format!("raw-{clients}-{c}"),
                event_id: berth_core::ids::event_id(berth_core::Timestamp(1_800_000_000_000 + i as i64)),
                event_time: 1_800_000_000_000 + i as i64,
                branch_name: None,
                root_event_id: None,
                payload: body["payload"].to_string(),
                metadata: Some(body["metadata"].to_string()),
            });
        }
        prepared.push(rows);
    }
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for rows in prepared {
        let store = store.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(rows.len());
            for (i, row) in rows.into_iter().enumerate() {
                let now = store.now();
                let t = Instant::now();
                store
                    .write(move |conn| {
                        let row = row.clone();
                        Box::pin(async move { db::insert_event(conn, &row, i == 0, now, None).await })
                    })
                    .await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    gather(tasks, started).await
}

/// The median and the range of some measurements.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(values: impl IntoIterator<Item = f64>) -> Spread {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    Spread {
        median: values[values.len() / 2],
        min: values[0],
        max: values[values.len() - 1],
    }
}

impl Spread {
    fn show(&self, decimals: usize) -> String {
        if self.min == self.max {
            return format!("{:.decimals$}", self.median);
        }
        format!(
            "{:.decimals$} [{:.decimals$}–{:.decimals$}]",
            self.median, self.min, self.max
        )
    }
}

fn row(name: &str, backend: &str, clients: usize, runs: &[Stats]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {name} | {backend} | {clients} | {} | {} | {} |",
        spread(runs.iter().map(|s| s.per_second)).show(0),
        spread(runs.iter().map(|s| ms(s.p50))).show(2),
        spread(runs.iter().map(|s| ms(s.p99))).show(2),
    );
}

async fn bench_backend(backend: &str, url: &str, requests: usize, repeat: usize) -> anyhow::Result<()> {
    let store = Store::open(url, Arc::new(SystemClock)).await?;
    let mut worker = Worker::new(store.clone());
    let mut memory = MemoryService::new(store.clone(), "us-east-1");
    memory.attach_worker(&mut worker);
    let keys = KeyStore::new([AccessKey {
        access_key_id: KEY.into(),
        secret_access_key: SECRET.into(),
        account_id: AccountId::try_from(ACCOUNT.to_string()).map_err(anyhow::Error::msg)?,
    }]);
    let state = AppState::new(
        ServerSettings::default(),
        keys,
        store.clone(),
        Services {
            memory: memory.clone(),
            runtime: None,
            interpreter: None,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, berth_server::app(state)).await });

    let caller = Caller {
        account: AccountId::try_from(ACCOUNT.to_string()).map_err(anyhow::Error::msg)?,
        access_key_id: KEY.into(),
        bearer_token: None,
    };
    let input = serde_json::from_value(serde_json::json!({"name": "bench", "eventExpiryDuration": 30}))?;
    let memory_id = memory.create_memory(&caller, input).await?.memory.id;
    worker.run_due().await?;

    for clients in [1, 32] {
        let (mut raw, mut create) = (Vec::new(), Vec::new());
        for run in 0..repeat {
            raw.push(raw_store(&store, &memory_id, clients, requests).await?);
            let url = format!("{base}/memories/{memory_id}/events");
            create.push(
                drive(clients, requests, move |c, i| {
                    let session = format!("s-{clients}-{c}");
                    Ok((signed("POST", &url, event_body(&session, run * requests + i))?, 201))
                })
                .await?,
            );
        }
        row("raw store insert", backend, clients, &raw);
        row("CreateEvent", backend, clients, &create);
        let ratios = raw
            .iter()
            .zip(&create)
            .map(|(r, c)| 100.0 * c.per_second / r.per_second);
        println!(
            "|   CreateEvent / raw store | | {clients} | {} % | | |",
            spread(ratios).show(0)
        );
        let mut list = Vec::new();
        for _ in 0..repeat {
            let base = base.clone();
            let memory_id = memory_id.clone();
            list.push(
                drive(clients, requests, move |c, _| {
                    let url = format!("{base}/memories/{memory_id}/actor/bench-actor/sessions/s-{clients}-{c}");
                    Ok((
                        signed("POST", &url, br#"{"maxResults":20,"includePayloads":true}"#.to_vec())?,
                        200,
                    ))
                })
                .await?,
            );
        }
        row("ListEvents (20, payloads)", backend, clients, &list);
    }
    store.close().await;
    Ok(())
}

/// Texts per second of the embedded embedder, for sentences of a typical memory record's length.
fn embed(models: &std::path::Path) -> anyhow::Result<()> {
    let model = berth_models::MiniLm::load(&models.join(berth_models::MINILM_DIR))?;
    let texts: Vec<String> = (0..512)
        .map(|i| {
            format!("The user mentioned on day {i} that they prefer window seats and vegetarian meals when flying.")
        })
        .collect();
    model.embed_blocking(&texts[..32])?; // warm-up
    println!("| batch | texts | texts/s | ms per batch |");
    println!("|---:|---:|---:|---:|");
    for batch in [1, 8, 32] {
        let started = Instant::now();
        for chunk in texts.chunks(batch) {
            model.embed_blocking(chunk)?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "| {batch} | {} | {:.0} | {:.1} |",
            texts.len(),
            texts.len() as f64 / elapsed,
            1000.0 * elapsed / (texts.len() / batch) as f64
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(berth) = &args.sandboxes {
        return sandboxes::run(berth, args.runs).await;
    }
    if let Some(models) = &args.embed {
        return embed(models);
    }
    if let Some(models) = &args.retrieval {
        return retrieval::run(models).await;
    }
    if let Some(models) = &args.quality {
        return quality::run(models, args.seed).await;
    }
    if let Some(models) = &args.extraction {
        return extraction::run(models).await;
    }
    println!("| operation | store | clients | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|");
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    bench_backend("SQLite", &url, args.requests, args.repeat.max(1)).await?;
    if let Some(admin) = args.postgres {
        let name = format!("berth_bench_{}", berth_core::ids::random_alphanumeric(8).to_lowercase());
        let admin_pool = berth_store::sqlx::AnyPool::connect(&admin).await?;
        berth_store::sqlx::raw_sql(berth_store::sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin_pool)
            .await?;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        bench_backend(
            "PostgreSQL",
            &format!("{base}/{name}"),
            args.requests,
            args.repeat.max(1),
        )
        .await?;
    }
    Ok(())
}

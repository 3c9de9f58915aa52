//! The `berth` binary: a thin CLI over the library crates.

mod client;
mod config;
mod credentials;
mod deploy;
mod doctor;
mod serve;
mod tls;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Self-hosted Amazon Bedrock AgentCore, wire-compatible, in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (both AgentCore planes on one listener)
    Serve(Overrides),
    /// Print shell `export` lines that point AWS clients at this server
    Credentials(Overrides),
    /// Check the data dir, the database, each sandbox tier and each subsystem
    Doctor(Overrides),
    /// Package an agent project, create or update its runtime, wait until READY
    Deploy {
        #[command(flatten)]
        args: deploy::DeployArgs,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Invoke a runtime and stream its answer to stdout
    Invoke {
        #[command(flatten)]
        args: deploy::InvokeArgs,
        #[command(flatten)]
        overrides: Overrides,
    },
}

/// A client of the server: the endpoint and keys from the AWS variables when set (as boto3
/// reads them), else this machine's data dir and listen address.
fn api_client(overrides: &Overrides) -> anyhow::Result<client::Client> {
    let config = Config::load(overrides)?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE").unwrap_or_else(|_| config.endpoint_url());
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| config.region.clone());
    let (id, secret) = match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(id), Ok(secret)) => (id, secret),
        _ => {
            let key = credentials::load_or_create(&config.data_dir)?;
            (key.access_key_id, key.secret_access_key)
        }
    };
    Ok(client::Client::new(&endpoint, &region, &id, &secret))
}

fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    // The sandbox guest runs from this binary; it must start before any thread exists.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__guest") {
        std::process::exit(berth_guest::main_with_args(&args[2..]));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    Config::check_environment(std::env::vars().map(|(k, _)| k))?;
    match cli.command {
        Command::Serve(overrides) => {
            let config = Config::load(&overrides)?;
            init_logging(&config.log);
            serve::run(config).await
        }
        Command::Credentials(overrides) => {
            let config = Config::load(&overrides)?;
            let key = credentials::load_or_create(&config.data_dir)?;
            print!(
                "{}",
                credentials::export_lines(&key, &config.region, &config.endpoint_url())
            );
            Ok(())
        }
        Command::Deploy { args, overrides } => {
            let client = api_client(&overrides)?;
            let deployed = deploy::deploy(&client, &args).await?;
            println!("{}", serde_json::to_string_pretty(&deployed)?);
            Ok(())
        }
        Command::Invoke { args, overrides } => {
            let client = api_client(&overrides)?;
            deploy::invoke(&client, &args).await
        }
        Command::Doctor(overrides) => {
            let config = Config::load(&overrides)?;
            init_logging("warn");
            if doctor::run(config).await? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
    }
}

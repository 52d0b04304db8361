//! The `ilp-bridge` command: configuration, logging, then the node's parts (BTP/1.0 peers, each bridged to a
//! modern connector when configured so, and the RFC 38 settlement engine) on one RocksDB folder until Ctrl-C or
//! SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use ilp_bridge::admin::{NodeView, Part};
use ilp_bridge::bridge::run::run_peers_observed;
use ilp_bridge::config::ilp_kit;
use ilp_bridge::config::node::{LogConfig, LogFormat, NodeConfig, EXAMPLE_CONFIG};
use ilp_bridge::fd_budget::{raise_nofile_limit, FdBudget, FdDemand};
use ilp_bridge::migrate;
use ilp_bridge::peer::run::NodeOptions;
use ilp_bridge::store::{legacy_import, Db, DbOptions, RocksStores};

/// Interledger bridge: BTP/1.0 peers compatible with ilp-plugin-payment-channel-framework, bridged to modern
/// ILPv4 connectors (BTP/2.0, ILP-over-HTTP) where configured, and an RFC 38 settlement engine.
#[derive(Parser, Debug)]
#[command(name = "ilp-bridge", version = ilp_bridge::admin::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node: the configured BTP/1.0 peers (a peer with a [peer.modern] table is bridged to that modern
    /// connector) and the settlement engine. Without --config or --ilp-kit-env: the settlement engine with the
    /// `trustline` (IOU) module on 127.0.0.1:3000, connector http://127.0.0.1:7771, data in ./ilp-bridge-data;
    /// it credits no IOU until module_options.trustLimit is set. Bad configuration is refused before anything
    /// starts, naming the field.
    Run {
        /// TOML configuration (see `ilp-bridge example-config`).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// ILP Kit env.list: start every CONNECTOR_LEDGERS entry using ilp-plugin-payment-channel-framework
        /// (without --config, no settlement engine runs).
        #[arg(long, value_name = "ENV_LIST")]
        ilp_kit_env: Option<PathBuf>,
        /// Overrides the configuration's data_dir.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print an annotated example configuration.
    ExampleConfig,
    /// A readable summary of a running node: readiness, peers, engine accounts, queues, alerts.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The BTP peers of a running node: connection, balance, limits, prepared transfers, last error.
    Peers {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Settlement of a running node: engine accounts (settled, queued, credits), bridged pairs, alerts.
    Settlements {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A test payment through a peer: prints the outcome and the time it took. Its condition cannot be
    /// fulfilled by any receiver, so a working path answers "rejected" (README, "Operating ilp-bridge").
    Pay {
        /// The peer to pay through (its configured name).
        #[arg(long)]
        peer: String,
        /// Amount in the peer ledger's units.
        #[arg(long)]
        amount: String,
        /// ILP address to pay [default: the peer's prefix + "admin-test"].
        #[arg(long, value_name = "ADDRESS")]
        to: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Import a legacy plugin store (its key/value rows) into a peer's durable records.
    ImportLegacyStore {
        /// The peer the rows belong to (its `name` in the configuration; ILP Kit: the ledger prefix).
        #[arg(long)]
        peer: String,
        /// The rows: a JSON object {"key": "value", ...} or a CSV export of the plugin_store table (key,value).
        #[arg(long, value_name = "FILE")]
        rows: PathBuf,
        /// Data folder to import into.
        #[arg(long, value_name = "DIR", default_value = ilp_bridge::config::node::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Take an ILP Kit deployment over: its env.list and the plugin store tables in its PostgreSQL become a
    /// node configuration and this node's records. Nothing is written unless every ledger can be migrated.
    MigrateIlpKit {
        /// ILP Kit's env.list (CONNECTOR_LEDGERS, DB_URI).
        #[arg(long, value_name = "FILE")]
        env_file: PathBuf,
        /// PostgreSQL URL of ILP Kit's database [default: DB_URI, else API_DB_URI, from the env.list].
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Data folder to import into.
        #[arg(long, value_name = "DIR", default_value = ilp_bridge::config::node::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Node configuration to write (holds the peers' secrets; written readable by its owner only).
        #[arg(long, value_name = "FILE", default_value = "ilp-bridge.toml")]
        config_out: PathBuf,
        /// Read, check and report; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import into a data folder that already holds records, and replace a config file with other content.
        #[arg(long)]
        force: bool,
        /// rippled's JSON-RPC endpoint for ilp-plugin-xrp-paychan ledgers [default: each ledger's
        /// rippledServer, wss:// read as https:// and ws:// as http:// on the same host and port].
        #[arg(long, value_name = "URL")]
        rippled: Option<String>,
    },
}

/// How the admin commands reach a running node.
#[derive(clap::Args, Debug)]
struct AdminArgs {
    /// The node's admin listener [default: ILP_BRIDGE_ADMIN_URL, else http://<[admin] listen of --config>,
    /// else http://127.0.0.1:3002].
    #[arg(long, value_name = "URL")]
    admin_url: Option<String>,
    /// Its bearer token [default: ILP_BRIDGE_ADMIN_TOKEN, else [admin] token of --config].
    #[arg(long)]
    token: Option<String>,
    /// The node's configuration, to read [admin] listen and token from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Environment variable naming the admin listener's URL for the admin commands.
const ADMIN_URL_ENV: &str = "ILP_BRIDGE_ADMIN_URL";

impl AdminArgs {
    /// The client these options describe.
    fn client(&self) -> anyhow::Result<ilp_bridge::admin::client::AdminClient> {
        use ilp_bridge::config::admin::{ADMIN_TOKEN_ENV, DEFAULT_NODE_ADMIN_LISTEN};
        let config = match &self.config {
            Some(path) => NodeConfig::load(path)?.admin,
            None => None,
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let url = self
            .admin_url
            .clone()
            .or_else(|| env(ADMIN_URL_ENV))
            .or_else(|| config.as_ref().map(|c| format!("http://{}", c.listen)))
            .unwrap_or_else(|| format!("http://{DEFAULT_NODE_ADMIN_LISTEN}"));
        let token = self
            .token
            .clone()
            .or_else(|| env(ADMIN_TOKEN_ENV))
            .or_else(|| config.map(|c| c.token));
        Ok(ilp_bridge::admin::client::AdminClient::new(&url, token))
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs one admin command against a running node.
async fn admin_command(command: Command) -> anyhow::Result<()> {
    use ilp_bridge::admin::client::{render_pay, render_peers, render_settlements, render_status};
    match command {
        Command::Status { admin } => {
            let s = admin.client()?.status().await?;
            if admin.json {
                return print_json(&s);
            }
            print!("{}", render_status(&s));
            if !s.ready {
                anyhow::bail!("the node is not ready");
            }
        }
        Command::Peers { admin } => {
            let p = admin.client()?.peers().await?;
            if admin.json {
                return print_json(&p);
            }
            print!("{}", render_peers(&p));
        }
        Command::Settlements { admin } => {
            let s = admin.client()?.settlements().await?;
            if admin.json {
                return print_json(&s);
            }
            print!("{}", render_settlements(&s));
        }
        Command::Pay {
            peer,
            amount,
            to,
            admin,
        } => {
            let request = ilp_bridge::admin::views::PayRequest { amount, to };
            let o = admin.client()?.pay(&peer, &request).await?;
            if admin.json {
                return print_json(&o);
            }
            print!("{}", render_pay(&o));
        }
        _ => anyhow::bail!("not an admin command"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ilp-bridge: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::ExampleConfig => {
            print!("{EXAMPLE_CONFIG}");
            Ok(())
        }
        Command::Run {
            config,
            ilp_kit_env,
            data_dir,
        } => {
            let mut node = match &config {
                Some(path) => NodeConfig::load(path)?,
                None if ilp_kit_env.is_some() => NodeConfig {
                    settlement_engine: None,
                    ..NodeConfig::default()
                },
                None => NodeConfig::default(),
            };
            if let Some(env) = &ilp_kit_env {
                let peers = ilp_kit::load_env(env)
                    .with_context(|| format!("reading ILP Kit configuration {}", env.display()))?;
                node.peers.extend(peers);
            }
            if let Some(dir) = data_dir {
                node.data_dir = dir;
            }
            init_tracing(&node.log)?;
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.enable_all();
            if let Some(threads) = node.worker_threads {
                builder.worker_threads(threads);
            }
            let runtime = builder.build().context("starting the async runtime")?;
            runtime.block_on(run_node(node))
        }
        command @ (Command::Status { .. }
        | Command::Peers { .. }
        | Command::Settlements { .. }
        | Command::Pay { .. }) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(admin_command(command))
        }
        Command::ImportLegacyStore {
            peer,
            rows,
            data_dir,
        } => {
            init_tracing(&LogConfig::default())?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(import(&peer, &rows, &data_dir))
        }
        Command::MigrateIlpKit {
            env_file,
            database_url,
            data_dir,
            config_out,
            dry_run,
            force,
            rippled,
        } => {
            // Warnings only: the report is the output.
            init_tracing(&LogConfig {
                filter: "warn".to_owned(),
                ..LogConfig::default()
            })?;
            let options = migrate::MigrateOptions {
                env_file,
                database_url,
                data_dir,
                config_out,
                dry_run,
                force,
                rippled,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let progress = migrate::progress::TerminalProgress::for_stderr();
            let report = runtime.block_on(migrate::migrate(&options, progress.as_ref()))?;
            print!("{report}");
            if !report.success() {
                anyhow::bail!("migration refused or unbalanced; see the report above");
            }
            Ok(())
        }
    }
}

fn init_tracing(log: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(s).context("RUST_LOG")?,
        _ => EnvFilter::try_new(&log.filter).context("log.filter")?,
    };
    // Logs go to stderr: stdout carries what a command prints (a report, a status), so a script can read it
    // without the log lines.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

async fn run_node(node: NodeConfig) -> anyhow::Result<()> {
    if node.peers.is_empty() && node.settlement_engine.is_none() {
        anyhow::bail!(
            "nothing to run: the configuration has no [[peer]] and no [settlement-engine]"
        );
    }
    let budget = fd_budget(&node)?;
    std::fs::create_dir_all(&node.data_dir)
        .with_context(|| format!("creating data folder {}", node.data_dir.display()))?;
    let store = DbOptions {
        min_free_bytes: node.min_free_bytes,
        keep_finished: node.keep_finished,
        ..budget.store
    };
    let db = Db::open_with(&node.data_dir, store)
        .with_context(|| format!("opening the database in {}", node.data_dir.display()))?;
    tracing::info!(
        data_dir = %node.data_dir.display(),
        peers = node.peers.len(),
        settlement_engine = node.settlement_engine.is_some(),
        "ilp-bridge starting"
    );
    let mut parts = Vec::new();
    if !node.peers.is_empty() {
        parts.push(Part::Peers);
    }
    if node.settlement_engine.is_some() {
        parts.push(Part::Engine);
    }
    // The view exists (and counts) whether or not [admin] serves it: it is also what logs transfer changes.
    let view = NodeView::new(Some(Arc::clone(&db)), &parts);
    // The admin listener starts first, so /health answers and /ready tells what is still starting.
    let admin = match &node.admin {
        Some(config) => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("[admin] listen: cannot listen on {}", config.listen))?;
            Some(
                ilp_bridge::admin::start(listener, view.clone(), &config.token)
                    .context("[admin] listener")?,
            )
        }
        None => None,
    };
    let admin_token = node.admin.as_ref().map(|a| a.token.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let peers = {
        let db = Arc::clone(&db);
        let options = NodeOptions {
            routing: node.routing.clone(),
            connections: budget.connections,
            ..NodeOptions::default()
        };
        let configs = node.peers;
        let modern = node.modern;
        let stop = wait_stop(stop_rx.clone());
        let view = view.clone();
        async move {
            if configs.is_empty() {
                return Ok(());
            }
            run_peers_observed(configs, modern, db, options, stop, |peers, bridge| {
                view.add_peers(peers, Some(bridge))
            })
            .await
            .context("BTP peers")
        }
    };
    let engine = {
        let db = Arc::clone(&db);
        let view = view.clone();
        let config = node.settlement_engine;
        let stop = wait_stop(stop_rx.clone());
        async move {
            match config {
                None => Ok(()),
                Some(config) => ilp_bridge::settlement::run_observed(config, db, stop, |engine| {
                    match &admin_token {
                        Some(token) => view.set_engine(engine, token),
                        None => view.set_up(Part::Engine, true),
                    }
                })
                .await
                .context("settlement engine"),
            }
        }
    };
    let signal = async {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    // A part that fails at start stops the others too.
    let guarded =
        |part: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>| {
            let stop_tx = stop_tx.clone();
            async move {
                let result = part.await;
                if result.is_err() {
                    let _ = stop_tx.send(true);
                }
                result
            }
        };
    let (peers, engine, ()) =
        tokio::join!(guarded(Box::pin(peers)), guarded(Box::pin(engine)), async {
            tokio::select! {
                () = signal => {},
                () = wait_stop(stop_rx.clone()) => {},
            }
        });
    if let Some(admin) = admin {
        admin.stop().await;
    }
    peers?;
    engine?;
    Ok(())
}

/// Raises the open file limit as far as the node can use it and divides it (see `ilp_bridge::fd_budget`);
/// refuses to start when it is too small to keep the store safe.
fn fd_budget(node: &NodeConfig) -> anyhow::Result<FdBudget> {
    use ilp_bridge::config::bridge::ModernTransport;
    // Bridged peers dial their modern connector (btp-client), or serve it ILP-over-HTTP.
    let modern_dialing = node
        .modern
        .values()
        .filter(|m| {
            matches!(
                m.transport,
                ModernTransport::BtpClient { .. } | ModernTransport::Http { .. }
            )
        })
        .count();
    let modern_http = node
        .modern
        .values()
        .filter(|m| matches!(m.transport, ModernTransport::Http { .. }))
        .count()
        * ilp_bridge::bridge::modern::http::ILP_HTTP_MAX_CONNECTIONS;
    let demand = FdDemand {
        dialing_peers: node.peers.iter().filter(|p| p.server.is_some()).count() + modern_dialing,
        http_connections: node
            .settlement_engine
            .as_ref()
            .map_or(0, ilp_bridge::settlement::http::connections_needed)
            + modern_http
            // Each settling pair serves the connector an RFC 38 API (engine limits) and credits it.
            + node.modern.values().filter(|m| m.settlement.is_some()).count()
                * (ilp_bridge::settlement::http::ENGINE_MAX_CONNECTIONS + 1),
    };
    let (limit, error) = raise_nofile_limit(FdBudget::wanted_soft_limit(demand));
    if let Some(error) = error {
        tracing::warn!(%error, soft_limit = limit.soft, hard_limit = ?limit.hard, "cannot raise the open file limit; keeping it");
    }
    let budget = FdBudget::plan(limit.soft, demand).context("file descriptor budget")?;
    let c = budget.connections;
    tracing::info!(
        soft_limit_before = limit.soft_before,
        soft_limit = limit.soft,
        hard_limit = ?limit.hard,
        store_max_open_files = budget.store.max_open_files,
        store_fds = budget.store_fds,
        reserved_fds = budget.reserved_fds,
        max_authenticated_sockets = c.max_authenticated,
        max_unauthenticated_sockets = c.max_unauthenticated,
        max_unauthenticated_per_address = c.max_unauthenticated_per_address,
        max_sockets_per_peer = c.max_sockets_per_peer,
        "file descriptor budget"
    );
    Ok(budget)
}

async fn import(peer: &str, rows: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(rows).with_context(|| format!("reading {}", rows.display()))?;
    let parsed = if text.trim_start().starts_with('{') {
        legacy_import::rows_from_json_object(&text)
    } else {
        legacy_import::rows_from_csv(&text)
    }
    .with_context(|| format!("parsing {}", rows.display()))?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data folder {}", data_dir.display()))?;
    let db = Db::open(data_dir).with_context(|| format!("opening {}", data_dir.display()))?;
    let stores = RocksStores::new(
        db,
        peer,
        channel_modules::store::Limit::Unbounded,
        channel_modules::store::Limit::Unbounded,
    );
    let report = legacy_import::import_legacy_rows(&stores, parsed)
        .await
        .context("importing")?;
    for log in &report.logs {
        println!(
            "log {:?}: balance {} (IF {}, OF {}), {} transfers, {} stale prepared cancelled{}",
            log.key,
            log.sums.balance(),
            log.sums.incoming_fulfilled,
            log.sums.outgoing_fulfilled,
            log.transfers,
            log.stale_cancelled,
            if log.already_imported {
                ", already imported"
            } else {
                ""
            }
        );
    }
    for key in &report.trackers {
        println!("max-value tracker {key:?} imported");
    }
    for warning in &report.warnings {
        println!("warning: {warning:?}");
    }
    Ok(())
}

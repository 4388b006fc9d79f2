//! `ringkv server`: builds the configuration from defaults, the TOML file, `RINGKV_*`
//! environment variables and flags (in rising precedence), then runs the node until Ctrl-C or
//! SIGTERM.

use anyhow::Context;
use clap::Args;
use ringkv_replica::SyncPolicy;
use ringkv_server::ServerConfig;
use ringkv_storage::EngineKind;
use std::path::PathBuf;

/// Flags of `ringkv server`. Each may also come from the environment variable named in its
/// help; a flag given on the command line wins over the variable, which wins over the file.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, env = "RINGKV_CONFIG")]
    config: Option<PathBuf>,
    /// This node's name in the cluster.
    #[arg(long, env = "RINGKV_NODE_ID")]
    node_id: Option<String>,
    /// Data directory [default: ./ringkv-data].
    #[arg(long, env = "RINGKV_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Storage engine: lsm, btree or memory [default: lsm].
    #[arg(long, env = "RINGKV_ENGINE")]
    engine: Option<EngineKind>,
    /// REST API address [default: 127.0.0.1:7080].
    #[arg(long, env = "RINGKV_HTTP")]
    http: Option<String>,
    /// Redis-protocol address [default: 127.0.0.1:7379].
    #[arg(long, env = "RINGKV_RESP")]
    resp: Option<String>,
    /// Node-to-node address [default: 127.0.0.1:7946].
    #[arg(long, env = "RINGKV_LISTEN")]
    listen: Option<String>,
    /// Address other nodes use to reach this one.
    #[arg(long, env = "RINGKV_ADVERTISE")]
    advertise: Option<String>,
    /// Seed nodes to join, comma-separated.
    #[arg(long, env = "RINGKV_JOIN", value_delimiter = ',')]
    join: Option<Vec<String>>,
    /// Failure domain (rack or data center).
    #[arg(long, env = "RINGKV_ZONE")]
    zone: Option<String>,
    /// Relative share of data this node takes.
    #[arg(long, env = "RINGKV_WEIGHT")]
    weight: Option<u32>,
    /// When writes are acknowledged: always (after fsync), periodic or none [default: always].
    #[arg(long, env = "RINGKV_SYNC")]
    sync: Option<SyncPolicy>,
    /// Threads serving REST and cluster requests [default: 0, one per core].
    #[arg(long, env = "RINGKV_IO_THREADS")]
    io_threads: Option<usize>,
    /// Event loops serving Redis-protocol connections, each committing its connections'
    /// writes itself; 0: one per core [default: 1].
    #[arg(long, env = "RINGKV_RESP_THREADS")]
    resp_threads: Option<usize>,
    /// A file holding the cluster secret, the same on every node: peers that do not prove
    /// they know it are refused.
    #[arg(long, env = "RINGKV_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// PEM certificate chain of this node for the cluster RPC (with --cluster-tls-key-file
    /// and --cluster-tls-ca-file): peers talk mutual TLS with certificates of the cluster CA.
    #[arg(long, env = "RINGKV_CLUSTER_TLS_CERT_FILE")]
    cluster_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert-file.
    #[arg(long, env = "RINGKV_CLUSTER_TLS_KEY_FILE")]
    cluster_tls_key_file: Option<PathBuf>,
    /// PEM certificates of the cluster CA that signs every node's certificate.
    #[arg(long, env = "RINGKV_CLUSTER_TLS_CA_FILE")]
    cluster_tls_ca_file: Option<PathBuf>,
    /// PEM certificate chain: serve REST and the Redis protocol over TLS (with
    /// --tls-key-file). SIGHUP reloads both files.
    #[arg(long, env = "RINGKV_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "RINGKV_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// While no user exists, serve only clients on this machine's loopback (true, the
    /// default), or every client as superuser (false: only on a network you trust).
    #[arg(long, env = "RINGKV_PROTECTED_MODE")]
    protected_mode: Option<bool>,
    /// The user clients that have not logged in act as, if it exists.
    #[arg(long, env = "RINGKV_DEFAULT_USER")]
    default_user: Option<String>,
    /// Set by `ringkv dev-cluster` only: its supervisor's address, which carries out the
    /// dashboard's chaos actions. A node without it refuses them.
    #[arg(long, env = "RINGKV_CHAOS_CONTROL", hide = true)]
    chaos_control: Option<String>,
    /// Log lines as human-readable text, or as JSON objects, one per line (for a log
    /// collector). RINGKV_LOG sets which lines (default: info).
    #[arg(long, env = "RINGKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text, coloured on a terminal.
    Text,
    /// One JSON object per line: timestamp, level, target, message and fields.
    Json,
}

impl ServerArgs {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        let set = |field: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                field.clone_from(value);
            }
        };
        set(&mut config.http, &self.http);
        set(&mut config.resp, &self.resp);
        set(&mut config.listen, &self.listen);
        set(&mut config.zone, &self.zone);
        if self.node_id.is_some() {
            config.node_id.clone_from(&self.node_id);
        }
        if self.advertise.is_some() {
            config.advertise.clone_from(&self.advertise);
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(join) = &self.join {
            config.join.clone_from(join);
        }
        if self.cluster_secret_file.is_some() {
            config
                .cluster_secret_file
                .clone_from(&self.cluster_secret_file);
        }
        for (field, flag) in [
            (
                &mut config.cluster_tls_cert_file,
                &self.cluster_tls_cert_file,
            ),
            (&mut config.cluster_tls_key_file, &self.cluster_tls_key_file),
            (&mut config.cluster_tls_ca_file, &self.cluster_tls_ca_file),
        ] {
            if flag.is_some() {
                field.clone_from(flag);
            }
        }
        if self.tls_cert_file.is_some() {
            config.tls_cert_file.clone_from(&self.tls_cert_file);
        }
        if self.tls_key_file.is_some() {
            config.tls_key_file.clone_from(&self.tls_key_file);
        }
        if self.default_user.is_some() {
            config.default_user.clone_from(&self.default_user);
        }
        if self.chaos_control.is_some() {
            config.chaos_control.clone_from(&self.chaos_control);
        }
        config.protected_mode = self.protected_mode.unwrap_or(config.protected_mode);
        config.engine = self.engine.unwrap_or(config.engine);
        config.weight = self.weight.unwrap_or(config.weight);
        config.sync = self.sync.unwrap_or(config.sync);
        config.io_threads = self.io_threads.unwrap_or(config.io_threads);
        config.resp_threads = self.resp_threads.unwrap_or(config.resp_threads);
        config.validate()?;
        Ok(config)
    }
}

/// Runs the node until it is told to stop.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    if args.print_config {
        print!("{}", toml_of(&config)?);
        return Ok(());
    }
    init_logging(args.log_format);
    make_panics_fatal();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(config.runtime_threads())
        .thread_name("ringkv-io")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = ringkv_server::start(config.clone()).await?;
        println!(
            "ringkv node {} serving http={} resp={} cluster={} engine={} data={} sync={} io_threads={} resp_threads={}",
            running.node.node_id,
            running.http_addr,
            running.resp_addr,
            running.cluster_addr,
            config.engine,
            config.data_dir.display(),
            config.sync,
            config.runtime_threads(),
            config.resp_loops()
        );
        wait_for_stop_signal().await?;
        tracing::info!("stopping: finishing in-flight requests");
        running.shutdown().await;
        anyhow::Ok(())
    })?;
    // The runtime (and with it the last reference to the node) is gone: the store has
    // drained its writer and synced.
    Ok(())
}

fn toml_of(config: &ServerConfig) -> anyhow::Result<String> {
    Ok(toml::to_string(config)?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// Makes a panic on any thread of the node end the process, logged: a thread that died
/// would otherwise leave the node answering `/healthz` while part of it can no longer serve
/// (a dead Redis-protocol loop, writer or flusher). Ending at once is safe: every write
/// acknowledged is in the log already, as after a kill -9, and a supervisor restarts the node.
fn make_panics_fatal() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            "a thread of the node panicked, so the node stops now (acknowledged writes are \
             durable; restart it): {info}"
        );
        report(info);
        std::process::abort();
    }));
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

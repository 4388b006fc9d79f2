//! The command-line client: `ringkv put/get/del/scan`, talking to one node's REST API.

use anyhow::{bail, Context};
use clap::Args;
use ringkv_client::{Client, Credentials};
use serde_json::json;

/// Options every client command takes.
#[derive(Args, Debug)]
pub struct Connection {
    /// The node to talk to.
    #[arg(
        long,
        env = "RINGKV_NODE",
        default_value = "http://127.0.0.1:7080",
        global = true
    )]
    node: String,
    /// Print machine-readable JSON instead of plain text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Replicas that must answer reads and acknowledge writes: one, quorum or all
    /// (default: quorum).
    #[arg(long, global = true)]
    consistency: Option<String>,
    /// Log in as this user (with --password).
    #[arg(long, env = "RINGKV_USER", global = true)]
    user: Option<String>,
    /// The user's password (better in the environment than on the command line, where
    /// other users of the machine can see it).
    #[arg(long, env = "RINGKV_PASSWORD", global = true, hide_env_values = true)]
    password: Option<String>,
    /// Log in with an API token instead of a user and password.
    #[arg(long, env = "RINGKV_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the certificate authorities to trust for an https:// node.
    #[arg(long, env = "RINGKV_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
}

impl Connection {
    /// A client of the chosen node, logged in as asked.
    pub fn client(&self) -> anyhow::Result<Client> {
        let mut client = Client::new(&self.node);
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            client = client.with_ca_certificates(&pem)?;
        }
        if let Some(level) = &self.consistency {
            client = client.with_consistency(level);
        }
        let credentials = match (&self.user, &self.password, &self.token) {
            (_, _, Some(token)) => Some(Credentials::Token(token.clone())),
            (Some(user), Some(password), None) => Some(Credentials::Password {
                user: user.clone(),
                password: password.clone(),
            }),
            (Some(_), None, None) => bail!("--user needs --password (or RINGKV_PASSWORD)"),
            (None, _, None) => None,
        };
        Ok(match credentials {
            Some(credentials) => client.with_credentials(credentials),
            None => client,
        })
    }
}

/// `ringkv put KEY VALUE`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// The key.
    key: String,
    /// The value (use - to read it from standard input).
    value: String,
    /// Expire after this many seconds.
    #[arg(long)]
    ttl: Option<u64>,
    #[command(flatten)]
    connection: Connection,
}

/// `ringkv get KEY`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key.
    key: String,
    /// Read only the asked node's own copy, not the cluster's (for operators).
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `ringkv del KEY`.
#[derive(Args, Debug)]
pub struct DelArgs {
    /// The key.
    key: String,
    #[command(flatten)]
    connection: Connection,
}

/// `ringkv scan PREFIX`.
#[derive(Args, Debug)]
pub struct ScanArgs {
    /// List keys starting with this (empty: all keys).
    #[arg(default_value = "")]
    prefix: String,
    /// Most keys to list.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    connection: Connection,
}

pub fn put(args: PutArgs) -> anyhow::Result<()> {
    let value = if args.value == "-" {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer)
            .context("reading the value from stdin")?;
        buffer
    } else {
        args.value.into_bytes()
    };
    let version = args.connection.client()?.put(&args.key, &value, args.ttl)?;
    if args.connection.json {
        println!("{}", json!({ "key": args.key, "version": version }));
    } else {
        println!("OK");
    }
    Ok(())
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = args.connection.client()?;
    let found = if args.local {
        client.get_local(&args.key)?
    } else {
        client.get(&args.key)?
    };
    let Some(value) = found else {
        if args.connection.json {
            println!("{}", json!({ "key": args.key, "found": false }));
        }
        bail!("key {:?} not found", args.key);
    };
    if args.connection.json {
        let text = String::from_utf8_lossy(&value.value);
        println!(
            "{}",
            json!({ "key": args.key, "value": text, "ttl": value.ttl, "version": value.version })
        );
    } else {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(&value.value)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub fn del(args: DelArgs) -> anyhow::Result<()> {
    let deleted = args.connection.client()?.delete(&args.key)?;
    if args.connection.json {
        println!("{}", json!({ "key": args.key, "deleted": deleted }));
    } else {
        println!(
            "{}",
            if deleted {
                "deleted"
            } else {
                "not found (nothing to delete)"
            }
        );
    }
    Ok(())
}

pub fn scan(args: ScanArgs) -> anyhow::Result<()> {
    let client = args.connection.client()?;
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    while keys.len() < args.limit {
        let page = client.list(
            &args.prefix,
            (args.limit - keys.len()).min(1000),
            cursor.as_deref(),
        )?;
        keys.extend(page.keys);
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    if args.connection.json {
        println!("{}", json!({ "keys": keys }));
    } else {
        for key in keys {
            println!("{key}");
        }
    }
    Ok(())
}

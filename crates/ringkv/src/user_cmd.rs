//! `ringkv user`: managing the users clients log in as (they spread to every node).

use crate::client_cmd::Connection;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Read;
use std::path::PathBuf;

/// `ringkv user ...`.
#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user, or change its password, tokens or grants.
    Add(AddArgs),
    /// Remove a user on every node.
    Remove {
        /// The user's name.
        name: String,
    },
    /// List the users and their grants.
    List,
    /// Show who this command's credentials log in as.
    Whoami,
}

/// `ringkv user add NAME`.
#[derive(Args, Debug)]
struct AddArgs {
    /// The user's name (A-Z a-z 0-9 _ . -).
    name: String,
    /// Read the new password from standard input (one line).
    #[arg(long, conflicts_with = "password_file")]
    password_stdin: bool,
    /// Read the new password from this file (its first line).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Make a new API token and print it (it is shown only once).
    #[arg(long)]
    new_token: bool,
    /// Revoke the user's tokens (before making a new one, if asked).
    #[arg(long)]
    revoke_tokens: bool,
    /// VERBS@KEYSPACE, repeatable, replacing the user's grants: verbs are read, write,
    /// admin or all; the keyspace a name, a prefix ending in *, or * (admin@* also allows
    /// cluster operations and managing users). E.g. --grant read,write@default.
    #[arg(long = "grant")]
    grants: Vec<String>,
}

/// Runs a `ringkv user` command.
pub fn run(args: UserArgs) -> anyhow::Result<()> {
    let client = args.connection.client()?;
    match args.command {
        UserCommand::Add(add) => {
            let password = read_password(&add)?;
            let mut request =
                json!({ "new_token": add.new_token, "revoke_tokens": add.revoke_tokens });
            if let Some(password) = password {
                request["password"] = json!(password);
            }
            if !add.grants.is_empty() {
                request["grants"] = json!(add.grants);
            }
            let shown = client
                .put_user(&add.name, &request)
                .with_context(|| format!("cannot save user {}", add.name))?;
            if args.connection.json {
                println!("{shown}");
                return Ok(());
            }
            println!("user {} saved: {}", add.name, describe(&shown));
            if let Some(token) = shown["new_token"].as_str() {
                println!("new token (shown only now): {token}");
            }
        }
        UserCommand::Remove { name } => {
            client
                .remove_user(&name)
                .with_context(|| format!("cannot remove user {name}"))?;
            println!("user {name} removed");
        }
        UserCommand::List => {
            let listed = client.users().context("cannot list users")?;
            if args.connection.json {
                println!("{listed}");
                return Ok(());
            }
            let users = listed["users"].as_array().cloned().unwrap_or_default();
            if users.is_empty() {
                println!("no users: clients on the nodes' loopback are let in as superuser");
            }
            for user in users {
                println!(
                    "{:<24} {}",
                    user["name"].as_str().unwrap_or("?"),
                    describe(&user)
                );
            }
        }
        UserCommand::Whoami => {
            let who = client.whoami().context("cannot ask who this is")?;
            if args.connection.json {
                println!("{who}");
                return Ok(());
            }
            let grants: Vec<&str> = who["grants"]
                .as_array()
                .map(|g| g.iter().filter_map(|g| g.as_str()).collect())
                .unwrap_or_default();
            println!(
                "{} {}",
                who["user"].as_str().unwrap_or("?"),
                grants.join(" ")
            );
        }
    }
    Ok(())
}

fn read_password(add: &AddArgs) -> anyhow::Result<Option<String>> {
    let text = if add.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the password from standard input")?;
        text
    } else if let Some(path) = &add.password_file {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?
    } else {
        return Ok(None);
    };
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(Some(password))
}

fn describe(user: &serde_json::Value) -> String {
    let grants: Vec<&str> = user["grants"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g.as_str()).collect())
        .unwrap_or_default();
    format!(
        "password={} tokens={} grants={}",
        if user["password"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
        user["tokens"].as_u64().unwrap_or(0),
        if grants.is_empty() {
            "(none)".into()
        } else {
            grants.join(" ")
        }
    )
}

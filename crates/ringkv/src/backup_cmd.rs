//! `ringkv backup` and `ringkv restore`: a node's records as of one moment to a file, and a
//! file's records merged into any cluster (see `ringkv_coordinator::backup`).

use anyhow::Context;
use clap::Args;
use ringkv_client::{Client, ClientError};
use ringkv_core::backup::{Frame, FrameReader, Header, Trailer};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes of record frames sent per restore request.
const BATCH_BYTES: usize = 4 << 20;

/// Records sent per restore request, at most.
const BATCH_RECORDS: usize = 2000;

/// Tries of one restore request before the restore gives up (a batch is safe to resend).
const TRIES: u32 = 6;

/// `ringkv backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The file to write (written beside it under a temporary name, and renamed once whole).
    #[arg(long)]
    out: PathBuf,
    /// Only this keyspace.
    #[arg(long)]
    keyspace: Option<String>,
    #[command(flatten)]
    connection: crate::client_cmd::Connection,
}

/// `ringkv restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    #[command(flatten)]
    connection: crate::client_cmd::Connection,
}

/// Streams the node's backup into `--out`, checking every frame as it arrives.
pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let client = args.connection.client()?;
    let partial = partial_path(&args.out);
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let result = (|| {
        let stream = client.backup(args.keyspace.as_deref())?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let spinner = spinner(args.connection.json);
        let mut frames = FrameReader::file(Tee {
            input: stream,
            copy: &mut out,
        })?;
        let (header, trailer) = read_all(&mut frames, |records, bytes| {
            spinner.set_message(format!(
                "{records} records, {}",
                indicatif::HumanBytes(bytes)
            ));
            spinner.tick();
            Ok(())
        })?;
        let bytes = frames.offset();
        drop(frames);
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        spinner.finish_and_clear();
        anyhow::Ok((header, trailer, bytes))
    })();
    let (header, trailer, bytes) = match result {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error.context("the backup failed; no file was written"));
        }
    };
    std::fs::rename(&partial, &args.out).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            args.out.display()
        )
    })?;
    if args.connection.json {
        println!(
            "{}",
            serde_json::json!({
                "file": args.out, "node": header.node, "taken_ms": header.taken_ms,
                "records": trailer.records, "damaged": trailer.damaged, "bytes": bytes,
            })
        );
    } else {
        println!(
            "backed up {} records ({}) of node {} to {}",
            trailer.records,
            indicatif::HumanBytes(bytes),
            header.node,
            args.out.display()
        );
    }
    if trailer.damaged > 0 {
        eprintln!(
            "warning: {} damaged records were left out; their other replicas hold them (back up another node, or run `ringkv cluster repair` first)",
            trailer.damaged
        );
    }
    Ok(())
}

/// Checks the whole file, creates the keyspaces it names, then sends its records in batches.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let client = args.connection.client()?;
    let open = || -> anyhow::Result<FrameReader<BufReader<File>>> {
        let file = File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        Ok(FrameReader::file(BufReader::with_capacity(1 << 20, file))?)
    };
    // Checked first, so that a damaged or cut file restores nothing.
    let (header, trailer) = read_all(&mut open()?, |_, _| Ok(()))
        .with_context(|| format!("{} cannot be restored", args.file.display()))?;
    create_keyspaces(&client, &header)?;
    let total = std::fs::metadata(&args.file)?.len();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "restore [{bar:30}] {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)",
        )
        .expect("the template is valid"),
    );
    if args.connection.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut frames = open()?;
    let (mut batch, mut in_batch, mut restored) = (Vec::with_capacity(BATCH_BYTES), 0, 0u64);
    while let Some(frame) = frames.next_frame()? {
        if let Frame::Record(_) = frame {
            frame.encode_into(&mut batch);
            in_batch += 1;
        }
        if batch.len() >= BATCH_BYTES || in_batch >= BATCH_RECORDS {
            restored += send(&client, &batch)?;
            batch.clear();
            in_batch = 0;
            bar.set_position(frames.offset());
            bar.set_message(format!("{restored} records"));
        }
    }
    if !batch.is_empty() {
        restored += send(&client, &batch)?;
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        restored == trailer.records,
        "restored {restored} records, but the backup says it holds {}",
        trailer.records
    );
    if args.connection.json {
        println!(
            "{}",
            serde_json::json!({ "file": args.file, "node": header.node, "taken_ms": header.taken_ms, "records": restored })
        );
    } else {
        println!(
            "restored {restored} records from {} (a backup of node {})",
            args.file.display(),
            header.node
        );
    }
    Ok(())
}

/// Reads every frame, calling `progress` with the records and bytes so far; returns the
/// header and trailer, and fails unless the frames are a whole backup.
fn read_all<R: Read>(
    frames: &mut FrameReader<R>,
    mut progress: impl FnMut(u64, u64) -> anyhow::Result<()>,
) -> anyhow::Result<(Header, Trailer)> {
    let header = match frames.next_frame()? {
        Some(Frame::Header(header)) => header,
        _ => anyhow::bail!("the backup does not start with its header"),
    };
    let mut records = 0;
    loop {
        match frames.next_frame()? {
            Some(Frame::Record(_)) => records += 1,
            Some(Frame::End(trailer)) => {
                anyhow::ensure!(
                    trailer.records == records,
                    "the backup holds {records} records but its trailer says {}",
                    trailer.records
                );
                anyhow::ensure!(
                    frames.next_frame()?.is_none(),
                    "the backup goes on after its trailer"
                );
                return Ok((header, trailer));
            }
            Some(Frame::Header(_)) => anyhow::bail!("the backup has a second header"),
            None => anyhow::bail!(
                "the backup ends after {records} records without its trailer: it was cut short"
            ),
        }
        if records % 1000 == 0 {
            progress(records, frames.offset())?;
        }
    }
}

/// Creates each keyspace of the backup that the cluster lacks, with the backup's settings.
fn create_keyspaces(client: &Client, header: &Header) -> anyhow::Result<()> {
    for keyspace in &header.keyspaces {
        match client.keyspace_settings(&keyspace.name)? {
            None => {
                client
                    .define_keyspace(&keyspace.name, keyspace.replication, &keyspace.conflict)
                    .with_context(|| format!("cannot create keyspace {}", keyspace.name))?;
            }
            Some((replication, conflict))
                if (replication, conflict.as_str())
                    != (keyspace.replication, keyspace.conflict.as_str()) =>
            {
                eprintln!(
                    "note: keyspace {} exists here with replication {replication} and {conflict}; the backup's was {} and {}; keeping this cluster's",
                    keyspace.name, keyspace.replication, keyspace.conflict
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Sends one batch, trying again (it is safe to) while the cluster is unavailable or
/// unreachable.
fn send(client: &Client, batch: &[u8]) -> anyhow::Result<u64> {
    let mut wait = Duration::from_millis(200);
    for attempt in 1.. {
        match client.restore_records(batch) {
            Ok(records) => return Ok(records),
            Err(error) if attempt < TRIES && retryable(&error) => {
                eprintln!("restore: {error}; trying again in {wait:?}");
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(error) => return Err(error.into()),
        }
    }
    unreachable!("the loop returns")
}

fn retryable(error: &ClientError) -> bool {
    matches!(error, ClientError::Transport { .. }) || error.status() == Some(503)
}

fn spinner(hidden: bool) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::new_spinner();
    if hidden {
        spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    spinner
}

/// `out` with `.partial` added to its name.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// A reader that writes a copy of everything it reads.
struct Tee<'a, R, W> {
    input: R,
    copy: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.input.read(buffer)?;
        self.copy.write_all(&buffer[..read])?;
        Ok(read)
    }
}

//! `GET /v1/backup` streams a point-in-time backup of this node; `POST /v1/restore` merges a
//! batch of a backup's records into the cluster (`ringkv backup` and `ringkv restore` drive
//! them; see `ringkv_coordinator::backup`).

use super::error::ApiError;
use super::keys::Params;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ringkv_coordinator::backup::{self, Backup, RestoreError};
use ringkv_coordinator::consistency::Consistency;
use ringkv_coordinator::keyspaces::REPLICATION_MAX;
use ringkv_coordinator::Node;
use ringkv_core::backup::{Frame, FrameReader, FRAME_BYTES_MAX};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Largest body of a restore request: one largest record's frame, or batches of smaller ones.
pub const RESTORE_BODY_BYTES_MAX: usize = FRAME_BYTES_MAX + 8;

/// Pieces of a backup that may wait to be sent: the snapshot is read only as fast as the
/// client takes the stream.
const CHUNKS_QUEUED: usize = 4;

/// Query parameters of `GET /v1/backup`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// Only this keyspace.
    keyspace: Option<String>,
}

/// Streams a backup of this node's records (of one keyspace, if asked), as of the moment the
/// request arrived. An error part-way ends the stream without its trailer, which the reader
/// refuses.
pub async fn backup(
    State(node): State<Arc<Node>>,
    Params(params): Params<BackupParams>,
) -> Result<Response, ApiError> {
    if let Some(name) = &params.keyspace {
        if node.keyspaces.get(name).is_none() {
            return Err(ApiError::keyspace_not_found(name));
        }
    }
    let opening = Arc::clone(&node);
    let keyspace = params.keyspace.clone();
    let mut backup =
        tokio::task::spawn_blocking(move || Backup::open(&opening, keyspace.as_deref()))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "backup task failed",
                )
            })??;
    let (chunks, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_QUEUED);
    tokio::task::spawn_blocking(move || loop {
        let next = backup.next_chunk().map_err(std::io::Error::other);
        let done = !matches!(next, Ok(Some(_)));
        if let Some(chunk) = next.transpose() {
            if chunks.blocking_send(chunk.map(Bytes::from)).is_err() {
                return;
            }
        }
        if done {
            return;
        }
    });
    let body = Body::from_stream(tokio_stream_of(receiver));
    let name = format!(
        "attachment; filename=\"ringkv-{}-{}.backup\"",
        node.node_id
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
        node.now_ms()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response())
}

/// The receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |context| receiver.poll_recv(context))
}

/// Query parameters of `POST /v1/restore`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// How many replicas must take each record: one | quorum (the default) | all.
    consistency: Option<String>,
}

/// Merges the record frames of the body into the replicas of their keys.
pub async fn restore(
    State(node): State<Arc<Node>>,
    Params(params): Params<RestoreParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let consistency = Consistency::parse(params.consistency.as_deref(), &[], REPLICATION_MAX)
        .map_err(ApiError::bad_request)?;
    let mut reader = FrameReader::new(body.as_ref());
    let mut records = Vec::new();
    while let Some(frame) = reader
        .next_frame()
        .map_err(|error| ApiError::bad_request(error.to_string()))?
    {
        match frame {
            Frame::Record(record) => records.push(record),
            Frame::Header(_) | Frame::End(_) => {
                return Err(ApiError::bad_request(
                    "a restore request holds record frames only, not a backup's header or trailer",
                ))
            }
        }
    }
    let restored =
        backup::restore(&node, records, consistency)
            .await
            .map_err(|error| match error {
                RestoreError::UnknownKeyspace(name) => ApiError::keyspace_not_found(&name),
                RestoreError::Invalid { .. } => ApiError::bad_request(error.to_string()),
                RestoreError::Coordinator(error) => error.into(),
            })?;
    Ok((StatusCode::OK, Json(json!({ "records": restored }))).into_response())
}

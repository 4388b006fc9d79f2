//! The threads that serve Redis-protocol connections. Each runs an event loop of its own (a
//! current-thread tokio runtime) and commits its connections' writes itself whenever it has
//! run everything it could and is about to wait for the network, as Redis's one thread does
//! (see [`local::commit_here`]): a SET of a small group crosses no thread on its way
//! to the disk and back. Accepted connections go to the loop with the fewest open.
//!
//! A loop reads the engine in place, as the request threads do: a read that has to wait for
//! the disk holds up the loop's other connections, which is why `resp_threads` can be raised
//! for data sets much larger than memory.

use ringkv_coordinator::coordinator::local;
use ringkv_coordinator::node::Node;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_util::task::TaskTracker;

/// The event loops of one node's Redis-protocol server.
pub struct RespLoops {
    loops: Vec<EventLoop>,
}

struct EventLoop {
    runtime: tokio::runtime::Handle,
    /// The connections served on this loop.
    connections: TaskTracker,
    /// Answered once the loop's thread has stopped and let go of everything it held.
    stopped: oneshot::Receiver<()>,
}

impl RespLoops {
    /// Starts `count` loops (at least one) for `node`'s connections. They run until `stop`
    /// turns true or its sender is gone, then wait for their connections to end, commit what
    /// those queued, and stop.
    pub fn start(
        count: usize,
        node: &Arc<Node>,
        stop: &watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let loops = (0..count.max(1))
            .map(|index| EventLoop::start(index, Arc::clone(node), stop.clone()))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { loops })
    }

    /// Serves `stream` with `serve` on the loop with the fewest connections; `serve` gets
    /// the stream registered with that loop.
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(chosen) = self.loops.iter().min_by_key(|l| l.connections.len()) else {
            return;
        };
        // A socket belongs to the runtime that registered it: it moves over as a plain one.
        let Ok(stream) = stream.into_std() else {
            return;
        };
        let serving = async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                serve(stream).await;
            }
        };
        chosen.connections.spawn_on(serving, &chosen.runtime);
    }

    /// Waits until every loop has stopped.
    pub async fn stopped(self) {
        for event_loop in self.loops {
            let _ = event_loop.stopped.await;
        }
    }
}

/// The stack of each event loop's thread: a main thread's 8 MiB rather than a spawned
/// thread's 2. Every connection's command runs on it, and `EXEC` runs a transaction's
/// commands inside its own future: in an unoptimized build those nested futures outgrew 2 MiB
/// once writes could take a strong keyspace's path. It is address space, touched only as deep
/// as it is used.
const LOOP_STACK_BYTES: usize = 8 << 20;

impl EventLoop {
    fn start(
        index: usize,
        node: Arc<Node>,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(local::commit_parked)
            .build()?;
        let handle = runtime.handle().clone();
        let connections = TaskTracker::new();
        let (done, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("ringkv-resp-{index}"))
            .stack_size(LOOP_STACK_BYTES)
            .spawn({
                let connections = connections.clone();
                move || {
                    runtime.block_on(async {
                        let commits = local::commit_here(&node);
                        drop(node);
                        // A stop, or the sender gone with the node it served.
                        let _ = stop.wait_for(|stop| *stop).await;
                        // The connections see the same stop and end: wait for them while
                        // this thread still commits their writes.
                        connections.close();
                        connections.wait().await;
                        drop(commits);
                    });
                    drop(runtime);
                    let _ = done.send(());
                }
            })?;
        Ok(Self {
            runtime: handle,
            connections,
            stopped,
        })
    }
}

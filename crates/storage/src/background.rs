//! Background threads (flushing memtables, the LSM tree's compactions, sweeping) run at a
//! lower CPU priority than the threads that serve requests, as RocksDB lowers its
//! compaction pool's (`Env::LowerThreadPoolCPUPriority`). Their work is not on any request's
//! path, but on a small machine it competes for the same cores: a request thread woken while
//! a flush runs waits for the scheduler to give it a core. At a lower priority it gets one at
//! once, and the background work still gets every core left idle. Measured on 2 cores
//! (`redis-benchmark -t set -n 1000000 -c 50 -d 100 -P 16`, sync always, 8 runs alternating
//! with a build without this): median p99 11.5 ms instead of 13.1 ms (lower in 6 of 8), and
//! median throughput 259 k instead of 253 k SETs/s, within that machine's noise.
//!
//! The files such threads write in bulk are also synced as they go ([`PacedFile`]), so that
//! the disk never holds so much of them that a request's log sync waits behind it.

/// The nice value background threads take: well below requests (a nice-0 thread gets about
/// ten times its share of a contended core), not starved (a flush that fell behind would
/// stall writes, which then leave it the cores).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`]; threads it starts from
/// then on inherit it. On Linux the nice value is per thread, so the rest of the process is
/// untouched. Lowering one's own priority needs no privilege; where it fails anyway (another
/// system, a sandbox) the thread runs on at its priority, which is only slower.
pub fn lower_this_thread() {
    // `None`: the calling thread (Linux's PRIO_PROCESS with who = 0 names the caller's task).
    if let Err(error) = rustix::process::setpriority_process(None, BACKGROUND_NICE) {
        tracing::debug!(%error, "could not lower a background thread's priority");
    }
}

/// Bytes a background writer writes between syncs ([`PacedFile`]).
pub const BACKGROUND_SYNC_BYTES: u64 = 1 << 20;

/// A file written in the background (a log file made ahead of time, a snapshot), synced
/// every [`BACKGROUND_SYNC_BYTES`] as it is written: an fsync of the log, which clients wait
/// for, flushes the disk's cache, so it waits for every write the disk holds, and one that
/// came while tens of MB of background writes were in flight took 6-50 ms instead of 0.1.
/// Against the memory engine, 3 runs of `redis-benchmark -t set -n 400000 -c 50 -P 16` twice
/// over, alternating: 4-6 log syncs over 6.4 ms instead of 14-28, and the slowest SET of a
/// run 10-17 ms instead of 11-66 ms.
pub struct PacedFile {
    file: std::fs::File,
    unsynced: u64,
}

impl PacedFile {
    /// Paces the writes to `file`.
    pub fn new(file: std::fs::File) -> Self {
        Self { file, unsynced: 0 }
    }

    /// The file, its last writes not synced yet.
    pub fn into_inner(self) -> std::fs::File {
        self.file
    }
}

impl std::io::Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        self.unsynced += written as u64;
        if self.unsynced >= BACKGROUND_SYNC_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let lowered = std::thread::spawn(|| {
            lower_this_thread();
            let own = rustix::process::getpriority_process(None).unwrap();
            let child = std::thread::spawn(|| rustix::process::getpriority_process(None));
            (own, child.join().unwrap().unwrap())
        });
        let (own, inherited) = lowered.join().unwrap();
        assert_eq!(own, before.max(BACKGROUND_NICE));
        assert_eq!(inherited, own, "threads it starts inherit it");
        let after = rustix::process::getpriority_process(None).unwrap();
        assert_eq!(after, before, "the rest of the process keeps its priority");
    }
}

//! Helpers shared by the storage tests.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Waits, a bounded time, until a log file made ahead of time is ready at `spare` (a file is
/// there only then), at least `bytes` long.
pub fn wait_for_spare(spare: &Path, bytes: u64) {
    for _ in 0..1000 {
        if std::fs::metadata(spare).is_ok_and(|m| m.len() >= bytes) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no log file was made ahead of time within 10 s");
}

/// The files a log was written into, seen by name over a run: an inode seen under two names is
/// one file renamed, a retired log written over as a later one. One handle per file is held
/// open, so that a file deleted meanwhile keeps its inode number (the file system would give
/// it to a new file, which would look like the same one).
#[derive(Default)]
pub struct LogFilesSeen {
    names_by_inode: HashMap<u64, (File, BTreeSet<PathBuf>)>,
}

impl LogFilesSeen {
    /// Notes the files now at `logs` (one deleted since it was listed is passed over).
    pub fn look(&mut self, logs: &[PathBuf]) {
        for log in logs {
            let Ok(file) = File::open(log) else { continue };
            let inode = file.metadata().unwrap().ino();
            let (_, names) = self
                .names_by_inode
                .entry(inode)
                .or_insert_with(|| (file, BTreeSet::new()));
            names.insert(log.clone());
        }
    }

    /// How many files were seen as more than one log.
    pub fn written_over(&self) -> usize {
        self.names_by_inode
            .values()
            .filter(|(_, names)| names.len() > 1)
            .count()
    }
}

//! The engines' background threads run below the priority of the threads that call them (see
//! `ringkv_storage::background`). A test binary of its own: the threads it looks at are the
//! ones this test starts.

use ringkv_storage::background::BACKGROUND_NICE;
use ringkv_storage::lsm::LsmEngine;
use std::path::Path;

/// The nice value of a thread, from its `stat` (field 19; the name before it, in
/// parentheses, may hold spaces).
fn nice_of(task: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(16)?.parse().ok()
}

/// The nice values of this process's threads named `name` (as the kernel shortens it).
fn nice_of_threads(name: &str) -> Vec<i32> {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|task| {
            let task = task.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            (comm.trim_end() == name).then(|| nice_of(&task)).flatten()
        })
        .collect()
}

#[test]
fn the_lsm_engines_background_threads_run_below_their_caller() {
    let own = || nice_of(Path::new("/proc/thread-self")).unwrap();
    let before = own();
    let dir = tempfile::tempdir().unwrap();
    let _engine = LsmEngine::open(dir.path()).unwrap();
    let lowered = before.max(BACKGROUND_NICE);
    for name in ["fjall:worker", "ringkv-lsm-flus"] {
        // A new thread names itself and lowers its priority once it runs, which may be a
        // moment after the engine is open: look again for a while.
        let mut nice = nice_of_threads(name);
        for _ in 0..100 {
            if !nice.is_empty() && nice.iter().all(|&n| n == lowered) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            nice = nice_of_threads(name);
        }
        assert!(!nice.is_empty(), "no {name} thread");
        assert!(nice.iter().all(|&n| n == lowered), "{name}: {nice:?}");
    }
    assert_eq!(
        own(),
        before,
        "the thread that opened the engine keeps its priority"
    );
}

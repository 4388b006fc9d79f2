//! Runs the conformance suite (`ringkv_storage::conformance`) against every engine, and
//! against the lsm and btree engines with memtables so small that nearly every write seals
//! one, so the suite's reads find data in the tables, in sealed memtables and in the active
//! one.

use ringkv_storage::btree::BtreeEngine;
use ringkv_storage::buffered::BufferOptions;
use ringkv_storage::lsm::{LsmEngine, LsmOptions};
use ringkv_storage::{conformance, open, Engine, EngineKind};
use std::path::Path;
use std::sync::Arc;

macro_rules! suite_for {
    ($engine:ident, $open:expr) => {
        mod $engine {
            use super::*;

            fn opener() -> impl Fn(&Path) -> Arc<dyn Engine> {
                $open
            }

            #[test]
            fn point_operations() {
                conformance::point_operations(&opener());
            }

            #[test]
            fn exact_bytes() {
                conformance::exact_bytes(&opener());
            }

            #[test]
            fn keys_up_to_the_engine_limit() {
                conformance::keys_up_to_the_engine_limit(&opener());
            }

            #[test]
            fn batches_apply_in_order() {
                conformance::batches_apply_in_order(&opener());
            }

            #[test]
            fn prefix_scans_resume_after_a_key() {
                conformance::prefix_scans_resume_after_a_key(&opener());
            }

            #[test]
            fn range_scans() {
                conformance::range_scans(&opener());
            }

            #[test]
            fn snapshots_are_points_in_time() {
                conformance::snapshots_are_points_in_time(&opener());
            }

            #[test]
            fn reopen_after_close() {
                conformance::reopen_after_close(&opener());
            }

            #[test]
            fn concurrent_writers() {
                conformance::concurrent_writers(&opener());
            }

            #[test]
            fn matches_a_model() {
                for seed in 0..8 {
                    conformance::matches_a_model(&opener(), seed);
                }
            }
        }
    };
}

fn of_kind(kind: EngineKind) -> impl Fn(&Path) -> Arc<dyn Engine> {
    move |path| open(kind, path).expect("engine opens")
}

fn lsm_flushing_often(path: &Path) -> Arc<dyn Engine> {
    let options = LsmOptions {
        memtable_bytes: 512,
    };
    Arc::new(LsmEngine::open_with(path, options).expect("engine opens"))
}

suite_for!(lsm, of_kind(EngineKind::Lsm));
suite_for!(lsm_flushing_often, lsm_flushing_often);
fn btree_flushing_often(path: &Path) -> Arc<dyn Engine> {
    let options = BufferOptions {
        memtable_bytes: 512,
    };
    Arc::new(BtreeEngine::open_btree(path, options).expect("engine opens"))
}

suite_for!(btree, of_kind(EngineKind::Btree));
suite_for!(btree_flushing_often, btree_flushing_often);
suite_for!(memory, of_kind(EngineKind::Memory));

//! Runs the conformance suite (`ringkv_storage::conformance`) against every engine.

use ringkv_storage::{conformance, open, EngineKind};

macro_rules! suite_for {
    ($engine:ident, $kind:expr) => {
        mod $engine {
            use super::*;

            fn opener() -> impl Fn(&std::path::Path) -> std::sync::Arc<dyn ringkv_storage::Engine> {
                |path| open($kind, path).expect("engine opens")
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

suite_for!(lsm, EngineKind::Lsm);
suite_for!(btree, EngineKind::Btree);
suite_for!(memory, EngineKind::Memory);

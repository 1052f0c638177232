#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Blob store tests: one conformance suite (`conformance`) run against every backend — local
//! disk, and S3 through a throwaway `s3s-fs` server (skipped with a message when it is not
//! installed, a failure when `CI=true`).

mod conformance;
mod fixture;
mod regional;
mod s3s;

/// Runs each conformance function once per backend, as `local::NAME` and `s3::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = crate::fixture::local();
                    crate::conformance::$name(&f).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(f) = crate::fixture::s3().await else { return };
                    crate::conformance::$name(&f).await;
                }
            )*
        }
    };
}

conformance!(
    round_trip,
    digest_mismatch_stores_nothing,
    incomplete_upload_stores_nothing,
    too_large_stores_nothing,
    multipart_sized_upload,
    corrupted_object_is_detected_and_quarantined,
    concurrent_puts_of_the_same_bytes,
    list_touch_and_delete_if_untouched,
);

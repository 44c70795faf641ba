//! End-to-end check of `testenv::s3`: a real versitygw takes objects written the way the runner
//! writes them (`object_store`, configured from [`S3Server::credentials_env`] only), refuses a
//! wrong secret, and [`S3Server::list`] / [`S3Server::get`] / [`S3Server::lines`] read them back.
//!
//! Needs `bash tools/ensure-tools.sh`; fails (never skips) when versitygw is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use testenv::s3::S3Server;

/// An S3 client built from `vars` alone, as `AmazonS3Builder::from_env` builds the runner's.
fn store_from(vars: &std::collections::BTreeMap<String, String>, bucket: &str) -> impl ObjectStore {
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
    for (key, value) in vars {
        let key = AmazonS3ConfigKey::from_str(&key.to_ascii_lowercase())
            .unwrap_or_else(|e| panic!("object_store does not know {key}: {e}"));
        builder = builder.with_config(key, value);
    }
    builder.build().expect("building the S3 client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_written_through_s3_are_listed_and_read_back() {
    let server = S3Server::start("results")
        .await
        .unwrap_or_else(|e| panic!("cannot start versitygw: {e}"));
    assert!(
        server.list("").await.unwrap().is_empty(),
        "a new bucket is empty"
    );

    let store = store_from(&server.credentials_env(&server.endpoint()), server.bucket());
    for (key, body) in [
        ("run-1/part-00001.jsonl", "{\"id\":\"c\"}\n"),
        ("run-1/part-00000.jsonl", "{\"id\":\"a\"}\n{\"id\":\"b\"}\n"),
        ("other/part-00000.jsonl", "{\"id\":\"x\"}\n"),
    ] {
        store
            .put(&Path::from(key), PutPayload::from(body.as_bytes().to_vec()))
            .await
            .unwrap_or_else(|e| panic!("PutObject {key}: {e}"));
    }

    assert_eq!(
        server.list("run-1").await.unwrap(),
        ["run-1/part-00000.jsonl", "run-1/part-00001.jsonl"]
    );
    assert_eq!(server.list("").await.unwrap().len(), 3);
    assert_eq!(
        server.get("other/part-00000.jsonl").await.unwrap(),
        b"{\"id\":\"x\"}\n"
    );
    assert_eq!(
        server.lines("run-1/").await.unwrap(),
        ["{\"id\":\"a\"}", "{\"id\":\"b\"}", "{\"id\":\"c\"}"]
    );
    assert_eq!(server.url("/run-1/"), "s3://results/run-1");
    // The posix backend keeps each object as a file under the bucket's directory.
    let on_disk = server.dir().join("data/results/run-1/part-00000.jsonl");
    assert!(on_disk.is_file(), "{} missing", on_disk.display());

    let mut wrong = server.credentials_env(&server.endpoint());
    wrong.insert("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into());
    let refused = store_from(&wrong, server.bucket())
        .put(
            &Path::from("run-1/forged.jsonl"),
            PutPayload::from_static(b"x"),
        )
        .await;
    assert!(refused.is_err(), "a wrong secret must be refused");
    assert_eq!(server.list("run-1").await.unwrap().len(), 2);
    assert!(
        !format!("{server:?}").contains(server.secret_access_key()),
        "Debug must not print the secret"
    );

    server.shutdown().await.expect("stopping versitygw");
}

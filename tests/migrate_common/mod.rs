//! Running the `ilp-bridge` binary's `migrate-ilp-kit` (and its other commands) from the migration tests, in a
//! clean ILP Kit environment, and reading its report.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::Stdio;

use crate::legacy_common::R;

/// What a run of the binary printed and how it ended.
pub(crate) struct Output {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the ilp-bridge binary with `args` and a clean ILP Kit environment (the env.list alone decides).
pub(crate) async fn cli(args: &[&str]) -> R<Output> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ilp-bridge"))
        .args(args)
        .env_remove("DB_URI")
        .env_remove("API_DB_URI")
        .env_remove("CONNECTOR_LEDGERS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .await?;
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `migrate-ilp-kit --env-file env --data-dir data --config-out config` and `extra`.
pub(crate) async fn migrate(env: &Path, data: &Path, config: &Path, extra: &[&str]) -> R<Output> {
    let (env, data, config) = (
        env.display().to_string(),
        data.display().to_string(),
        config.display().to_string(),
    );
    let mut args = vec![
        "migrate-ilp-kit",
        "--env-file",
        &env,
        "--data-dir",
        &data,
        "--config-out",
        &config,
    ];
    args.extend_from_slice(extra);
    cli(&args).await
}

/// Fails unless the report holds `text`.
pub(crate) fn assert_has(out: &Output, text: &str) {
    assert!(
        out.stdout.contains(text),
        "missing {text:?} in the report:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

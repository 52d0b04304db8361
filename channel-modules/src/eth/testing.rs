//! [`Anvil`]: a throw-away local Ethereum chain per test (Foundry's `anvil`, installed by
//! `npm ci` in `tests/node/chain`). It listens on a free loopback port (`--port 0`; the port is read from its
//! "Listening on" line), exposes its funded dev keys, and is killed by PID when dropped.
//!
//! The binary is `$ANVIL_BIN` if set, else `tests/node/chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil`
//! in the workspace. [`Anvil::for_test`] skips (returns `None`) when it is missing, except under `CI=true`, where
//! a missing chain is a failure.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use super::rpc::RpcClient;
use super::EthError;

/// Environment variable overriding the anvil binary path.
pub const ANVIL_BIN_ENV: &str = "ANVIL_BIN";
/// How long anvil may take to print its listening address.
pub const ANVIL_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Number of funded dev accounts anvil creates (its default).
pub const ANVIL_DEV_ACCOUNTS: usize = 10;
/// The chain ID anvil runs when not given `--chain-id` (claims signed for a test chain commit to it).
pub const ANVIL_DEFAULT_CHAIN_ID: u64 = 31337;
/// Path of the npm-installed binary relative to the workspace root.
pub const ANVIL_WORKSPACE_PATH: &str =
    "tests/node/chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// Errors starting anvil.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnvilError {
    /// The binary is not where we looked.
    #[error("anvil binary not found at {0} (run `npm ci` in tests/node/chain or set ANVIL_BIN)")]
    NotFound(PathBuf),
    /// It could not be started or did not report its address in time.
    #[error("anvil failed to start: {0}")]
    Start(String),
}

/// A running anvil, killed on drop.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    url: String,
    keys: Vec<String>,
}

/// Where the anvil binary is expected.
pub fn anvil_path() -> PathBuf {
    match std::env::var_os(ANVIL_BIN_ENV) {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(ANVIL_WORKSPACE_PATH),
    }
}

impl Anvil {
    /// Starts anvil with extra command-line `args` (e.g. `["--block-time", "1"]`).
    pub fn start(args: &[&str]) -> Result<Anvil, AnvilError> {
        let path = anvil_path();
        if !path.is_file() {
            return Err(AnvilError::NotFound(path));
        }
        let mut child = Command::new(&path)
            .args(["--port", "0", "--host", "127.0.0.1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| AnvilError::Start(e.to_string()))?;
        let stdout = match child.stdout.take() {
            Some(stdout) => stdout,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AnvilError::Start("no stdout".to_owned()));
            }
        };
        let (tx, rx) = mpsc::channel();
        // The reader keeps draining anvil's output (it logs every call) so the pipe never fills.
        std::thread::spawn(move || {
            let mut keys = Vec::new();
            let mut in_keys = false;
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sent {
                    continue;
                }
                let trimmed = line.trim();
                if trimmed.starts_with("Private Keys") {
                    in_keys = true;
                } else if trimmed.starts_with("Wallet") {
                    in_keys = false;
                } else if in_keys {
                    if let Some((_, key)) = trimmed.split_once(") ") {
                        keys.push(key.to_owned());
                    }
                } else if let Some(addr) = trimmed.strip_prefix("Listening on ") {
                    let _ = tx.send((addr.to_owned(), std::mem::take(&mut keys)));
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(ANVIL_START_TIMEOUT) {
            Ok((addr, keys)) if keys.len() == ANVIL_DEV_ACCOUNTS => Ok(Anvil {
                child,
                url: format!("http://{addr}"),
                keys,
            }),
            Ok((_, keys)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(AnvilError::Start(format!(
                    "expected {ANVIL_DEV_ACCOUNTS} dev keys, read {}",
                    keys.len()
                )))
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(AnvilError::Start("no \"Listening on\" line".to_owned()))
            }
        }
    }

    /// Starts a default anvil for a test. Returns `None` (and says why on stderr) when the binary is missing,
    /// unless `CI=true`, where it panics: CI must run these tests.
    pub fn for_test() -> Option<Anvil> {
        Self::for_test_with(&[])
    }

    /// [`Anvil::for_test`] with extra command-line `args` (e.g. `["--chain-id", "31338"]`).
    pub fn for_test_with(args: &[&str]) -> Option<Anvil> {
        match Anvil::start(args) {
            Ok(anvil) => Some(anvil),
            Err(err @ AnvilError::NotFound(_)) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true but {err}");
                }
                eprintln!("skipping: {err}");
                None
            }
            Err(err) => panic!("{err}"),
        }
    }

    /// The JSON-RPC URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The OS process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The hex private key of funded dev account `index` (0..10). Panics on a bad index (test helper).
    pub fn dev_key(&self, index: usize) -> &str {
        &self.keys[index]
    }

    /// A JSON-RPC client for this chain.
    pub fn client(&self) -> Result<RpcClient, EthError> {
        RpcClient::new(&self.url)
    }

    /// Mines `blocks` empty blocks (`anvil_mine`).
    pub async fn mine(&self, blocks: u64) -> Result<(), EthError> {
        self.client()?
            .call("anvil_mine", json!([format!("0x{blocks:x}")]))
            .await
            .map(|_| ())
    }

    /// Turns automatic mining of each transaction on or off (`evm_setAutomine`).
    pub async fn set_automine(&self, on: bool) -> Result<(), EthError> {
        self.client()?
            .call("evm_setAutomine", json!([on]))
            .await
            .map(|_| ())
    }

    /// Moves the chain's clock forward by `seconds` and mines a block (`evm_increaseTime` + `evm_mine`).
    pub async fn advance_time(&self, seconds: u64) -> Result<(), EthError> {
        let client = self.client()?;
        client.call("evm_increaseTime", json!([seconds])).await?;
        client.call("evm_mine", json!([])).await.map(|_| ())
    }

    /// Removes a pending transaction from the pool (`anvil_dropTransaction`), simulating a lost broadcast.
    pub async fn drop_transaction(&self, hash: &super::TxHash) -> Result<(), EthError> {
        self.client()?
            .call("anvil_dropTransaction", json!([hash.to_string()]))
            .await
            .map(|_| ())
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // Kill this child by its PID (std's Child::kill sends SIGKILL to exactly this process).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The compiled test ERC-20 (`contracts/TestToken.sol`, 6 decimals).
pub const TEST_TOKEN_ARTIFACT: &str = include_str!("../../contracts/TestToken.json");

/// Init code deploying the test token with `supply` base units minted to the deployer.
pub fn test_token_init_code(supply: &num_bigint::BigUint) -> Result<Vec<u8>, EthError> {
    let artifact: serde_json::Value = serde_json::from_str(TEST_TOKEN_ARTIFACT)
        .map_err(|e| EthError::BadResponse(format!("token artifact: {e}")))?;
    let bytecode = artifact["bytecode"]
        .as_str()
        .ok_or_else(|| EthError::BadResponse("token artifact lacks bytecode".to_owned()))?;
    let mut code = super::types::decode_hex(bytecode)?;
    code.extend(super::abi::encode(&[super::abi::Token::Uint(
        supply.clone(),
    )])?);
    Ok(code)
}

//! Native reference points for `make bench` (scripts/bench.sh), measured in the same run as the
//! component figures they are compared with:
//! - one argon2id hash with auth's parameters (m=19456 KiB, t=2, p=1), native code;
//! - one fresh MySQL connection + `SELECT 1`, native code (what a Spin request pays at least).
//!
//! Usage: native-baselines <mysql-url> [argon2-rounds] [select-rounds]; prints JSON.

use std::time::Instant;

use anyhow::{Context as _, Result};
use argon2::{Algorithm, Argon2, Params, Version};
use mysql_async::prelude::Queryable as _;

/// Hashes run before the measured ones. Most of a fresh process's first 16 take 24-26 ms here
/// against 13-15 ms later: each of those faults all 19 MiB in afresh (4,864 page faults a hash,
/// counted with getrusage on 2026-12-06), and from about the 17th glibc's malloc keeps reusing
/// the same pages. A native server that logs users in all day runs in that later state, so that
/// is the baseline.
const ARGON_WARM_UP: usize = 20;

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().context("usage: native-baselines <mysql-url> [argon2-rounds] [select-rounds]")?;
    let argon_rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(30);
    let select_rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);

    let params = Params::new(19_456, 2, 1, Some(32)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = [7u8; 16];
    let mut output = [0u8; 32];
    let mut argon_ms = Vec::with_capacity(argon_rounds);
    for _ in 0..argon_rounds + ARGON_WARM_UP {
        let started = Instant::now();
        argon
            .hash_password_into(b"correct horse battery staple", &salt, &mut output)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        argon_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    argon_ms.drain(..ARGON_WARM_UP);

    let opts = mysql_async::Opts::from_url(&url).context("Invalid MySQL URL")?;
    let mut select_ms = Vec::with_capacity(select_rounds);
    for _ in 0..select_rounds + 20 {
        let started = Instant::now();
        let mut conn = mysql_async::Conn::new(opts.clone()).await.context("Failed to connect")?;
        let _: Option<i64> = conn.query_first("SELECT 1").await.context("SELECT 1 failed")?;
        select_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        conn.disconnect().await.ok();
    }
    select_ms.drain(..20);

    println!(
        "{}",
        serde_json::json!({
            "argon2id_hash_p50_ms": percentile(&mut argon_ms, 0.5),
            "argon2id_hash_p99_ms": percentile(&mut argon_ms, 0.99),
            "select1_fresh_connection_p50_ms": percentile(&mut select_ms, 0.5),
            "select1_fresh_connection_p99_ms": percentile(&mut select_ms, 0.99),
        })
    );
    Ok(())
}

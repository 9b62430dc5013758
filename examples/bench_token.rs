//! Prints an HS256 bearer token for the load benches (`benches/load/`):
//! claims `sub` and `exp` (far in the future), signed with the secret in
//! `BENCH_JWT_SECRET` (at least 32 bytes).
//!
//! ```sh
//! BENCH_JWT_SECRET=... cargo run --release --example bench_token
//! ```

use std::{io::Write, process::ExitCode};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

/// 2100-01-01T00:00:00Z: the token never expires during a bench.
const EXP: u64 = 4_102_444_800;

fn main() -> ExitCode {
    let Ok(secret) = std::env::var("BENCH_JWT_SECRET") else {
        eprintln!("bench_token: set BENCH_JWT_SECRET");
        return ExitCode::from(2);
    };
    if secret.len() < 32 {
        eprintln!("bench_token: BENCH_JWT_SECRET must be at least 32 bytes");
        return ExitCode::from(2);
    }
    let claims = serde_json::json!({ "sub": "bench", "exp": EXP });
    match encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    ) {
        // the token is the program's output: stdout, for `$(bench_token)`
        Ok(token) => match writeln!(std::io::stdout(), "{token}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("bench_token: {err}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("bench_token: {err}");
            ExitCode::FAILURE
        }
    }
}

//! Seeds an emulator (moto or LocalStack) with the demo pool, app client and users, through the
//! same SDK the crate uses, and prints what the example server needs as `KEY=value` lines.
//!
//! ```text
//! AWS_ENDPOINT_URL=http://127.0.0.1:4566 cargo run --features test-util --example seed
//! ```
//!
//! Users: `alice` (attributes, no group) and `root` (group `admin`), password `Demo-Passw0rd!`.
//! The printed tokens are the emulator's, for the demo only.

use actix_cognito::testing::Emulator;

const PASSWORD: &str = "Demo-Passw0rd!";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let emulator = Emulator::from_env().await?;
    let pool = emulator.create_pool("actix-cognito-demo").await?;
    pool.create_user(
        "alice",
        PASSWORD,
        &[
            ("email", "alice@example.com"),
            ("email_verified", "true"),
            ("given_name", "Alice"),
            ("custom:tenant", "acme"),
        ],
    )
    .await?;
    pool.create_user("root", PASSWORD, &[("email", "root@example.com")]).await?;
    pool.add_to_group("root", "admin").await?;
    let alice = pool.sign_in(&pool.client_id, "alice", PASSWORD).await?;
    let root = pool.sign_in(&pool.client_id, "root", PASSWORD).await?;
    println!("COGNITO_USER_POOL_ID={}", pool.pool_id);
    println!("COGNITO_CLIENT_ID={}", pool.client_id);
    println!("ALICE_TOKEN={}", alice.access);
    println!("ADMIN_TOKEN={}", root.access);
    Ok(())
}

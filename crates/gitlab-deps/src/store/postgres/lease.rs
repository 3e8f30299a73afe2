//! The engine's lease on PostgreSQL: one row, all times by the database's clock
//! (`clock_timestamp()`), so replicas' clocks need not agree.
//!
//! Acquiring is one `INSERT … ON CONFLICT DO UPDATE … WHERE` statement: PostgreSQL locks the row
//! and checks the condition against its latest version, so of two replicas asking at once one
//! gets the grant and the other sees it held. The fence in `commit_cascade` reads the epoch
//! `FOR SHARE` in the commit's transaction: a take-over waits for that commit to end, and a commit
//! that starts after the take-over sees the new epoch, fails, and writes nothing.

use std::time::Duration;

use deadpool_postgres::ClientWrapper;

use crate::store::{Lease, LeaseInfo, StoreError};

fn ttl_ms(ttl: Duration) -> i64 {
    // An interval of more than ~290,000 years overflows; nobody asks for that.
    i64::try_from(ttl.as_millis())
        .unwrap_or(i64::MAX)
        .min(1_000_000_000_000)
}

pub(super) async fn acquire(
    client: &ClientWrapper,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO lease (id, holder, epoch, expires_at)
                 VALUES (1, $1, 1, clock_timestamp() + $2::bigint * interval '1 millisecond')
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, epoch = lease.epoch + 1,
                 expires_at = clock_timestamp() + $2::bigint * interval '1 millisecond'
             WHERE lease.holder = excluded.holder OR lease.expires_at <= clock_timestamp()
             RETURNING epoch",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&holder, &ttl_ms(ttl)])
        .await?
        .map(|row| Lease {
            holder: holder.to_owned(),
            epoch: row.get(0),
        }))
}

pub(super) async fn renew(
    client: &ClientWrapper,
    lease: &Lease,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let stmt = client
        .prepare_cached(
            "UPDATE lease SET expires_at = clock_timestamp() + $1::bigint * interval '1 millisecond'
             WHERE id = 1 AND epoch = $2 AND holder = $3",
        )
        .await?;
    let changed = client
        .execute(&stmt, &[&ttl_ms(ttl), &lease.epoch, &lease.holder])
        .await?;
    Ok(changed == 1)
}

pub(super) async fn release(client: &ClientWrapper, lease: &Lease) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(
            "UPDATE lease SET expires_at = '-infinity' WHERE id = 1 AND epoch = $1 AND holder = $2",
        )
        .await?;
    client
        .execute(&stmt, &[&lease.epoch, &lease.holder])
        .await?;
    Ok(())
}

pub(super) async fn current(client: &ClientWrapper) -> Result<Option<LeaseInfo>, StoreError> {
    // `-infinity` (released) reads as far in the past.
    let stmt = client
        .prepare_cached(
            "SELECT holder, epoch,
                 CASE WHEN expires_at = '-infinity' THEN -1000000000000
                      ELSE floor(extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint END
             FROM lease WHERE id = 1",
        )
        .await?;
    Ok(client.query_opt(&stmt, &[]).await?.map(|r| LeaseInfo {
        holder: r.get(0),
        epoch: r.get(1),
        expires_in_ms: r.get(2),
    }))
}

/// The fence: fails with SQLSTATE [`FENCED`] unless the stored epoch is still `$1`, and holds the
/// lease row shared until the transaction ends, so no take-over lands in between (migration 2).
pub(super) const CHECK_FENCE: &str = "SELECT gitlab_deps_check_fence($1)";

/// The SQLSTATE the fence raises; its detail is the stored epoch.
const FENCED: &str = "GD001";

/// The fence's failure as [`StoreError::Fenced`] (other errors as they are).
pub(super) fn fenced(e: tokio_postgres::Error, lease: &Lease) -> StoreError {
    match e.as_db_error() {
        Some(db) if db.code().code() == FENCED => StoreError::Fenced {
            held: lease.epoch,
            current: db.detail().and_then(|d| d.parse().ok()).unwrap_or(0),
        },
        _ => e.into(),
    }
}

//! A transaction sent as one batch: `BEGIN`, the statements and `COMMIT` go out together and
//! cost one round trip to the server, where a transaction driven step by step costs one per
//! statement. The engine commits once per step and the intake once per batch of deliveries, and
//! on a busy machine each round trip is a wait for the server's process to be scheduled.
//!
//! Statements cannot depend on each other's results; a check that must stop the transaction
//! (the lease fence) fails with an error instead of returning a value. The first failing
//! statement aborts the transaction, PostgreSQL answers every later one with an error, and the
//! `COMMIT` ends it as a rollback.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Row, Statement};

/// A prepared statement and its parameters.
pub(super) type Step<'a> = (&'a Statement, &'a [&'a (dyn ToSql + Sync)]);

type Reply<'a> = Pin<Box<dyn Future<Output = Result<Vec<Row>, Error>> + Send + 'a>>;

/// Runs `steps` in order as one transaction, sent as one batch. Returns each step's rows, or the
/// first error (nothing was committed then).
pub(super) async fn transaction(
    client: &Client,
    steps: &[Step<'_>],
) -> Result<Vec<Vec<Row>>, Error> {
    let mut requests: Vec<Reply<'_>> = Vec::with_capacity(steps.len() + 2);
    requests.push(Box::pin(async {
        client.batch_execute("BEGIN").await.map(|()| Vec::new())
    }));
    for (statement, params) in steps {
        requests.push(Box::pin(client.query(*statement, params)));
    }
    requests.push(Box::pin(async {
        client.batch_execute("COMMIT").await.map(|()| Vec::new())
    }));
    // tokio-postgres queues a request's messages when its future is first polled: polling each
    // once, in order, sends them all in order before waiting for any answer.
    let mut sent = Vec::with_capacity(requests.len());
    for mut request in requests {
        let first = futures::poll!(request.as_mut());
        sent.push((request, first));
    }
    let mut replies = Vec::with_capacity(sent.len());
    for (request, first) in sent {
        replies.push(match first {
            Poll::Ready(reply) => reply,
            Poll::Pending => request.await,
        });
    }
    // The first error in order is the cause; those after it only say the transaction aborted.
    let mut replies = replies.into_iter();
    if let Some(begin) = replies.next() {
        begin?;
    }
    let commit = replies.next_back();
    let rows = replies.collect::<Result<Vec<_>, _>>()?;
    if let Some(commit) = commit {
        commit?;
    }
    Ok(rows)
}

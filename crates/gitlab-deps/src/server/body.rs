//! Reading a request body within limits: its own size, a deadline for the whole body, and a
//! budget of body bytes held by all requests at once, so that many large or slow bodies cannot
//! grow memory without bound.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Larger than the limit (413).
    TooLarge,
    /// Not complete before the deadline (408).
    TooSlow,
    /// The connection failed while reading (400).
    Broken,
}

impl BodyError {
    /// The answer.
    pub(crate) fn response(&self, limit: usize) -> (StatusCode, String) {
        match self {
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {limit} bytes\n"),
            ),
            Self::TooSlow => (
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time\n".into(),
            ),
            Self::Broken => (StatusCode::BAD_REQUEST, "body could not be read\n".into()),
        }
    }
}

/// The bytes of all bodies being read or handled at once.
#[derive(Clone)]
pub(crate) struct BodyBudget {
    bytes: Arc<Semaphore>,
    max: usize,
}

impl BodyBudget {
    /// A budget of `max` bytes (at least one whole body of `body_limit`).
    pub(crate) fn new(max: usize, body_limit: usize) -> Self {
        let max = max.max(body_limit).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// A body read in full, with its share of the budget (given back when dropped).
pub(crate) struct LimitedBody {
    /// The body.
    pub bytes: Bytes,
    _held: Option<OwnedSemaphorePermit>,
}

/// Reads `body` of at most `limit` bytes within `deadline`, holding its size in `budget` (waiting
/// for other requests to give theirs back when the budget is spent).
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Duration,
    budget: &BodyBudget,
) -> Result<LimitedBody, BodyError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    tokio::time::timeout(deadline, collect(body, limit, budget))
        .await
        .unwrap_or(Err(BodyError::TooSlow))
}

async fn collect(body: Body, limit: usize, budget: &BodyBudget) -> Result<LimitedBody, BodyError> {
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Broken)?;
        size += chunk.len();
        if size > limit {
            return Err(BodyError::TooLarge);
        }
        if chunk.is_empty() {
            continue;
        }
        let want = u32::try_from(chunk.len().min(budget.max)).map_err(|_| BodyError::TooLarge)?;
        let permit = Arc::clone(&budget.bytes)
            .acquire_many_owned(want)
            .await
            .map_err(|_| BodyError::Broken)?;
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        chunks.push(chunk);
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = Vec::with_capacity(size);
            for chunk in &chunks {
                all.extend_from_slice(chunk);
            }
            Bytes::from(all)
        }
    };
    Ok(LimitedBody { bytes, _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[tokio::test]
    async fn bodies_are_read_within_their_limits() {
        let budget = BodyBudget::new(100, 10);
        let headers = HeaderMap::new();
        let ok = read(
            &headers,
            Body::from("0123456789"),
            10,
            Duration::from_secs(5),
            &budget,
        )
        .await
        .unwrap();
        assert_eq!(&ok.bytes[..], b"0123456789");
        let big = read(
            &headers,
            Body::from("0123456789x"),
            10,
            Duration::from_secs(5),
            &budget,
        )
        .await;
        assert_eq!(big.err(), Some(BodyError::TooLarge));
        // A declared length over the limit is refused before anything is read.
        let mut declared = HeaderMap::new();
        declared.insert("content-length", HeaderValue::from_static("11"));
        let refused = read(
            &declared,
            Body::from(""),
            10,
            Duration::from_secs(5),
            &budget,
        )
        .await;
        assert_eq!(refused.err(), Some(BodyError::TooLarge));
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let budget = BodyBudget::new(100, 10);
        let endless =
            Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let slow = read(
            &HeaderMap::new(),
            endless,
            10,
            Duration::from_millis(50),
            &budget,
        )
        .await;
        assert_eq!(slow.err(), Some(BodyError::TooSlow));
    }

    #[tokio::test]
    async fn the_budget_is_held_while_a_body_is_kept() {
        let budget = BodyBudget::new(10, 10);
        let held = read(
            &HeaderMap::new(),
            Body::from("0123456789"),
            10,
            Duration::from_secs(5),
            &budget,
        )
        .await
        .unwrap();
        assert_eq!(budget.bytes.available_permits(), 0);
        // A second body waits for the first one's bytes, past its deadline.
        let waiting = read(
            &HeaderMap::new(),
            Body::from("x"),
            10,
            Duration::from_millis(50),
            &budget,
        )
        .await;
        assert_eq!(waiting.err(), Some(BodyError::TooSlow));
        drop(held);
        assert_eq!(budget.bytes.available_permits(), 10);
    }
}

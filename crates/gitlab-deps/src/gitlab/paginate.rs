//! Listing projects across pages.
//!
//! The first page uses offset pagination. When GitLab reports the page count (it does up to 10,000
//! rows) the remaining pages are fetched concurrently. Beyond that it omits the totals: `/projects`
//! then continues with keyset pagination (required past 50,000 rows), a group listing follows
//! `X-Next-Page` one page after another.

use reqwest::Method;
use reqwest::header::HeaderMap;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use url::Url;

use super::client::{GitLab, decode, encode};
use super::error::GitLabError;
use super::types::Project;

const PER_PAGE: u32 = 100;
/// Listing pages fetched at once when the page count is known (the client's semaphore still bounds
/// the requests actually in flight).
const PAGES_IN_FLIGHT: usize = 16;

impl GitLab {
    /// Streams the non-archived projects of a scope, one page at a time, in no particular order.
    /// The channel ends after the last page or after the first error.
    pub fn list_projects(
        &self,
        scope: crate::gitlab::ProjectScope,
    ) -> mpsc::Receiver<Result<Vec<Project>, GitLabError>> {
        let (tx, rx) = mpsc::channel(16);
        let client = self.clone();
        tokio::spawn(async move {
            if let Err(e) = client.list_into(&scope, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    async fn list_into(
        &self,
        scope: &crate::gitlab::ProjectScope,
        tx: &mpsc::Sender<Result<Vec<Project>, GitLabError>>,
    ) -> Result<(), GitLabError> {
        let (path, what) = match scope {
            crate::gitlab::ProjectScope::All => ("projects".to_owned(), "list projects".to_owned()),
            crate::gitlab::ProjectScope::Group(group) => (
                format!("groups/{}/projects", encode(group)),
                format!("list projects of group {group}"),
            ),
        };
        let mut base = self.url(&path)?;
        base.query_pairs_mut()
            .append_pair("archived", "false")
            .append_pair("order_by", "id")
            .append_pair("sort", "asc")
            .append_pair("per_page", &PER_PAGE.to_string());
        if matches!(scope, crate::gitlab::ProjectScope::Group(_)) {
            base.query_pairs_mut()
                .append_pair("include_subgroups", "true")
                .append_pair("with_shared", "false");
        }

        let (first, headers) = self.page(base.clone(), 1, &what).await?;
        let last_id = first.iter().map(|p| p.id).max();
        let first_len = first.len();
        if tx.send(Ok(first)).await.is_err() {
            return Ok(());
        }
        if let Some(total_pages) = header_u32(&headers, "x-total-pages") {
            // Totals known: fetch the rest concurrently; the client's semaphore bounds the load.
            //
            // Each page is its own task. A page future that has been granted a request permit
            // must keep being polled until it gives the permit back, and this task is parked in
            // `tx.send` whenever the consumer is busy: with the fetches polled from here (as in a
            // `buffer_unordered`), a full channel froze every permit they held, the consumer's
            // own requests then never got one, and the scan deadlocked (any instance with more
            // pages than the channel holds). The `JoinSet` aborts what is left on an early return.
            let mut remaining = 2..=total_pages;
            let mut fetches = JoinSet::new();
            let spawn = |fetches: &mut JoinSet<_>, page: u32| {
                let (client, base, what) = (self.clone(), base.clone(), what.clone());
                fetches.spawn(async move { client.page(base, page, &what).await.map(|(p, _)| p) });
            };
            for page in remaining.by_ref().take(PAGES_IN_FLIGHT) {
                spawn(&mut fetches, page);
            }
            while let Some(joined) = fetches.join_next().await {
                if let Some(page) = remaining.next() {
                    spawn(&mut fetches, page);
                }
                let page = joined.unwrap_or_else(|e| {
                    Err(GitLabError::Network {
                        what: what.clone(),
                        attempts: 1,
                        reason: format!("the page fetch stopped: {e}"),
                    })
                });
                let failed = page.is_err();
                if tx.send(page).await.is_err() || failed {
                    return Ok(());
                }
            }
            return Ok(());
        }
        if first_len < PER_PAGE as usize && next_page(&headers).is_none() {
            return Ok(());
        }
        match scope {
            crate::gitlab::ProjectScope::All => {
                let Some(last_id) = last_id else {
                    return Ok(());
                };
                let mut url = self.url(&path)?;
                url.query_pairs_mut()
                    .append_pair("archived", "false")
                    .append_pair("pagination", "keyset")
                    .append_pair("order_by", "id")
                    .append_pair("sort", "asc")
                    .append_pair("per_page", &PER_PAGE.to_string())
                    .append_pair("id_after", &last_id.to_string());
                let mut next = Some(url);
                while let Some(url) = next.take() {
                    let response = self.send(Method::GET, url, None, &what).await?;
                    // GitLab builds links from its external_url, which may differ from the URL we
                    // were given (a proxy, http vs https): keep our origin, take its path and query.
                    next = link_next(response.headers()).map(|link| self.same_origin(&link));
                    let projects: Vec<Project> = decode(response, &what).await?;
                    if tx.send(Ok(projects)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            crate::gitlab::ProjectScope::Group(_) => {
                let mut next = next_page(&headers);
                while let Some(page) = next.take() {
                    let (projects, headers) = self.page(base.clone(), page, &what).await?;
                    next = next_page(&headers);
                    if tx.send(Ok(projects)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    async fn page(
        &self,
        mut url: Url,
        page: u32,
        what: &str,
    ) -> Result<(Vec<Project>, HeaderMap), GitLabError> {
        url.query_pairs_mut().append_pair("page", &page.to_string());
        let response = self.send(Method::GET, url, None, what).await?;
        let headers = response.headers().clone();
        let projects = decode(response, what).await?;
        Ok((projects, headers))
    }
}

pub(super) fn header_u32(headers: &HeaderMap, name: &str) -> Option<u32> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl GitLab {
    /// `link` with the scheme, host and port of the configured API URL.
    pub(super) fn same_origin(&self, link: &Url) -> Url {
        let mut url = self.api_url().clone();
        url.set_path(link.path());
        url.set_query(link.query());
        url
    }
}

/// `X-Next-Page`, empty on the last page.
fn next_page(headers: &HeaderMap) -> Option<u32> {
    header_u32(headers, "x-next-page")
}

/// The `rel="next"` URL of a `Link` header.
pub(crate) fn link_next(headers: &HeaderMap) -> Option<Url> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        if !is_next {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        Url::parse(target).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn finds_the_next_link() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                r#"<https://g.example/api/v4/projects?page=1>; rel="first", <https://g.example/api/v4/projects?id_after=42&pagination=keyset>; rel="next""#,
            ),
        );
        assert_eq!(
            link_next(&h).unwrap().as_str(),
            "https://g.example/api/v4/projects?id_after=42&pagination=keyset"
        );
        assert!(link_next(&HeaderMap::new()).is_none());
    }

    /// Regression: with page fetches polled by the listing task, a full channel froze the request
    /// permits they held and every other request of the client waited forever.
    #[tokio::test]
    async fn a_full_listing_channel_does_not_starve_other_requests() {
        use crate::gitlab::{GitLabOptions, ProjectScope};
        use std::time::Duration;

        let sim = gitlab_sim::Sim::new(gitlab_sim::SimOptions::default());
        for i in 0..3_000 {
            sim.add_project(gitlab_sim::ProjectSpec::new(format!("g/p{i:04}")).file("README", "x"));
        }
        let url = sim.start().await.unwrap();
        let gitlab = GitLab::new(GitLabOptions {
            concurrency: 2,
            timeout: Duration::from_secs(10),
            ..GitLabOptions::new(Url::parse(&url).unwrap(), sim.token().into())
        })
        .unwrap();
        let mut pages = gitlab.list_projects(ProjectScope::All);
        let first = pages.recv().await.unwrap().unwrap();
        // Nobody reads: the 30 pages overflow the channel and the listing task waits in `send`.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let head = tokio::time::timeout(
            Duration::from_secs(10),
            gitlab.branch_head(first[0].id, "main"),
        )
        .await;
        assert!(matches!(head, Ok(Ok(Some(_)))), "{head:?}");
        let mut listed = first.len();
        while let Some(page) = pages.recv().await {
            listed += page.unwrap().len();
        }
        assert_eq!(listed, 3_000);
    }

    #[test]
    fn empty_next_page_means_last() {
        let mut h = HeaderMap::new();
        h.insert("x-next-page", HeaderValue::from_static(""));
        assert_eq!(next_page(&h), None);
        h.insert("x-next-page", HeaderValue::from_static("3"));
        assert_eq!(next_page(&h), Some(3));
    }
}

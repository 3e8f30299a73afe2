//! Project and group webhooks: list (every page), create, update, delete, test.

use reqwest::Method;

use super::client::{GitLab, decode, encode};
use super::error::GitLabError;
use super::types::{Hook, HookSpec};

/// Hooks per listing page (GitLab's maximum).
const PER_PAGE: usize = 100;

/// Whose hooks: a project's, or a group's (group hooks need GitLab Premium).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookOwner {
    /// A project, by numeric id.
    Project(u64),
    /// A group, by full path.
    Group(String),
}

impl HookOwner {
    fn collection(&self) -> String {
        match self {
            Self::Project(id) => format!("projects/{id}/hooks"),
            Self::Group(path) => format!("groups/{}/hooks", encode(path)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Project(id) => format!("project {id}"),
            Self::Group(path) => format!("group {path}"),
        }
    }
}

/// What a test delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// GitLab delivered the test event and our endpoint accepted it, which re-enables the hook.
    Delivered,
    /// GitLab sent it but the delivery failed (GitLab's message).
    Failed(String),
    /// This GitLab has no test endpoint in its API (before 16.11): re-enable from the web UI.
    Unsupported,
}

fn body(spec: &HookSpec, what: &str) -> Result<serde_json::Value, GitLabError> {
    serde_json::to_value(spec).map_err(|e| GitLabError::Decode {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

impl GitLab {
    /// Every hook of a project or group, all pages read.
    pub async fn hooks(&self, owner: &HookOwner) -> Result<Vec<Hook>, GitLabError> {
        let what = format!("list webhooks of {}", owner.describe());
        let mut all = Vec::new();
        let mut page = 1u32;
        loop {
            let mut url = self.url(&owner.collection())?;
            url.query_pairs_mut()
                .append_pair("per_page", &PER_PAGE.to_string())
                .append_pair("page", &page.to_string());
            let response = self.send(Method::GET, url, None, &what).await?;
            let next = response
                .headers()
                .get("x-next-page")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok());
            let hooks: Vec<Hook> = decode(response, &what).await?;
            let full = hooks.len() >= PER_PAGE;
            all.extend(hooks);
            // X-Next-Page is the signal; a full page without it (a proxy dropping headers) still
            // asks for the next one, which then comes back empty.
            match next {
                Some(n) if n > page => page = n,
                None if full => page += 1,
                _ => return Ok(all),
            }
        }
    }

    /// Adds a hook. Not retried after a 5xx or a lost answer (it may exist by then): the caller
    /// lists again before trying once more.
    pub async fn create_hook(
        &self,
        owner: &HookOwner,
        spec: &HookSpec,
    ) -> Result<Hook, GitLabError> {
        let what = format!("add a webhook to {}", owner.describe());
        let url = self.url(&owner.collection())?;
        let response = self
            .send_with(Method::POST, url, Some(&body(spec, &what)?), &what, false)
            .await?;
        decode(response, &what).await
    }

    /// Replaces a hook's settings, the secret included.
    pub async fn update_hook(
        &self,
        owner: &HookOwner,
        hook_id: u64,
        spec: &HookSpec,
    ) -> Result<Hook, GitLabError> {
        let what = format!("update webhook {hook_id} of {}", owner.describe());
        let url = self.url(&format!("{}/{hook_id}", owner.collection()))?;
        let response = self
            .send(Method::PUT, url, Some(&body(spec, &what)?), &what)
            .await?;
        decode(response, &what).await
    }

    /// Removes a hook; one already gone counts as removed.
    pub async fn delete_hook(&self, owner: &HookOwner, hook_id: u64) -> Result<(), GitLabError> {
        let what = format!("delete webhook {hook_id} of {}", owner.describe());
        let url = self.url(&format!("{}/{hook_id}", owner.collection()))?;
        match self.send(Method::DELETE, url, None, &what).await {
            Ok(_) | Err(GitLabError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Asks GitLab to send a test push event through a hook. A delivery our endpoint accepts
    /// re-enables a hook GitLab had disabled.
    pub async fn test_hook(
        &self,
        owner: &HookOwner,
        hook_id: u64,
    ) -> Result<TestOutcome, GitLabError> {
        let what = format!("test webhook {hook_id} of {}", owner.describe());
        let url = self.url(&format!(
            "{}/{hook_id}/test/push_events",
            owner.collection()
        ))?;
        match self.send_with(Method::POST, url, None, &what, false).await {
            Ok(_) => Ok(TestOutcome::Delivered),
            // The route is missing on versions without the endpoint; the hook itself exists (we
            // just listed it).
            Err(GitLabError::NotFound { .. }) => Ok(TestOutcome::Unsupported),
            Err(GitLabError::Rejected { message, .. }) => Ok(TestOutcome::Failed(message)),
            Err(e) => Err(e),
        }
    }
}

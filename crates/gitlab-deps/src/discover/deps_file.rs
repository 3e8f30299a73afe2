//! The `.gitlab-deps` file: one upstream project per line, as a project URL
//! on this GitLab instance or as a `group/project` path.
//!
//! "This instance" is every address GitLab shows for its projects (`web_url`,
//! `http_url_to_repo`, `ssh_url_to_repo`) as well as the URL we reach the API
//! at: the two differ when the tool talks to an internal address.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use url::Url;

/// One declared upstream project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DepsEntry {
    /// 1-based line number.
    pub line: usize,
    /// Full project path as written (case preserved), e.g. `group/sub/project`.
    pub path: String,
}

/// A line that was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DepsWarning {
    /// 1-based line number.
    pub line: usize,
    /// Human-readable explanation.
    pub message: String,
}

/// The addresses under which this instance's project URLs are written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceUrls {
    /// `http(s)` roots: host, explicit port, and the relative URL root (`/gitlab`, or empty).
    web: BTreeSet<WebRoot>,
    /// Hosts of SSH clone URLs.
    ssh: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct WebRoot {
    host: String,
    port: Option<u16>,
    root: String,
}

impl InstanceUrls {
    /// The configured base URL (its path is the relative URL root).
    #[must_use]
    pub fn new(base: &Url) -> Self {
        let mut urls = Self::default();
        if let Some(host) = base.host_str() {
            urls.web.insert(WebRoot {
                host: host.to_ascii_lowercase(),
                port: base.port(),
                root: base.path().trim_end_matches('/').to_owned(),
            });
            urls.ssh.insert(host.to_ascii_lowercase());
        }
        urls
    }

    /// Learns the addresses GitLab shows for one project: the root of its `web_url` and
    /// `http_url_to_repo` (the URL without the project path), the host of `ssh_url_to_repo`.
    /// Addresses that do not end with the project's path teach nothing and are ignored.
    pub fn add_project(
        &mut self,
        path_with_namespace: &str,
        web_url: &str,
        http_url_to_repo: Option<&str>,
        ssh_url_to_repo: Option<&str>,
    ) {
        let path = path_with_namespace.trim_matches('/').to_ascii_lowercase();
        let http = http_url_to_repo.and_then(|u| u.strip_suffix(".git"));
        for url in std::iter::once(web_url).chain(http) {
            let Ok(url) = Url::parse(url) else { continue };
            let (Some(host), true) = (url.host_str(), matches!(url.scheme(), "http" | "https"))
            else {
                continue;
            };
            let full = url.path().trim_end_matches('/');
            let lower = full.to_ascii_lowercase();
            let Some(root) = lower.strip_suffix(&path).and_then(|r| r.strip_suffix('/')) else {
                continue;
            };
            let root = full[..root.len()].to_owned();
            self.web.insert(WebRoot {
                host: host.to_ascii_lowercase(),
                port: url.port(),
                root,
            });
            // The web host usually answers SSH too, as the configured one always did here.
            self.ssh.insert(host.to_ascii_lowercase());
        }
        if let Some(host) = ssh_url_to_repo.and_then(ssh_host) {
            self.ssh.insert(host.to_ascii_lowercase());
        }
    }

    /// Adds every address of `other`.
    pub fn extend(&mut self, other: &InstanceUrls) {
        self.web.extend(other.web.iter().cloned());
        self.ssh.extend(other.ssh.iter().cloned());
    }

    /// The hosts, for messages.
    fn shown(&self) -> String {
        let hosts: BTreeSet<&str> = self
            .web
            .iter()
            .map(|w| w.host.as_str())
            .chain(self.ssh.iter().map(String::as_str))
            .collect();
        hosts.into_iter().collect::<Vec<_>>().join(", ")
    }

    /// The project path of an `http(s)://` URL on this instance.
    fn web_path(&self, url: &Url) -> Result<String, String> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let mut on_host = self
            .web
            .iter()
            .filter(|w| w.host == host && w.port == url.port())
            .peekable();
        if on_host.peek().is_none() {
            return Err(format!(
                "URL is not on this GitLab instance ({})",
                self.shown()
            ));
        }
        // The longest matching root wins: `/gitlab/group/p` under root `/gitlab` is `group/p`.
        let mut roots: Vec<&WebRoot> = on_host.collect();
        roots.sort_by_key(|w| std::cmp::Reverse(w.root.len()));
        roots
            .iter()
            .find_map(|w| {
                url.path()
                    .strip_prefix(w.root.as_str())
                    .filter(|rest| rest.starts_with('/'))
            })
            .map(str::to_owned)
            .ok_or_else(|| {
                let root = roots.first().map_or("", |w| w.root.as_str());
                format!("URL is not under {host}{root}/")
            })
    }

    fn knows_ssh_host(&self, host: &str) -> bool {
        self.ssh.contains(&host.to_ascii_lowercase())
    }
}

impl From<&Url> for InstanceUrls {
    fn from(base: &Url) -> Self {
        Self::new(base)
    }
}

/// The host of an SSH clone URL, `git@host:path` or `ssh://git@host:port/path`.
fn ssh_host(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix("ssh://") {
        let authority = rest.split('/').next()?;
        let host_port = authority.rsplit('@').next()?;
        return host_port.split(':').next().filter(|h| !h.is_empty());
    }
    let (user_host, _) = scp_like(text)?;
    user_host.rsplit('@').next().filter(|h| !h.is_empty())
}

/// Parses a `.gitlab-deps` file. Bad lines become warnings, never errors.
///
/// `instance` holds the addresses of this GitLab instance that project URLs may use.
#[must_use]
pub fn parse_deps_file(
    content: &str,
    instance: &InstanceUrls,
) -> (Vec<DepsEntry>, Vec<DepsWarning>) {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    for (index, raw) in content.lines().enumerate() {
        let line = index + 1;
        let text = strip_comment(raw).trim();
        if text.is_empty() {
            continue;
        }
        match parse_line(text, instance) {
            Ok(path) => entries.push(DepsEntry { line, path }),
            Err(reason) => warnings.push(DepsWarning {
                line,
                message: format!("ignoring {text:?}: {reason}"),
            }),
        }
    }
    (entries, warnings)
}

/// Drops a whole-line `#` comment or a trailing ` # comment`. A `#` glued to
/// text (a URL fragment) is not a comment.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    let mut prev_space = false;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

fn parse_line(text: &str, instance: &InstanceUrls) -> Result<String, String> {
    let path = if text.contains("://") {
        url_path(text, instance)?
    } else if let Some((user_host, path)) = scp_like(text) {
        let host = user_host.rsplit('@').next().unwrap_or_default();
        if !instance.knows_ssh_host(host) {
            return Err("SSH URL is not on this GitLab instance".to_owned());
        }
        path.to_owned()
    } else {
        text.to_owned()
    };
    let path = clean_path(&path);
    validate(path)?;
    Ok(path.to_owned())
}

/// The project path of an `http(s)://` or `ssh://` URL on this instance.
fn url_path(text: &str, instance: &InstanceUrls) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("invalid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => instance.web_path(&url),
        // SSH paths carry no relative URL root, and the SSH port is not the web one.
        "ssh" => match url.host_str() {
            Some(host) if instance.knows_ssh_host(host) => Ok(url.path().to_owned()),
            _ => Err("SSH URL is not on this GitLab instance".to_owned()),
        },
        other => Err(format!("unsupported URL scheme {other:?}")),
    }
}

/// Splits `git@host:group/project.git` into `("git@host", "group/project.git")`.
fn scp_like(text: &str) -> Option<(&str, &str)> {
    let (user_host, path) = text.split_once(':')?;
    user_host.contains('@').then_some((user_host, path))
}

/// Cuts GitLab's `/-/` route suffix, surrounding slashes and a `.git` suffix.
fn clean_path(path: &str) -> &str {
    let path = path.split_once("/-/").map_or(path, |(p, _)| p);
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    path.trim_end_matches('/')
}

/// GitLab paths: at least `namespace/project`, segments of `[A-Za-z0-9_.-]`.
fn validate(path: &str) -> Result<(), String> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2 {
        return Err("expected a project path like group/project".to_owned());
    }
    for segment in segments {
        let valid_chars = segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if segment.is_empty() || segment == "." || segment == ".." || !valid_chars {
            return Err(format!("invalid path segment {segment:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

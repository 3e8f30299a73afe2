//! Normalised container image names and the registry-prefix index that maps
//! them to GitLab projects.

use std::collections::HashMap;
use std::fmt;

use oci_spec::distribution::Reference;
use serde::Serialize;

/// An image reference that is not a valid Docker reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Rejected by the Docker reference grammar.
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        /// The reference as given.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// A Docker-normalised image name (`debian` -> `docker.io/library/debian:latest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ImageName {
    /// Lowercase `host[:port]`; `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path, e.g. `library/debian` or `group/proj/sub`.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// The digest, e.g. `sha256:...`.
    pub digest: Option<String>,
}

impl ImageName {
    /// Parses and normalises a Docker image reference.
    ///
    /// # Errors
    /// [`ImageError::Invalid`] when `reference` is not a valid reference
    /// (uppercase repository, bad digest, stray characters...).
    pub fn parse(reference: &str) -> Result<Self, ImageError> {
        let normalised = lowercase_host(reference.trim());
        let parsed = Reference::try_from(normalised.as_str()).map_err(|e| ImageError::Invalid {
            reference: reference.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            tag: parsed.tag().map(str::to_owned),
            digest: parsed.digest().map(str::to_owned),
        })
    }

    /// `registry/repository`, without tag or digest.
    #[must_use]
    pub fn without_tag(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// Lowercases the registry host, which Docker compares case-insensitively
/// but whose grammar would otherwise make `Docker.io/x` a distinct registry.
fn lowercase_host(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first.eq_ignore_ascii_case("localhost") =>
        {
            format!("{}/{rest}", first.to_ascii_lowercase())
        }
        _ => reference.to_owned(),
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Maps registry image prefixes to the GitLab projects that own them.
#[derive(Debug, Clone, Default)]
pub struct RegistryIndex {
    /// Lowercase `host[:port]/path` prefix -> project path.
    by_prefix: HashMap<String, String>,
}

impl RegistryIndex {
    /// Builds the index from `(project path like "group/proj", image prefix
    /// like "registry.example.org[:5050]/group/proj")` pairs.
    ///
    /// Prefixes are compared case-insensitively and may carry a trailing `/`
    /// or an `http(s)://` scheme. When two projects claim the same prefix the
    /// first one wins.
    pub fn new(entries: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut by_prefix = HashMap::new();
        for (project, prefix) in entries {
            let key = normalise_prefix(&prefix);
            if key.contains('/') {
                by_prefix.entry(key).or_insert(project);
            }
        }
        Self { by_prefix }
    }

    /// Number of indexed prefixes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    /// Whether the index is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// The project whose prefix is the longest prefix of the image's
    /// `registry/repository` on a path-segment boundary:
    /// `registry.example.org/group/proj/sub-image:tag` -> `group/proj`, while
    /// `registry.example.org/group/projx` does not match `group/proj`.
    #[must_use]
    pub fn resolve(&self, image: &ImageName) -> Option<&str> {
        let full = image.without_tag().to_ascii_lowercase();
        let registry_len = image.registry.len();
        let mut candidate = full.as_str();
        // Walk segment prefixes from longest to shortest; at most one lookup
        // per path segment, so the index size does not matter.
        loop {
            if let Some(project) = self.by_prefix.get(candidate) {
                return Some(project);
            }
            let cut = candidate.rfind('/')?;
            if cut <= registry_len {
                return None;
            }
            candidate = candidate.get(..cut)?;
        }
    }
}

/// A registry image prefix as the index compares it: no scheme, no surrounding `/`, lowercase.
pub(crate) fn normalise_prefix(prefix: &str) -> String {
    let prefix = prefix.trim();
    let prefix = ["https://", "http://"]
        .iter()
        .find_map(|scheme| {
            prefix
                .get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .and_then(|_| prefix.get(scheme.len()..))
        })
        .unwrap_or(prefix);
    prefix.trim_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests;

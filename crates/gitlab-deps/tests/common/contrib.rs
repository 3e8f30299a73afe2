//! The files under `contrib/`, for the tests that keep them in step with the code.

use std::path::PathBuf;

/// The path of `contrib/<name>` in the repository.
pub fn contrib(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib")
        .join(name)
}

/// The text of `contrib/<name>`.
pub fn read(name: &str) -> String {
    let path = contrib(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

//! Pure parsing of dependency sources: Dockerfiles, image references and
//! `.gitlab-deps` files. Nothing here does I/O or touches the network.

mod args;
pub mod deps_file;
pub mod dockerfile;
mod expand;
pub mod image;
mod syntax;

pub use deps_file::{DepsEntry, DepsWarning, InstanceUrls, parse_deps_file};
pub use dockerfile::{
    DockerfileError, ImageRef, ParsedDockerfile, Platform, PlatformError, RefKind, Warning,
    parse_dockerfile,
};
pub use image::{ImageError, ImageName, RegistryIndex};

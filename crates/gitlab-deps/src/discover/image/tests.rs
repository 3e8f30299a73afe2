use proptest::prelude::*;

use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn canonical(reference: &str) -> String {
    ImageName::parse(reference).unwrap().to_string()
}

#[test]
fn normalisation_table() {
    let cases = [
        ("debian", "docker.io/library/debian:latest"),
        ("debian:12", "docker.io/library/debian:12"),
        ("library/debian", "docker.io/library/debian:latest"),
        ("docker.io/debian", "docker.io/library/debian:latest"),
        ("docker.io/library/debian:12", "docker.io/library/debian:12"),
        ("index.docker.io/debian", "docker.io/library/debian:latest"),
        ("Docker.IO/debian", "docker.io/library/debian:latest"),
        ("user/repo", "docker.io/user/repo:latest"),
        ("ghcr.io/o/r:tag", "ghcr.io/o/r:tag"),
        ("localhost/x", "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        (
            "Registry.Example.org:5050/group/proj/img:1.0",
            "registry.example.org:5050/group/proj/img:1.0",
        ),
        ("  alpine:3.20  ", "docker.io/library/alpine:3.20"),
    ];
    for (input, expected) in cases {
        assert_eq!(canonical(input), expected, "{input}");
    }
}

#[test]
fn digests() {
    let name = ImageName::parse(&format!("debian@{DIGEST}")).unwrap();
    assert_eq!(name.tag, None);
    assert_eq!(name.digest.as_deref(), Some(DIGEST));
    assert_eq!(
        name.to_string(),
        format!("docker.io/library/debian@{DIGEST}")
    );

    assert_eq!(
        canonical(&format!("reg:5050/g/p@{DIGEST}")),
        format!("reg:5050/g/p@{DIGEST}")
    );
    let both = ImageName::parse(&format!("reg.io/g/p:1.0@{DIGEST}")).unwrap();
    assert_eq!(both.tag.as_deref(), Some("1.0"));
    assert_eq!(both.to_string(), format!("reg.io/g/p:1.0@{DIGEST}"));
    assert_eq!(both.without_tag(), "reg.io/g/p");
}

#[test]
fn fields() {
    let name = ImageName::parse("registry.example.org:5050/group/proj/sub:2").unwrap();
    assert_eq!(name.registry, "registry.example.org:5050");
    assert_eq!(name.repository, "group/proj/sub");
    assert_eq!(name.tag.as_deref(), Some("2"));
    assert_eq!(
        name.without_tag(),
        "registry.example.org:5050/group/proj/sub"
    );
}

#[test]
fn invalid_references() {
    for bad in [
        "",
        "Debian",
        "reg.io/Group/proj",
        "debian@sha256:short",
        "a b",
        "debian:",
        "$BASE",
        "/x",
    ] {
        assert!(ImageName::parse(bad).is_err(), "{bad:?}");
    }
}

fn index() -> RegistryIndex {
    RegistryIndex::new(
        [
            ("group/proj", "registry.example.org/group/proj"),
            (
                "group/proj/deeper",
                "registry.example.org/group/proj/deeper",
            ),
            ("group/ported", "Registry.Example.org:5050/group/ported/"),
            ("other/dup", "registry.example.org/group/proj"),
            ("hub/thing", "docker.io/hub/thing"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned())),
    )
}

fn resolve(reference: &str) -> Option<String> {
    index()
        .resolve(&ImageName::parse(reference).unwrap())
        .map(str::to_owned)
}

#[test]
fn resolve_longest_prefix_on_segment_boundary() {
    assert_eq!(
        resolve("registry.example.org/group/proj").as_deref(),
        Some("group/proj")
    );
    assert_eq!(
        resolve("registry.example.org/group/proj/sub-image:tag").as_deref(),
        Some("group/proj")
    );
    assert_eq!(
        resolve("registry.example.org/group/proj/deeper/x/y:1").as_deref(),
        Some("group/proj/deeper")
    );
    assert_eq!(resolve("registry.example.org/group/projx"), None);
    assert_eq!(resolve("registry.example.org/group"), None);
    assert_eq!(resolve("other.example.org/group/proj"), None);
    assert_eq!(resolve("hub/thing:1").as_deref(), Some("hub/thing"));
}

#[test]
fn resolve_with_ports() {
    assert_eq!(
        resolve(&format!(
            "registry.example.org:5050/group/ported/img@{DIGEST}"
        ))
        .as_deref(),
        Some("group/ported")
    );
    assert_eq!(resolve("registry.example.org/group/ported/img"), None);
    assert_eq!(resolve("registry.example.org:5050/group/proj"), None);
}

#[test]
fn index_normalises_prefixes() {
    let idx = RegistryIndex::new([
        ("a/b".to_owned(), "https://reg.io/a/b/".to_owned()),
        ("bad".to_owned(), "no-path".to_owned()),
    ]);
    assert_eq!(idx.len(), 1);
    assert_eq!(
        idx.resolve(&ImageName::parse("reg.io/a/b/c").unwrap()),
        Some("a/b")
    );
}

#[test]
fn resolve_scales_to_many_entries() {
    let idx = RegistryIndex::new(
        (0..100_000).map(|i| (format!("g{i}/p"), format!("registry.example.org/g{i}/p"))),
    );
    let name = ImageName::parse("registry.example.org/g99999/p/a/b/c:1").unwrap();
    let start = std::time::Instant::now();
    for _ in 0..10_000 {
        assert_eq!(idx.resolve(&name), Some("g99999/p"));
    }
    // Generous bound: a linear scan would take seconds.
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

proptest! {
    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let _ = ImageName::parse(&s);
    }

    #[test]
    fn display_round_trips(
        host in "(localhost|[a-z]{1,8}\\.[a-z]{2,3})(:[0-9]{1,5})?",
        path in "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,3}",
        tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
    ) {
        let name = ImageName::parse(&format!("{host}/{path}{}", tag.map(|t| format!(":{t}")).unwrap_or_default())).unwrap();
        prop_assert_eq!(ImageName::parse(&name.to_string()).unwrap(), name);
    }
}

use super::*;

fn parse(content: &str) -> ParsedDockerfile {
    parse_dockerfile(content, &BTreeMap::new(), &[]).unwrap()
}

fn platforms(list: &[&str]) -> Vec<Platform> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

/// Parses for the given target platforms.
fn parse_for(content: &str, list: &[&str]) -> ParsedDockerfile {
    parse_dockerfile(content, &BTreeMap::new(), &platforms(list)).unwrap()
}

/// `(line, message)` of every warning.
fn warnings(p: &ParsedDockerfile) -> Vec<(usize, &str)> {
    p.warnings
        .iter()
        .map(|w| (w.line, w.message.as_str()))
        .collect()
}

fn parse_with(content: &str, overrides: &[(&str, &str)]) -> ParsedDockerfile {
    let overrides = overrides
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    parse_dockerfile(content, &overrides, &[]).unwrap()
}

/// `(reference, line, kind)` triples for compact assertions.
fn refs(parsed: &ParsedDockerfile) -> Vec<(&str, usize, RefKind)> {
    parsed
        .images
        .iter()
        .map(|i| (i.reference.as_str(), i.line, i.kind))
        .collect()
}

fn images(content: &str) -> Vec<String> {
    parse(content)
        .images
        .into_iter()
        .map(|i| i.reference)
        .collect()
}

use RefKind::{CopyFrom, From, MountFrom};

#[test]
fn multi_stage_with_aliases() {
    let p = parse(
        "FROM golang:1.22 AS Build\n\
         RUN go build\n\
         FROM build AS test\n\
         FROM BUILD\n\
         FROM debian:12-slim\n\
         COPY --from=BUILD /app /app\n",
    );
    assert_eq!(
        refs(&p),
        [("golang:1.22", 1, From), ("debian:12-slim", 5, From)]
    );
    assert!(p.warnings.is_empty());
}

#[test]
fn from_later_stage_name_is_an_image() {
    // Only earlier stages can be a base; a later name is pulled as an image.
    assert_eq!(
        images("FROM later\nFROM alpine AS later\n"),
        ["later", "alpine"]
    );
}

#[test]
fn scratch_is_not_a_dependency() {
    assert_eq!(images("FROM scratch\nCOPY a /a\n"), Vec::<String>::new());
    assert_eq!(images("FROM Scratch AS s\n"), Vec::<String>::new());
}

#[test]
fn lowercase_and_mixed_case_instructions() {
    let p = parse("from alpine as base\nFrom base\ncopy --from=nginx:1 a b\nrun echo\n");
    assert_eq!(refs(&p), [("alpine", 1, From), ("nginx:1", 3, CopyFrom)]);
}

#[test]
fn platform_and_other_flags() {
    let p = parse("FROM --platform=$BUILDPLATFORM --foo=bar golang:1.22 AS b\n");
    assert_eq!(refs(&p), [("golang:1.22", 1, From)]);
    assert!(p.warnings.is_empty());
}

#[test]
fn continuations_with_comments_and_blank_lines() {
    let p = parse(
        "# leading comment\n\
         FROM \\\n\
         # a comment inside\n\
         \n\
         \x20 registry.example.org:5050/group/proj/img:1.0 \\\n\
         \x20 AS base\n\
         RUN apt-get update && \\\n\
         \x20   apt-get install -y curl\n\
         FROM base\n\
         FROM deb\\\n\
         ian\n",
    );
    assert_eq!(
        refs(&p),
        [
            ("registry.example.org:5050/group/proj/img:1.0", 2, From),
            ("debian", 10, From),
        ]
    );
}

#[test]
fn escape_directive_backtick() {
    let p = parse(
        "# escape=`\n\
         FROM mcr.microsoft.com/windows/servercore:ltsc2022 `\n\
         \x20 AS base\n\
         RUN dir c:\\\n\
         FROM base\n\
         COPY --from=mcr.microsoft.com/powershell:lts C:\\a C:\\b\n",
    );
    assert_eq!(
        refs(&p),
        [
            ("mcr.microsoft.com/windows/servercore:ltsc2022", 2, From),
            ("mcr.microsoft.com/powershell:lts", 6, CopyFrom),
        ]
    );
}

#[test]
fn heredoc_bodies_are_not_instructions() {
    let p = parse(
        "FROM alpine\n\
         RUN <<EOF\n\
         FROM evil:1\n\
         COPY --from=evil2 a b\n\
         EOF\n\
         COPY <<-EOT /etc/x\n\
         \tFROM evil3\n\
         \tEOT\n\
         FROM busybox\n",
    );
    assert_eq!(refs(&p), [("alpine", 1, From), ("busybox", 9, From)]);
}

#[test]
fn global_arg_forms() {
    let p = parse(
        "ARG REG=registry.example.org\n\
         ARG TAG=1.0\n\
         ARG EMPTY\n\
         FROM $REG/a:$TAG\n\
         FROM ${REG}/b:${TAG}\n\
         FROM ${REG}/c:${MISSING:-2.0}\n\
         FROM ${REG}/d${TAG:+-tagged}\n\
         FROM ${REG}/e${EMPTY:+-never}\n",
    );
    assert_eq!(
        images_of(&p),
        [
            "registry.example.org/a:1.0",
            "registry.example.org/b:1.0",
            "registry.example.org/c:2.0",
            "registry.example.org/d-tagged",
            "registry.example.org/e",
        ]
    );
    assert!(p.warnings.is_empty());
}

fn images_of(p: &ParsedDockerfile) -> Vec<&str> {
    p.images.iter().map(|i| i.reference.as_str()).collect()
}

#[test]
fn arg_defaults_reference_earlier_args_and_quotes() {
    let p = parse("ARG A=reg.io B=\"${A}/img\"\nFROM ${B}:1\n");
    assert_eq!(images_of(&p), ["reg.io/img:1"]);
}

#[test]
fn overrides_apply_to_declared_args_only() {
    let content =
        "ARG TAG=1.0\nARG NODEFAULT\nFROM img:${TAG}\nFROM other:$NODEFAULT\nFROM x:$UNDECLARED\n";
    let p = parse_with(
        content,
        &[("TAG", "2.0"), ("NODEFAULT", "3"), ("UNDECLARED", "4")],
    );
    assert_eq!(images_of(&p), ["img:2.0", "other:3"]);
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].line, 5);
    assert!(p.warnings[0].message.contains("UNDECLARED"));
}

#[test]
fn predefined_platform_args_accept_overrides() {
    let content = "FROM base-${TARGETARCH}:1\n";
    assert_eq!(parse(content).warnings.len(), 1);
    let p = parse_with(content, &[("TARGETARCH", "amd64")]);
    assert_eq!(images_of(&p), ["base-amd64:1"]);
}

#[test]
fn unresolved_reference_is_a_warning() {
    let p = parse(
        "ARG BASE\n\
         ARG TAG=${NOPE}-slim\n\
         FROM $BASE\n\
         FROM debian:$TAG\n\
         FROM ${BASE:-}\n\
         FROM img${BASE#x}\n\
         FROM ok\n",
    );
    assert_eq!(refs(&p), [("ok", 7, From)]);
    let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, [3, 4, 5, 6]);
    assert!(p.warnings[0].message.contains("BASE"));
}

#[test]
fn stage_args_do_not_apply_to_from_lines() {
    let p = parse("FROM a\nARG IMG=b\nFROM $IMG\n");
    assert_eq!(images_of(&p), ["a"]);
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].line, 3);
}

#[test]
fn variables_in_from_flags_are_warnings() {
    // BuildKit expands variables in neither `COPY --from` nor a mount's
    // `from=`: the build fails, so no image is read from them.
    let p = parse(
        "ARG IMG=reg.io/tools:1\n\
         FROM a\n\
         COPY --from=${IMG} /x /y\n\
         ARG IMG\n\
         ARG LOCAL=tools:2\n\
         COPY --from=$LOCAL /x /y\n\
         RUN --mount=type=bind,from=${IMG},target=/m true\n\
         COPY --from=\"nginx:1\" /x /y\n",
    );
    assert_eq!(refs(&p), [("a", 2, From), ("nginx:1", 8, CopyFrom)]);
    let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, [3, 6, 7]);
    assert!(
        p.warnings[0]
            .message
            .contains("does not expand variables in --from")
    );
    assert!(p.warnings[2].message.contains("--mount from="));
}

#[test]
fn digests_tags_and_ports_kept_verbatim() {
    let digest = "sha256:".to_owned() + &"a".repeat(64);
    let content = format!(
        "FROM debian@{digest}\nFROM registry.example.org:5050/g/p/img:1.0@{digest}\nFROM localhost:5000/x\n"
    );
    assert_eq!(
        images(&content),
        [
            format!("debian@{digest}"),
            format!("registry.example.org:5050/g/p/img:1.0@{digest}"),
            "localhost:5000/x".to_owned(),
        ]
    );
}

#[test]
fn copy_from_image_stage_or_index() {
    let p = parse(
        "FROM alpine AS builder\n\
         FROM debian\n\
         COPY --from=builder /a /a\n\
         COPY --from=0 /a /a\n\
         COPY --from=12 /a /a\n\
         COPY --from=Builder /a /a\n\
         COPY --from=nginx:latest /etc/nginx /etc/nginx\n\
         COPY --chown=1:1 --from=later /a /a\n\
         COPY --link --from=registry.example.org/g/p:1 /b /b\n\
         FROM busybox AS later\n",
    );
    assert_eq!(
        refs(&p),
        [
            ("alpine", 1, From),
            ("debian", 2, From),
            ("nginx:latest", 7, CopyFrom),
            ("registry.example.org/g/p:1", 9, CopyFrom),
            ("busybox", 10, From),
        ]
    );
}

#[test]
fn run_mount_from() {
    let p = parse(
        "FROM alpine AS tools\n\
         FROM debian\n\
         RUN --mount=type=bind,from=tools,target=/t true\n\
         RUN --mount=type=bind,from=golang:1.22,source=/usr/local/go,target=/go true\n\
         RUN --mount=from=img-default-bind,target=/x true\n\
         RUN --mount=type=cache,target=/root/.cache,from=cache-img:1 true\n\
         RUN --mount=type=secret,id=x,from=not-an-image true\n\
         RUN --mount=type=tmpfs,target=/tmp --mount=\"type=bind\",\"from=quoted:1\" true\n\
         RUN --network=none --mount=type=bind,from=0,target=/z true\n",
    );
    assert_eq!(
        refs(&p),
        [
            ("alpine", 1, From),
            ("debian", 2, From),
            ("golang:1.22", 4, MountFrom),
            ("img-default-bind", 5, MountFrom),
            ("cache-img:1", 6, MountFrom),
            ("quoted:1", 8, MountFrom),
        ]
    );
}

#[test]
fn onbuild_is_ignored() {
    assert_eq!(images("FROM a\nONBUILD COPY --from=b / /\n"), ["a"]);
}

#[test]
fn crlf_and_bom() {
    let p = parse("\u{feff}FROM a\r\nRUN x\r\nFROM b AS c\r\n");
    assert_eq!(refs(&p), [("a", 1, From), ("b", 3, From)]);
}

#[test]
fn quoted_and_escaped_references() {
    let p = parse("FROM \"debian:12\"\nFROM a\\$b\n");
    assert_eq!(images_of(&p), ["debian:12"]);
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn only_a_file_without_from_is_an_error() {
    let none = BTreeMap::new();
    assert_eq!(
        parse_dockerfile("RUN x\n", &none, &[]),
        Err(DockerfileError::NoStage)
    );
    assert_eq!(
        parse_dockerfile("", &none, &[]),
        Err(DockerfileError::NoStage)
    );
    // A FROM swallowed by a heredoc body does not count.
    assert_eq!(
        parse_dockerfile("RUN <<EOF\nFROM a\nEOF\n", &none, &[]),
        Err(DockerfileError::NoStage)
    );
}

#[test]
fn bad_lines_are_warnings_and_the_rest_is_read() {
    let p = parse(
        "FROM a\n\
         BOGUS x\n\
         hello world\n\
         FROM\n\
         FROM b AS\n\
         FROM c extra words here\n\
         COPY --from=d /x /y\n\
         RUN <<EOF\n\
         FROM e\n",
    );
    assert_eq!(
        refs(&p),
        [("a", 1, From), ("d", 7, CopyFrom), ("e", 9, From)]
    );
    let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 8]);
    assert!(
        p.warnings[0]
            .message
            .contains("unknown instruction \"BOGUS\"")
    );
    assert!(p.warnings[5].message.contains("never terminated"));
}

#[test]
fn empty_entrypoint_and_cmd_are_valid() {
    // Every current Tomcat image ends like this.
    let p = parse(
        "FROM eclipse-temurin:21-jre\n\
         ENTRYPOINT []\n\
         CMD []\n\
         CMD [\"catalina.sh\", \"run\"]\n\
         FROM tomcat:10\n",
    );
    assert_eq!(
        refs(&p),
        [("eclipse-temurin:21-jre", 1, From), ("tomcat:10", 5, From)]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn heredocs_anywhere_on_the_instruction_line() {
    let p = parse(
        "FROM alpine\n\
         RUN cat <<EOF >> /etc/motd\n\
         hello\n\
         FROM evil1\n\
         EOF\n\
         RUN 5<<F cat /proc/self/fd/5\n\
         FROM evil2\n\
         F\n\
         RUN <<-EOT sh\n\
         \tFROM evil3\n\
         \tEOT\n\
         RUN <<\"QUOTED\" cat\n\
         FROM $evil4\n\
         QUOTED\n\
         COPY <<A <<'B' /dst/\n\
         FROM evil5\n\
         A\n\
         FROM evil6\n\
         B\n\
         ADD --chmod=644 <<CONF /etc/x.conf\n\
         FROM evil7\n\
         CONF\n\
         RUN echo \\\n\
         \x20 <<EOF cat\n\
         FROM evil8\n\
         EOF\n\
         FROM busybox\n",
    );
    assert_eq!(refs(&p), [("alpine", 1, From), ("busybox", 27, From)]);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn here_strings_and_quoted_markers_are_not_heredocs() {
    let p = parse(
        "FROM alpine\n\
         RUN cat <<<word\n\
         RUN echo \"<<EOF\"\n\
         RUN [\"sh\", \"-c\", \"<<EOF\"]\n\
         FROM busybox\n",
    );
    assert_eq!(refs(&p), [("alpine", 1, From), ("busybox", 5, From)]);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn platform_args_are_always_defined() {
    let digest = "sha256:".to_owned() + &"b".repeat(64);
    let content = format!(
        "FROM quay.io/x/busybox${{TARGETARCH:+@{digest}}}\n\
         FROM golang:1.22${{TARGETARCH:-x}}\n\
         FROM alpine AS bin-linux\n\
         FROM bin-${{TARGETOS}}\n\
         FROM tools:${{BUILDOS}}-${{BUILDARCH}}${{TARGETVARIANT:+-}}${{TARGETVARIANT}}\n"
    );
    let p = parse_for(&content, &["linux/amd64"]);
    assert_eq!(
        refs(&p),
        [
            (format!("quay.io/x/busybox@{digest}").as_str(), 1, From),
            ("golang:1.22amd64", 2, From),
            ("alpine", 3, From),
            ("tools:linux-amd64", 5, From),
        ]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn platforms_are_evaluated_each_and_merged() {
    let content = "ARG TARGETARCH\n\
                   FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n\
                   FROM base-${TARGETARCH}${TARGETVARIANT:+-}${TARGETVARIANT}:1\n\
                   FROM common:1\n\
                   FROM img:${TARGETPLATFORM//\\//-}\n";
    let p = parse_for(content, &["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    assert_eq!(
        refs(&p),
        [
            ("golang:1.22", 2, From),
            ("base-amd64:1", 3, From),
            ("base-arm64:1", 3, From),
            ("base-arm-v7:1", 3, From),
            ("common:1", 4, From),
            ("img:linux-amd64", 5, From),
            ("img:linux-arm64", 5, From),
            ("img:linux-arm-v7", 5, From),
        ]
    );
    // Unset platform args are a warning once, not once per platform.
    let p = parse_for("FROM a:$NOPE\n", &["linux/amd64", "linux/arm64"]);
    assert_eq!(p.warnings.len(), 1);
}

#[test]
fn build_platform_is_the_first_platform() {
    let p = parse_for(
        "FROM tool:${BUILDARCH}-for-${TARGETARCH}\n",
        &["linux/amd64", "linux/arm64"],
    );
    assert_eq!(
        images_of(&p),
        ["tool:amd64-for-amd64", "tool:amd64-for-arm64"]
    );
}

#[test]
fn platform_args_yield_to_overrides() {
    let overrides = BTreeMap::from([("TARGETARCH".to_owned(), "s390x".to_owned())]);
    let p = parse_dockerfile(
        "FROM base-${TARGETARCH}\n",
        &overrides,
        &platforms(&["linux/amd64", "linux/arm64"]),
    )
    .unwrap();
    assert_eq!(images_of(&p), ["base-s390x"]);
}

#[test]
fn trims_and_replacements() {
    let p = parse(
        "ARG V=3.20.1\n\
         ARG IMG=registry.example.org/group/app:1.2-alpine\n\
         FROM alpine:${V%.*}\n\
         FROM debian:${V%%.*}\n\
         FROM node:${V#*.}\n\
         FROM ruby:${V##*.}\n\
         FROM ${IMG/-alpine/-slim}\n\
         FROM x:${V//./-}\n\
         FROM ${IMG%:*}:latest\n\
         FROM y:${V/#3/4}\n",
    );
    assert_eq!(
        images_of(&p),
        [
            "alpine:3.20",
            "debian:3",
            "node:20.1",
            "ruby:1",
            "registry.example.org/group/app:1.2-slim",
            "x:3-20-1",
            "registry.example.org/group/app:latest",
            "y:3.20.1",
        ]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn bare_arg_keeps_its_earlier_default() {
    let p = parse("ARG V=3.20\nARG V\nFROM alpine:$V\n");
    assert_eq!(images_of(&p), ["alpine:3.20"]);
    assert!(p.warnings.is_empty());
}

#[test]
fn warnings_have_lines_and_messages() {
    let p = parse("FROM a\nFROM b:$X\n");
    assert_eq!(
        warnings(&p),
        [(
            2,
            "cannot resolve image reference \"b:$X\": ARG X has no value"
        )]
    );
}

#[test]
fn windows_crlf_with_backtick_escape() {
    let p = parse(
        "# escape=`\r\nFROM mcr.microsoft.com/dotnet/sdk:8.0 `\r\n  AS build\r\nRUN dir `\r\n  c:\\\r\nFROM build\r\n",
    );
    assert_eq!(refs(&p), [("mcr.microsoft.com/dotnet/sdk:8.0", 2, From)]);
}

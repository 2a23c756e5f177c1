//! Build checks: each rule with a Dockerfile that triggers it and one that does not, the
//! `# check=` options, and which stages are checked.

use super::*;

/// `(rule, line, message)` of every finding of `check` on `req`.
fn findings_of(req: &BuildRequest<'_>) -> Vec<(&'static str, usize, String)> {
    let report = check(req, &MockResolver::default());
    report
        .warnings
        .iter()
        .map(|w| (w.rule.map_or("", |r| r.name), w.span.as_ref().map_or(0, |s| s.start_line), w.message.clone()))
        .collect()
}

fn findings(src: &str) -> Vec<(&'static str, usize, String)> {
    findings_of(&request(src))
}

/// `src` gives exactly one finding of `rule`, at `line`, saying `msg`.
macro_rules! triggers {
    ($src:expr, $rule:expr, $line:expr, $msg:expr) => {
        let all = findings($src);
        let hits: Vec<_> = all.iter().filter(|f| f.0 == $rule).collect();
        assert_eq!(hits.len(), 1, "{:?}: {all:?}", $src);
        assert_eq!((hits[0].1, hits[0].2.as_str()), ($line, $msg), "{:?}", $src);
    };
}

/// `src` gives no finding of `rule`.
macro_rules! clean {
    ($src:expr, $rule:expr) => {
        let all = findings($src);
        assert!(all.iter().all(|f| f.0 != $rule), "{:?}: {all:?}", $src);
    };
}

#[test]
fn stage_name_casing() {
    triggers!("FROM busybox AS Build\n", "StageNameCasing", 1, "Stage name 'Build' should be lowercase");
    clean!("FROM busybox AS build\n", "StageNameCasing");
}

#[test]
fn from_as_casing() {
    triggers!("FROM busybox as build\n", "FromAsCasing", 1, "'as' and 'FROM' keywords' casing do not match");
    triggers!("from busybox AS build\n", "FromAsCasing", 1, "'AS' and 'from' keywords' casing do not match");
    clean!("from busybox as build\n", "FromAsCasing");
    // Mixed-case FROM is left to ConsistentInstructionCasing.
    clean!("From busybox as build\n", "FromAsCasing");
}

#[test]
fn no_empty_continuation() {
    triggers!("FROM busybox\nRUN a \\\n\n  b\n", "NoEmptyContinuation", 4, "Empty continuation line");
    clean!("FROM busybox\nRUN a \\\n  b\n", "NoEmptyContinuation");
}

#[test]
fn consistent_instruction_casing() {
    triggers!(
        "FROM busybox\nrun true\nRUN x\nCOPY a b\n",
        "ConsistentInstructionCasing",
        2,
        "Command 'run' should match the case of the command majority (uppercase)"
    );
    triggers!(
        "From busybox\nrun true\n",
        "ConsistentInstructionCasing",
        1,
        "Command 'From' should match the case of the command majority (lowercase)"
    );
    clean!("from busybox\nrun true\ncopy a b\n", "ConsistentInstructionCasing");
    // ARGs before the first FROM are not counted.
    clean!("arg V=1\nFROM busybox\nRUN x\n", "ConsistentInstructionCasing");
}

#[test]
fn duplicate_and_reserved_stage_names() {
    triggers!(
        "FROM busybox AS b\nFROM busybox AS B\n",
        "DuplicateStageName",
        2,
        "Duplicate stage name \"b\", stage names should be unique"
    );
    clean!("FROM busybox AS b1\nFROM busybox AS b2\n", "DuplicateStageName");
    triggers!(
        "FROM busybox AS context\n",
        "ReservedStageName",
        1,
        "Stage name should not use the same name as reserved stage \"context\""
    );
    clean!("FROM scratch\nFROM scratch AS a\n", "ReservedStageName");
}

#[test]
fn json_args_recommended() {
    let msg = "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals";
    triggers!("FROM busybox\nENTRYPOINT my-app\n", "JSONArgsRecommended", 2, msg);
    let msg = "JSON arguments recommended for cmd to prevent unintended behavior related to OS signals";
    triggers!("from busybox\ncmd my-app\n", "JSONArgsRecommended", 2, msg);
    clean!("FROM busybox\nCMD [\"my-app\"]\n", "JSONArgsRecommended");
    clean!("FROM scratch AS base\nSHELL [\"/bin/bash\", \"-c\"]\nFROM base\nCMD my-app\n", "JSONArgsRecommended");
    // The base image's SHELL counts too.
    clean!("FROM bash\nCMD my-app\n", "JSONArgsRecommended");
}

#[test]
fn maintainer_deprecated() {
    triggers!(
        "FROM busybox\nMAINTAINER me@example.org\n",
        "MaintainerDeprecated",
        2,
        "Maintainer instruction is deprecated in favor of using label"
    );
    clean!("FROM busybox\nLABEL org.opencontainers.image.authors=me@example.org\n", "MaintainerDeprecated");
}

#[test]
fn undefined_arg_in_from() {
    triggers!(
        "ARG tag=latest\nFROM busybox${version}\n",
        "UndefinedArgInFrom",
        2,
        "FROM argument 'version' is not declared"
    );
    triggers!(
        "ARG VERSION\nFROM --platform=$BUILDPLATFORM busybox${VERSON}\n",
        "UndefinedArgInFrom",
        2,
        "FROM argument 'VERSON' is not declared (did you mean VERSION?)"
    );
    // Declared without a value, or predefined: fine.
    clean!("ARG V\nFROM busybox${V}\n", "UndefinedArgInFrom");
    clean!("FROM --platform=$BUILDPLATFORM busybox\n", "UndefinedArgInFrom");
}

#[test]
fn workdir_relative_path() {
    triggers!(
        "FROM busybox\nWORKDIR app/\n",
        "WorkdirRelativePath",
        2,
        "Relative workdir \"app/\" can have unexpected results if the base image changes"
    );
    // Only the first WORKDIR of the build counts, stages built on stages included.
    clean!("FROM busybox AS a\nWORKDIR /app\nFROM a\nWORKDIR sub/\n", "WorkdirRelativePath");
    clean!("FROM busybox\nARG D=/srv\nWORKDIR $D\n", "WorkdirRelativePath");
}

#[test]
fn undefined_var() {
    triggers!("FROM busybox\nCOPY $foo .\nARG foo=bar\n", "UndefinedVar", 2, "Usage of undefined variable '$foo'");
    triggers!(
        "FROM busybox\nENV PATH=$PAHT:/tmp/bin\n",
        "UndefinedVar",
        2,
        "Usage of undefined variable '$PAHT' (did you mean $PATH?)"
    );
    triggers!(
        "FROM busybox\nARG A=1 B=${A}${C}\n",
        "UndefinedVar",
        2,
        "Usage of undefined variable '$C' (did you mean $A?)"
    );
    // Declared ARGs (even without a value, even in the parent stage), and RUN commands, are fine.
    clean!("FROM busybox\nARG foo\nCOPY Dockerfile${foo} .\n", "UndefinedVar");
    clean!("FROM busybox AS base\nARG foo=x\nFROM base\nCOPY $foo .\n", "UndefinedVar");
    clean!("FROM busybox\nRUN echo $nothing\n", "UndefinedVar");
}

#[test]
fn multiple_instructions_disallowed() {
    let msg = |i: &str| {
        format!("Multiple {i} instructions should not be used in the same stage because only the last one will be used")
    };
    triggers!(
        "FROM busybox\nCMD [\"a\"]\nRUN x\nCMD [\"b\"]\n",
        "MultipleInstructionsDisallowed",
        2,
        msg("CMD").as_str()
    );
    triggers!(
        "FROM busybox\nHEALTHCHECK CMD [\"a\"]\nHEALTHCHECK NONE\n",
        "MultipleInstructionsDisallowed",
        2,
        msg("HEALTHCHECK").as_str()
    );
    clean!(
        "FROM busybox AS a\nENTRYPOINT [\"a\"]\nCMD [\"a\"]\nFROM a\nENTRYPOINT [\"b\"]\nCMD [\"b\"]\n",
        "MultipleInstructionsDisallowed"
    );
}

#[test]
fn legacy_key_value_format() {
    triggers!(
        "FROM busybox\nENV key value\n",
        "LegacyKeyValueFormat",
        2,
        "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
    );
    triggers!(
        "FROM busybox\nLABEL key value\n",
        "LegacyKeyValueFormat",
        2,
        "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
    );
    clean!("FROM busybox\nENV key=value\nLABEL key=value\n", "LegacyKeyValueFormat");
}

#[test]
fn invalid_base_image_platform() {
    // The mock resolver has only linux/amd64 images.
    let mut req = request("FROM busybox\n");
    req.platform = Platform { os: "linux".into(), architecture: "arm64".into(), variant: None };
    let f = findings_of(&req);
    assert_eq!(
        f,
        [(
            "InvalidBaseImagePlatform",
            1,
            "Base image busybox was pulled with platform \"linux/amd64\", expected \"linux/arm64\" for current build"
                .to_owned()
        )]
    );
    clean!("FROM busybox\n", "InvalidBaseImagePlatform");
    // Scratch and layerless images have no platform to compare.
    req.dockerfile = b"FROM scratch\nFROM empty\n";
    assert!(findings_of(&req).is_empty());
}

#[test]
fn redundant_target_platform() {
    triggers!(
        "FROM --platform=${TARGETPLATFORM} busybox\n",
        "RedundantTargetPlatform",
        1,
        "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior"
    );
    clean!("FROM --platform=$BUILDPLATFORM busybox\n", "RedundantTargetPlatform");
}

#[test]
fn secrets_used_in_arg_or_env() {
    triggers!(
        "FROM busybox\nARG GITHUB_TOKEN\n",
        "SecretsUsedInArgOrEnv",
        2,
        "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")"
    );
    triggers!(
        "FROM busybox\nARG N=password\nENV ${N}=x\n",
        "SecretsUsedInArgOrEnv",
        3,
        "Do not use ARG or ENV instructions for sensitive data (ENV \"password\")"
    );
    clean!("FROM busybox\nARG PUBLIC_KEY\nENV TOKEN_FILE=/run/t sunflower=1\n", "SecretsUsedInArgOrEnv");
}

#[test]
fn invalid_default_arg_in_from() {
    let mut req = request("ARG TAG\nFROM busybox:$TAG\n");
    req.build_args.insert("TAG".into(), "latest".into());
    let f = findings_of(&req);
    assert_eq!(
        f,
        [(
            "InvalidDefaultArgInFrom",
            2,
            "Default value for ARG busybox:$TAG results in empty or invalid base image name".to_owned()
        )]
    );
    let mut req = request("ARG TAG=latest\nFROM busybox:$TAG\n");
    req.build_args.insert("TAG".into(), "latest".into());
    assert!(findings_of(&req).is_empty());
    clean!("ARG VARIANT\nFROM busybox${VARIANT}\n", "InvalidDefaultArgInFrom");
}

#[test]
fn from_platform_flag_const_disallowed() {
    triggers!(
        "FROM --platform=linux/amd64 busybox\n",
        "FromPlatformFlagConstDisallowed",
        1,
        "FROM --platform flag should not use constant value \"linux/amd64\""
    );
    clean!("FROM --platform=linux/amd64 busybox AS build_amd64\n", "FromPlatformFlagConstDisallowed");
    clean!("FROM --platform=$BUILDPLATFORM busybox\n", "FromPlatformFlagConstDisallowed");
}

#[test]
fn copy_ignored_file() {
    // `request` ignores `*.log`.
    triggers!(
        "FROM busybox\nCOPY ./app.log /\n",
        "CopyIgnoredFile",
        2,
        "Attempting to Copy file \"app.log\" that is excluded by .dockerignore"
    );
    triggers!(
        "FROM busybox\nARG F=x.log\nADD $F /\n",
        "CopyIgnoredFile",
        3,
        "Attempting to Add file \"x.log\" that is excluded by .dockerignore"
    );
    clean!("FROM busybox\nCOPY app.txt /\nADD https://example.com/a.log /\n", "CopyIgnoredFile");
    clean!("FROM busybox AS a\nFROM busybox\nCOPY --from=a /app.log /\n", "CopyIgnoredFile");
}

#[test]
fn expose_proto_casing_and_invalid_format() {
    triggers!(
        "FROM busybox\nEXPOSE 80/TcP 8080/udp\n",
        "ExposeProtoCasing",
        2,
        "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase"
    );
    triggers!(
        "FROM busybox\nARG P=127.0.0.1:80:8080\nEXPOSE $P\n",
        "ExposeInvalidFormat",
        3,
        "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:8080'"
    );
    clean!("FROM busybox\nEXPOSE 80 443/tcp 53/udp 7000-7002\n", "ExposeProtoCasing");
    clean!("FROM busybox\nEXPOSE 80 443/tcp 53/udp 7000-7002\n", "ExposeInvalidFormat");
}

#[test]
fn experimental_rules_need_opting_in() {
    let src = "# check=experimental=InvalidDefinitionDescription\nFROM busybox\n# the build arg\nARG V=1\n";
    assert_eq!(
        findings(src),
        [(
            "InvalidDefinitionDescription",
            4,
            "Comment for ARG should follow the format: `# V <description>`".to_owned()
        )]
    );
    assert!(findings("FROM busybox\n# the build arg\nARG V=1\n").is_empty());
    let src = "# check=skip=all;experimental=all\n# Build the stage\nFROM busybox AS build\n# two of them\nARG A=1 B=2\n#\nARG C=3\n";
    let f: Vec<String> = findings(src).into_iter().map(|(_, line, msg)| format!("{line}: {msg}")).collect();
    assert_eq!(
        f,
        [
            "3: Comment for FROM should follow the format: `# build <description>`",
            "5: Comment for ARG should follow the format: `# <arg_key> <description>`",
        ],
        "skip=all leaves experimental rules on; an empty `#` line ends a description"
    );
    assert!(findings("# check=experimental=all\nFROM busybox\n# V the build arg\nARG V=1\n").is_empty());
}

#[test]
fn check_directive_skips_rules() {
    assert!(findings("# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM busybox\nCMD x\nMAINTAINER m\n")
        .is_empty());
    assert!(findings("# check=skip=all\nFROM busybox as Base\nCMD x\n").is_empty());
    // A comment above one instruction skips for that instruction only.
    let f = findings("FROM busybox\n# check=skip=JSONArgsRecommended // on purpose\nCMD x\nENTRYPOINT y\n");
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].1, 4);
}

#[test]
fn check_error_fails_the_build() {
    let e = conv_err("# check=error=true\nFROM busybox\nCMD x\n");
    assert_eq!(e.to_string(), "lint violation found for rules: JSONArgsRecommended");
    assert!(e.hint().is_some_and(|h| h.contains("check=skip")));
    assert_eq!(e.warnings().len(), 1);
    assert_eq!(e.warnings()[0].short(), "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)");
    // Nothing found: the build goes on.
    conv("# check=error=true\nFROM busybox\nCMD [\"x\"]\n");
    // The build arg replaces the directive.
    let mut req = request("# check=error=true\nFROM busybox\nCMD x\n");
    req.build_args.insert("BUILDKIT_DOCKERFILE_CHECK".into(), "skip=all".into());
    assert!(build(&req, &MockResolver::default()).is_ok());
    req.build_args.insert("BUILDKIT_DOCKERFILE_CHECK".into(), "error=nope".into());
    let e = build(&req, &MockResolver::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: failed to parse check option \"error=nope\": invalid syntax"
    );
    let e = conv_err("# check=bogus\nFROM busybox\n");
    assert_eq!(e.to_string(), "failed to parse check options: invalid check option \"bogus\"");
}

#[test]
fn findings_come_with_errors() {
    let e = conv_err("FROM busybox AS Bad\nMAINTAINER me\nBADCMD\n");
    assert!(e.to_string().contains("unknown instruction: BADCMD"), "{e}");
    let rules: Vec<_> = e.warnings().iter().filter_map(|w| w.rule.map(|r| r.name)).collect();
    assert_eq!(rules, ["StageNameCasing", "MaintainerDeprecated"]);
    // Base images are resolved before any stage is dispatched (as BuildKit does): a missing one
    // leaves only the findings that need no stage state.
    let report = check(&request("FROM busybox\nCMD x\nMAINTAINER m\nFROM nosuchimage\n"), &MockResolver::default());
    let rules: Vec<_> = report.warnings.iter().filter_map(|w| w.rule.map(|r| r.name)).collect();
    assert_eq!(rules, ["MaintainerDeprecated"]);
    assert!(report.error.is_some_and(|e| e.to_string().contains("nosuchimage")));
}

#[test]
fn builds_check_only_the_stages_they_need() {
    let src = "FROM busybox AS a\nFROM a AS b\nENV k v\nFROM a AS c\nCMD [\"c\"]\n";
    // `check` looks at every stage, a build at those its target needs.
    assert_eq!(findings(src).len(), 1);
    assert!(conv(src).warnings.is_empty());
    let mut req = request(src);
    req.target = Some("c".into());
    assert!(findings_of(&req).is_empty());
    // Unsupported features are the builder's concern, not the checks'.
    let report = check(&request("FROM busybox\nRUN --device=/dev/x true\n"), &MockResolver::default());
    assert!(report.error.is_none() && report.warnings.is_empty(), "{report:?}");
}

#[test]
fn warning_forms() {
    let def = conv("FROM busybox\nENTRYPOINT my-app\n");
    let w = &def.warnings[0];
    assert_eq!(
        w.short(),
        "JSONArgsRecommended: JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals (line 2)"
    );
    let j = w.to_json();
    assert_eq!(j["ruleName"], "JSONArgsRecommended");
    assert_eq!(j["url"], "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/");
    assert_eq!(j["location"]["ranges"][0]["start"]["line"], 2);
    assert_eq!(crate::lint::rules::ALL.len(), 22);
}

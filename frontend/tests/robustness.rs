//! No input may panic the frontend: mutated BuildKit test Dockerfiles and hostile snippets go
//! through parse → typed instructions → conversion (a cheap stand-in between fuzzing runs).

use std::collections::BTreeMap;
use std::path::Path;

use rbuild_frontend::{build, parse, BuildRequest, ImageResolver, ResolveError, ResolvedImage};
use rbuild_solver::ir::Platform;

struct AnyImage;

impl ImageResolver for AnyImage {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, ResolveError> {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Cmd":["sh"]},
            "rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#;
        let config = serde_json::from_str(json).map_err(|e| ResolveError::Registry(Box::new(e)))?;
        Ok(ResolvedImage { reference: reference.to_owned(), digest: "sha256:00".into(), config, raw_config: None })
    }
}

fn run_all(input: &[u8]) {
    let _ = parse(input).map(|p| rbuild_frontend::dump(&p.nodes));
    let mut build_args = BTreeMap::new();
    build_args.insert("A".to_owned(), "x".to_owned());
    let req = BuildRequest {
        dockerfile: input,
        filename: "Dockerfile".into(),
        build_args,
        target: None,
        platform: Platform { os: "linux".into(), architecture: "amd64".into(), variant: None },
        multi_platform: true,
        context_excludes: Vec::new(),
        no_cache: false,
        named_contexts: BTreeMap::new(),
        run_defaults: Default::default(),
    };
    if let Err(e) = build(&req, &AnyImage) {
        let _ = (e.to_string(), e.span(), e.hint());
    }
    // The build checks on every stage (conversion already ran them on the target's), and the
    // target list. (The outline's capture runs in every conversion; `outline()` itself only
    // adds a walk over the result, so it is left out to keep this test quick.)
    let report = rbuild_frontend::check(&req, &AnyImage);
    let _ = report.warnings.iter().map(rbuild_frontend::Warning::short).count();
    let _ = rbuild_frontend::targets(input, "Dockerfile");
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

const TOKENS: &[&[u8]] = &[
    b"\\",
    b"`",
    b"\n",
    b"\r\n",
    b"#",
    b"# escape=`\n",
    b"# check=skip=all;error=true\n",
    b"<<EOF",
    b"<<-'E'",
    b"EOF\n",
    b"\"",
    b"'",
    b"$",
    b"${",
    b"}",
    b"${A:-",
    b"[",
    b"]",
    b"[\"a\",",
    b"--from=0 ",
    b"--mount=x ",
    b"ONBUILD ",
    b"FROM ",
    b"AS x\n",
    b"COPY ",
    b"RUN ",
    b"ENV ",
    b"ARG ",
    b"WORKDIR ",
    b"=",
    b"\xff",
    b"\0",
    b"\t",
    b" ",
    b"\xe2\x80\xa8",
    b"HEALTHCHECK ",
    b"EXPOSE 1-65535 ",
    b"--chmod=7777 ",
    b"--link ",
    b"--parents ",
    b"--exclude=*.md ",
    b"--mount=type=cache,target=/c ",
    b"--mount=type=secret,id=s,env=S ",
    b"--mount=from=0,target=/x ",
    b"ADD https://example.com/a.tgz ",
    b"ADD git@host:r.git#main:sub ",
    b"--checksum=sha256:00 ",
    b"--interval=1s ",
    b"#!/bin/sh\n",
];

#[test]
fn hostile_snippets() {
    let cases: &[&[u8]] = &[
        b"",
        b"\\",
        b"`",
        b"#",
        b"FROM",
        b"FROM \\",
        b"FROM a\nRUN <<EOF",
        b"FROM a\nCOPY <<A <<B /\nA\n",
        b"FROM a AS\0",
        b"\xef\xbb\xbf",
        b"FROM a\nENV =",
        b"FROM a\nENV a=\"",
        b"FROM a\nARG =",
        b"FROM a\nEXPOSE 0-65535/udp",
        b"FROM a\nCOPY --from=-1 a b",
        b"FROM a\nCOPY --from=99999999999999999999 a b",
        b"FROM a\nWORKDIR ${",
        b"FROM a\nHEALTHCHECK --retries=-1 CMD x",
        b"FROM $A$A$A\n",
        b"FROM --platform= a",
        b"FROM --platform=//// a",
        b"FROM a\nSHELL []",
        b"FROM a\nCMD [1]",
        b"FROM a\nUSER ${x:?}",
        b"FROM scratch\nCOPY --from=scratch a b",
        b"FROM a AS b\nFROM b AS a\nFROM a",
        b"FROM a AS b\nONBUILD COPY --from=b x y\nFROM b",
        b"FROM a\nRUN --mount=type=tmpfs,size=99999999999999999999999g,target=/t x",
        b"FROM a\nRUN --mount=from=99999999999999999999,target=/x x",
        b"FROM a\nHEALTHCHECK --interval=9999999999999h CMD x",
        b"FROM a\nADD https://h/r.git?ref=a&ref=b /x",
        b"FROM a\nCOPY --link --chown=a:b <<EOF <<EOF /x\nEOF\nEOF\n",
        b"FROM a\nRUN <<EOF\n#!\nEOF\n",
    ];
    for c in cases {
        run_all(c);
    }
    let deep = format!("FROM a\n{}RUN x", "ONBUILD ".repeat(50_000));
    run_all(deep.as_bytes());
    let wide = format!("FROM a\nENV {}\nRUN x", (0..20_000).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(" "));
    run_all(wide.as_bytes());
    let many: String = (0..5_000).map(|i| format!("FROM a AS s{i}\nCOPY --from=s{} x y\n", i / 2)).collect();
    run_all(many.as_bytes());
}

#[test]
fn mutated_conformance_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildkit/testfiles");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| std::fs::read(e.path().join("Dockerfile")).ok()).collect())
        .unwrap_or_default();
    seeds.push(b"ARG B=busybox\nFROM $B AS x\nWORKDIR /a\nCOPY --chown=1 . .\nFROM x\nRUN <<EOF\nhi\nEOF\n".to_vec());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut runs = 0;
    for _ in 0..3_000 {
        let Some(seed) = seeds.get(rng.below(seeds.len())) else { break };
        let mut input = seed.clone();
        for _ in 0..=rng.below(6) {
            let pos = rng.below(input.len() + 1);
            match rng.below(4) {
                0 => {
                    let tok = TOKENS[rng.below(TOKENS.len())];
                    input.splice(pos..pos, tok.iter().copied());
                }
                1 if pos < input.len() => {
                    input.remove(pos);
                }
                2 if pos < input.len() => input[pos] = u8::try_from(rng.below(256)).unwrap_or(0),
                _ => input.truncate(pos),
            }
        }
        run_all(&input);
        runs += 1;
    }
    assert!(runs > 0);
}

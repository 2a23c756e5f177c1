//! Fuzzes the whole frontend: `parse` (and BuildKit's dump format), the typed instruction layer,
//! and `build` against a mock resolver whose images carry Docker-only config fields and ONBUILD
//! triggers. Any panic is a bug; so is a graph that does not validate, a target not in the
//! graph, or history naming an op the graph lacks.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rbuild_frontend::{build, instructions, parse, BuildRequest, ImageResolver, ResolveError, ResolvedImage};
use rbuild_solver::ir::Platform;

/// Any reference resolves. References containing `onbuild` carry triggers, `empty` ones have no
/// layers, `missing` ones do not exist.
struct Mock;

impl ImageResolver for Mock {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, ResolveError> {
        if reference.contains("missing") {
            return Err(ResolveError::NotFound);
        }
        let extra = if reference.contains("onbuild") {
            r#","OnBuild":["RUN echo trigger","COPY --from=0 /a /b","ENV T=1","ADD https://example.com/x.git#main /g","RUN --mount=type=cache,target=/c true"],
               "Healthcheck":{"Test":["CMD","true"],"Interval":1000000000},"Shell":["/bin/bash","-c"],"ArgsEscaped":true"#
        } else {
            ""
        };
        let diff_ids = if reference.contains("empty") { "" } else { r#""sha256:00""# };
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["A=1","PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/w","User":"u"{extra}}},
                "rootfs":{{"type":"layers","diff_ids":[{diff_ids}]}}}}"#
        );
        let config = serde_json::from_str(&json).map_err(|e| ResolveError::Registry(Box::new(e)))?;
        Ok(ResolvedImage {
            reference: reference.to_owned(),
            digest: "sha256:00".into(),
            config,
            raw_config: Some(json.into_bytes()),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: which target and build args; the rest: the Dockerfile.
    let (sel, dockerfile) = match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => (0, data),
    };
    if let Ok(parsed) = parse(dockerfile) {
        let _ = rbuild_frontend::dump(&parsed.nodes);
        let _ = instructions::parse_dockerfile(&parsed);
    }
    let mut build_args = BTreeMap::new();
    if sel & 1 != 0 {
        build_args.insert("A".to_owned(), "x y".to_owned());
        build_args.insert("http_proxy".to_owned(), "http://proxy:3128".to_owned());
        build_args.insert("UNUSED".to_owned(), String::new());
    }
    let target = match (sel >> 1) & 3 {
        0 => None,
        1 => Some("build".to_owned()),
        2 => Some("0".to_owned()),
        _ => Some("x".to_owned()),
    };
    let req = BuildRequest {
        dockerfile,
        filename: "Dockerfile".into(),
        build_args,
        target,
        platform: Platform { os: "linux".into(), architecture: "amd64".into(), variant: None },
        multi_platform: sel & 16 != 0,
        context_excludes: Vec::new(),
        no_cache: sel & 8 != 0,
        named_contexts: Default::default(),
        run_defaults: Default::default(),
    };
    match build(&req, &Mock) {
        Ok(def) => {
            def.graph.validate().expect("the frontend built an invalid graph");
            if let Some(t) = def.target {
                assert!(def.graph.op(&t.op).is_some(), "target not in the graph");
            }
            for h in &def.history {
                if let Some(op) = h.layer_op {
                    assert!(def.graph.op(&op).is_some(), "history names an op not in the graph");
                }
            }
            let _ = rbuild_solver::print::to_dot(&def.graph, def.target);
            let _ = rbuild_solver::print::to_json(&def.graph, def.target);
        }
        Err(e) => {
            let _ = (e.to_string(), e.span(), e.hint(), e.diagnostics().len());
        }
    }
});

//! Writes one valid encoding of each message kind, prefixed with the
//! selector byte `aivault_proto::fuzzing::check` expects, into DIR: the
//! starting corpus of `proto/fuzz/run.sh`.

use aivault_proto::*;

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: fuzz-seeds DIR");
        std::process::exit(2);
    };
    let spec = SandboxSpec {
        home: "/run/aivault/runs/70001/home".into(),
        tmp: "/run/aivault/runs/70001/tmp".into(),
        read: vec!["/etc/ssl".into()],
        write: vec![],
        exec: vec![],
        cwd: Some("/run/aivault/runs/70001/work".into()),
        cwd_writable: false,
        tcp_connect: vec![443],
        tcp_bind: vec![],
        limits: Limits::default(),
        require_full_landlock: false,
        isolation: Isolation::DynamicUid,
    };
    let run = RunRequest {
        argv: vec!["git".into(), "push".into()],
        secrets: vec![SecretAsk {
            name: "TOKEN".into(),
            env: Some("GH_TOKEN".into()),
        }],
        timeout_ms: Some(30_000),
        workdir: Some(WorkdirMode::ReadOnly),
        env: vec![("LANG".into(), "C".into())],
    };
    let seeds: Vec<(u8, Vec<u8>)> = vec![
        (
            0,
            encode(&Hello {
                magic: HELLO_MAGIC,
                version: PROTOCOL_VERSION,
                client: "vaultctl".into(),
            }),
        ),
        (
            1,
            encode(&HelloReply {
                version: PROTOCOL_VERSION,
                server: "aivaultd".into(),
                result: Err(WireError::new(ErrorCode::Busy, "busy")),
            }),
        ),
        (
            2,
            encode(&Request {
                id: 7,
                body: RequestBody::SecretSet {
                    scope: WireScope::Own,
                    name: "TOKEN".into(),
                    value: SecretBytes::new(b"value".to_vec()),
                    meta: MetaInput {
                        description: Some("d".into()),
                        tags: vec!["t".into()],
                        expires: Some(1),
                    },
                    mode: SetMode::Rotate,
                },
            }),
        ),
        (
            2,
            encode(&Request {
                id: 8,
                body: RequestBody::Run(run),
            }),
        ),
        (
            3,
            encode(&Response {
                id: 7,
                result: Ok(Reply::Done { version: Some(2) }),
            }),
        ),
        (
            4,
            encode(&RunEvent::Exit(RunExit {
                code: 0,
                reason: EndReason::Exited,
                duration_ms: 3,
                bytes_out: 10,
                redactions: 1,
                message: None,
            })),
        ),
        (5, encode(&RunInput::Stdin(b"input".to_vec()))),
        (
            6,
            encode(&RunnerJob {
                argv: vec!["/usr/bin/true".into()],
                env: vec![],
                sandbox: spec,
                max_output: 1 << 20,
            }),
        ),
        (
            7,
            encode(&RunnerSecrets {
                secrets: vec![(
                    "TOKEN".into(),
                    "TOKEN".into(),
                    SecretBytes::new(b"s".to_vec()),
                )],
            }),
        ),
        (
            8,
            encode(&RunnerEvent::Output {
                stream: Stream::Stdout,
                data: b"out".to_vec(),
            }),
        ),
    ]
    .into_iter()
    .map(|(k, m)| {
        (
            k,
            m.unwrap_or_else(|e| panic!("seed {k} does not encode: {e}")),
        )
    })
    .collect();
    for (i, (kind, body)) in seeds.into_iter().enumerate() {
        let mut data = vec![kind];
        data.extend_from_slice(&body);
        let path = std::path::Path::new(&dir).join(format!("seed-{i}"));
        if let Err(e) = std::fs::write(&path, data) {
            eprintln!("fuzz-seeds: {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

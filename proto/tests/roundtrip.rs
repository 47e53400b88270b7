//! Round-trip properties of the wire messages: every message a peer can
//! build decodes back to itself, a truncated or extended encoding is refused
//! (never misread), and arbitrary bytes never panic a decoder
//! (`aivault_proto::fuzzing`, the same check the fuzz target runs).

use std::path::PathBuf;

use aivault_proto::{
    decode, encode, fuzzing, Charset, EndReason, Enforcement, ImportConflict, Isolation, Level,
    Limits, MetaInput, PageRequest, Request, RequestBody, RunEvent, RunExit, RunInput, RunRequest,
    RunnerEvent, RunnerJob, RunnerSecrets, SandboxSpec, SecretAsk, SecretBytes, SetMode, Stream,
    WireScope, WorkdirMode,
};
use proptest::prelude::*;
use serde::{de::DeserializeOwned, Serialize};

fn round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    msg: &T,
) -> Result<(), TestCaseError> {
    let bytes = encode(msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, msg);
    // One byte more is trailing garbage; one byte less is a short message.
    let mut longer = bytes.clone();
    longer.push(0);
    prop_assert!(decode::<T>(&longer).is_err(), "trailing byte accepted");
    if !bytes.is_empty() {
        let short = &bytes[..bytes.len() - 1];
        if let Ok(other) = decode::<T>(short) {
            prop_assert_ne!(
                &other,
                msg,
                "a truncated encoding decoded to the same message"
            );
        }
    }
    Ok(())
}

fn page() -> impl Strategy<Value = PageRequest> {
    (proptest::option::of(text()), any::<u32>(), any::<u32>()).prop_map(
        |(cursor, max_items, max_bytes)| PageRequest {
            cursor,
            max_items,
            max_bytes,
        },
    )
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

fn scope() -> impl Strategy<Value = WireScope> {
    prop_oneof![Just(WireScope::Own), Just(WireScope::System)]
}

fn run_request() -> impl Strategy<Value = RunRequest> {
    (
        proptest::collection::vec(text(), 0..4),
        proptest::collection::vec((text(), proptest::option::of(text())), 0..3),
        proptest::option::of(any::<u64>()),
        prop_oneof![
            Just(None),
            Just(Some(WorkdirMode::ReadOnly)),
            Just(Some(WorkdirMode::ReadWrite))
        ],
        proptest::collection::vec((text(), text()), 0..3),
    )
        .prop_map(|(argv, secrets, timeout_ms, workdir, env)| RunRequest {
            argv,
            secrets: secrets
                .into_iter()
                .map(|(name, env)| SecretAsk { name, env })
                .collect(),
            timeout_ms,
            workdir,
            env,
        })
}

fn request() -> impl Strategy<Value = Request> {
    let body = prop_oneof![
        Just(RequestBody::Status),
        bytes().prop_map(|p| RequestBody::Unlock {
            passphrase: SecretBytes::new(p)
        }),
        (
            scope(),
            text(),
            bytes(),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..3),
            proptest::option::of(any::<u64>()),
            prop_oneof![
                Just(SetMode::Create),
                Just(SetMode::Upsert),
                Just(SetMode::Rotate)
            ],
        )
            .prop_map(|(scope, name, value, description, tags, expires, mode)| {
                RequestBody::SecretSet {
                    scope,
                    name,
                    value: SecretBytes::new(value),
                    meta: MetaInput {
                        description,
                        tags,
                        expires,
                    },
                    mode,
                }
            }),
        (scope(), proptest::collection::vec((text(), bytes()), 0..3)).prop_map(
            |(scope, entries)| RequestBody::SecretImport {
                scope,
                entries: entries
                    .into_iter()
                    .map(|(n, v)| (n, SecretBytes::new(v)))
                    .collect(),
            }
        ),
        (scope(), text()).prop_map(|(scope, name)| RequestBody::SecretRemove { scope, name }),
        any::<u32>().prop_map(|limit| RequestBody::AuditList { limit }),
        run_request().prop_map(RequestBody::Run),
        Just(RequestBody::PolicyReload),
        (scope(), text(), any::<u32>()).prop_map(|(scope, name, length)| {
            RequestBody::SecretGenerate {
                scope,
                name,
                length,
                charset: Charset::Base64Url,
                meta: MetaInput::default(),
                mode: SetMode::Upsert,
            }
        }),
        (scope(), proptest::collection::vec((text(), bytes()), 0..3)).prop_map(
            |(scope, entries)| RequestBody::SecretImportWith {
                scope,
                entries: entries
                    .into_iter()
                    .map(|(n, v)| (n, SecretBytes::new(v)))
                    .collect(),
                conflict: ImportConflict::Skip,
            }
        ),
        any::<bool>().prop_map(|all| RequestBody::SecretBackup { all }),
        (bytes(), any::<bool>()).prop_map(|(blob, verify_only)| RequestBody::SecretRestore {
            blob,
            verify_only,
            conflict: ImportConflict::Overwrite,
        }),
        (scope(), page()).prop_map(|(scope, page)| RequestBody::SecretListPage { scope, page }),
        (any::<u32>(), page()).prop_map(|(limit, page)| RequestBody::AuditListPage { limit, page }),
        page().prop_map(|page| RequestBody::PolicyCheckPage { page }),
        (scope(), text(), bytes(), text()).prop_map(|(scope, name, value, tag)| {
            RequestBody::SecretImportMeta {
                scope,
                entries: vec![(name, SecretBytes::new(value))],
                conflict: ImportConflict::Overwrite,
                meta: MetaInput {
                    description: None,
                    tags: vec![tag],
                    expires: Some(1),
                },
            }
        }),
        Just(RequestBody::Approvals(aivault_proto::ApprovalRequest::List)),
        (any::<u64>(), any::<bool>()).prop_map(|(id, polkit)| {
            RequestBody::Approvals(aivault_proto::ApprovalRequest::Approve {
                id,
                channel: if polkit {
                    aivault_proto::ApprovalChannel::Polkit
                } else {
                    aivault_proto::ApprovalChannel::Session
                },
            })
        }),
        any::<u64>()
            .prop_map(|id| RequestBody::Approvals(aivault_proto::ApprovalRequest::Deny { id })),
        (any::<u64>(), "[0-9A-Z-]{0,16}").prop_map(|(id, code)| {
            RequestBody::Approvals(aivault_proto::ApprovalRequest::ApproveCode { id, code })
        }),
    ];
    (any::<u64>(), body).prop_map(|(id, body)| Request { id, body })
}

fn end_reason() -> impl Strategy<Value = EndReason> {
    proptest::sample::select(EndReason::ALL.to_vec())
}

fn stream() -> impl Strategy<Value = Stream> {
    prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)]
}

fn paths() -> impl Strategy<Value = Vec<PathBuf>> {
    proptest::collection::vec(text().prop_map(|t| PathBuf::from(format!("/{t}"))), 0..3)
}

fn runner_job() -> impl Strategy<Value = RunnerJob> {
    (
        proptest::collection::vec(text(), 1..4),
        proptest::collection::vec((text(), text()), 0..3),
        (paths(), paths(), paths(), proptest::option::of(text())),
        (
            proptest::collection::vec(any::<u16>(), 0..3),
            proptest::collection::vec(any::<u16>(), 0..3),
            any::<[u64; 5]>(),
            any::<bool>(),
            any::<bool>(),
        ),
        any::<u64>(),
    )
        .prop_map(
            |(
                argv,
                env,
                (read, write, exec, cwd),
                (tcp_connect, tcp_bind, l, full, caller),
                max_output,
            )| {
                RunnerJob {
                    argv,
                    env,
                    sandbox: SandboxSpec {
                        home: "/run/aivault/runs/70001/home".into(),
                        tmp: "/run/aivault/runs/70001/tmp".into(),
                        read,
                        write,
                        exec,
                        cwd_writable: cwd.as_deref().is_some_and(|c| c.len() % 2 == 0),
                        cwd: cwd.map(|c| PathBuf::from(format!("/{c}"))),
                        tcp_connect,
                        tcp_bind,
                        limits: Limits {
                            memory: l[0],
                            processes: l[1],
                            file_size: l[2],
                            cpu_seconds: l[3],
                            open_files: l[4],
                        },
                        require_full_landlock: full,
                        isolation: if caller {
                            Isolation::Caller
                        } else {
                            Isolation::DynamicUid
                        },
                    },
                    max_output,
                }
            },
        )
}

fn runner_event() -> impl Strategy<Value = RunnerEvent> {
    let level = prop_oneof![Just(Level::Full), Just(Level::Partial), Just(Level::None)];
    prop_oneof![
        (any::<i32>(), level, any::<[bool; 4]>()).prop_map(|(abi, landlock, b)| {
            RunnerEvent::Confined {
                enforcement: Enforcement {
                    landlock_abi: abi,
                    landlock,
                    net_restricted: b[0],
                    scoped_signals: b[1],
                    scoped_abstract_unix: b[2],
                    seccomp: b[3],
                },
            }
        }),
        (stream(), bytes()).prop_map(|(stream, data)| RunnerEvent::Output { stream, data }),
        (
            any::<i32>(),
            any::<bool>(),
            any::<u64>(),
            proptest::option::of(text())
        )
            .prop_map(|(code, signaled, redactions, message)| RunnerEvent::Exit {
                code,
                signaled,
                redactions,
                message,
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_round_trip(msg in request()) {
        round_trips(&msg)?;
    }

    #[test]
    fn runner_jobs_round_trip(msg in runner_job()) {
        round_trips(&msg)?;
    }

    #[test]
    fn runner_events_round_trip(msg in runner_event()) {
        round_trips(&msg)?;
    }

    #[test]
    fn runner_secrets_round_trip(s in proptest::collection::vec((text(), text(), bytes()), 0..4)) {
        let msg = RunnerSecrets {
            secrets: s.into_iter().map(|(n, e, v)| (n, e, SecretBytes::new(v))).collect(),
        };
        round_trips(&msg)?;
    }

    #[test]
    fn run_events_and_inputs_round_trip(
        data in bytes(),
        s in stream(),
        reason in end_reason(),
        nums in any::<(i32, u64, u64, u64)>(),
        message in proptest::option::of(text()),
        sig in any::<i32>(),
    ) {
        round_trips(&RunEvent::Output { stream: s, data: data.clone() })?;
        round_trips(&RunEvent::Exit(RunExit {
            code: nums.0,
            reason,
            duration_ms: nums.1,
            bytes_out: nums.2,
            redactions: nums.3,
            message,
        }))?;
        round_trips(&RunInput::Stdin(data))?;
        round_trips(&RunInput::StdinEof)?;
        round_trips(&RunInput::Signal(sig))?;
    }

    /// Arbitrary bytes, for every message kind: no panic, and anything that
    /// decodes is a fixpoint of encode ∘ decode.
    #[test]
    fn arbitrary_bytes_never_break_a_decoder(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        for kind in 0..fuzzing::KINDS.len() as u8 {
            let mut input = vec![kind];
            input.extend_from_slice(&data);
            fuzzing::check(&input).map_err(TestCaseError::fail)?;
        }
    }

    /// Valid encodings with one byte flipped: still no panic, still a fixpoint.
    #[test]
    fn mutated_encodings_never_break_a_decoder(msg in request(), at in any::<usize>(), bit in 0u8..8) {
        let mut bytes = encode(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let i = at % bytes.len();
        bytes[i] ^= 1 << bit;
        let mut input = vec![2u8];
        input.extend_from_slice(&bytes);
        fuzzing::check(&input).map_err(TestCaseError::fail)?;
    }
}

/// Variants appended to `RequestBody` leave the tags of earlier ones as
/// they were: a daemon and a client of the same protocol version but a
/// different build still agree on every request both know.
#[test]
fn appended_request_variants_keep_earlier_tags() {
    assert_eq!(encode(&RequestBody::Status).unwrap(), [0]);
    assert_eq!(encode(&RequestBody::PolicyReload).unwrap(), [13]);
    let generate = RequestBody::SecretGenerate {
        scope: WireScope::Own,
        name: "G".into(),
        length: 8,
        charset: Charset::Hex,
        meta: MetaInput::default(),
        mode: SetMode::Create,
    };
    assert_eq!(encode(&generate).unwrap()[0], 14);
}

//! Acceptance 4 (foundation): 500 cycles of start, concurrent set/rotate from
//! several clients, `kill -9` at a random moment, restart. The vault always
//! opens, and every acknowledged write is present with its latest
//! acknowledged value. Needs root. `AIVAULT_CRASH_CYCLES` overrides the count.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aivault_proto::{MetaInput, RequestBody, SecretBytes, SetMode, WireScope};
use aivault_tests::{Daemon, Options};
use aivaultd::keys::{load_kek, KeyProviderSpec};
use aivaultd::store::{Scope, Vault};

const CLIENTS: usize = 4;
const NAMES_PER_CLIENT: usize = 3;

/// What a name may hold after a crash: the last acknowledged value, or the
/// one whose write was in flight when the daemon died.
#[derive(Default, Clone)]
struct Expect {
    acked: Option<String>,
    in_flight: Option<String>,
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let cycles: usize = std::env::var("AIVAULT_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut d = Daemon::init(Options::default());
    let spec = KeyProviderSpec::File(d.key_file());
    let kek = load_kek(&spec).unwrap().unwrap();
    let expect: Arc<Mutex<HashMap<String, Expect>>> = Arc::default();
    let mut total_acked = 0u64;

    for cycle in 0..cycles {
        d.start();
        let socket = d.socket();
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let socket = socket.clone();
                let expect = expect.clone();
                std::thread::spawn(move || {
                    let mut acked = 0u64;
                    let Ok(mut client) = aivault_client::Client::connect(&socket) else {
                        return acked;
                    };
                    for i in 0.. {
                        let name = format!("C{c}_N{}", i % NAMES_PER_CLIENT);
                        let value = format!("cycle{cycle}-client{c}-write{i}-padding");
                        let exists = expect
                            .lock()
                            .unwrap()
                            .get(&name)
                            .is_some_and(|e| e.acked.is_some());
                        expect
                            .lock()
                            .unwrap()
                            .entry(name.clone())
                            .or_default()
                            .in_flight = Some(value.clone());
                        let body = RequestBody::SecretSet {
                            scope: WireScope::Own,
                            name: name.clone(),
                            value: SecretBytes::new(value.clone().into_bytes()),
                            meta: MetaInput::default(),
                            mode: if exists {
                                SetMode::Rotate
                            } else {
                                SetMode::Upsert
                            },
                        };
                        match client.call(body) {
                            Ok(_) => {
                                let mut e = expect.lock().unwrap();
                                let entry = e.get_mut(&name).unwrap();
                                entry.acked = Some(value);
                                entry.in_flight = None;
                                acked += 1;
                            }
                            Err(_) => return acked, // the daemon died under us
                        }
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(Duration::from_micros(random_below(40_000)));
        d.kill9();
        total_acked += workers.into_iter().map(|w| w.join().unwrap()).sum::<u64>();

        // The vault opens and holds every acknowledged value.
        let vault = Vault::open(&d.state_dir(), &kek)
            .unwrap_or_else(|e| panic!("cycle {cycle}: vault does not open after kill -9: {e}"));
        let mut e = expect.lock().unwrap();
        for (name, exp) in e.iter_mut() {
            let stored = vault
                .decrypt(Scope::User(0), name)
                .ok()
                .map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap());
            let fine = stored == exp.acked || (exp.in_flight.is_some() && stored == exp.in_flight);
            assert!(
                fine,
                "cycle {cycle}: {name} holds {stored:?}, expected acked {:?} (or in-flight {:?})",
                exp.acked, exp.in_flight
            );
            // Whatever survived is now the acknowledged state.
            exp.acked = stored;
            exp.in_flight = None;
        }
    }
    assert!(
        total_acked > cycles as u64,
        "the test made progress ({total_acked} acknowledged writes)"
    );
}

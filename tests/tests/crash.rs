//! Acceptance 4 (foundation), on the transactional store (issue 13,
//! acceptance 2): 100 cycles of start, a storm of `secrets set` / rotate
//! from 16 concurrent clients, `kill -9` at a random moment, restart. The
//! vault always opens, every record in it decrypts (no torn or corrupt
//! write), no name appears that was never written, and every acknowledged
//! write is present with its latest acknowledged value. Needs root.
//! `AIVAULT_CRASH_CYCLES` overrides the count.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aivault_proto::{MetaInput, RequestBody, SecretBytes, SetMode, WireScope};
use aivault_tests::{Daemon, Options};
use aivaultd::keys::{load_kek, KeyProviderSpec};
use aivaultd::store::{Scope, Vault};

const CLIENTS: usize = 16;
const NAMES_PER_CLIENT: usize = 3;
/// Bound on one client's writes in one cycle (the kill comes far sooner).
const MAX_WRITES_PER_CYCLE: usize = 20_000;

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

/// One client's storm: sets until the daemon dies under it.
fn storm(
    socket: std::path::PathBuf,
    c: usize,
    cycle: usize,
    expect: Arc<Mutex<HashMap<String, Expect>>>,
) -> u64 {
    let mut acked = 0u64;
    let Ok(mut client) = aivault_client::Client::connect(&socket) else {
        return acked;
    };
    for i in 0..MAX_WRITES_PER_CYCLE {
        let name = format!("C{c}_N{}", i % NAMES_PER_CLIENT);
        let value = format!("cycle{cycle}-client{c}-write{i}-padding");
        let exists = {
            let mut e = expect.lock().unwrap();
            let entry = e.entry(name.clone()).or_default();
            entry.in_flight = Some(value.clone());
            entry.acked.is_some()
        };
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
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let cycles: usize = std::env::var("AIVAULT_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut d = Daemon::init(Options::default());
    let spec = KeyProviderSpec::File(d.key_file());
    let kek = load_kek(&spec).unwrap().unwrap();
    let expect: Arc<Mutex<HashMap<String, Expect>>> = Arc::default();
    let mut total_acked = 0u64;
    // Cycles in which the kill met a write the daemon had not answered.
    let mut killed_mid_write = 0usize;

    for cycle in 0..cycles {
        d.start();
        let socket = d.socket();
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (socket, expect) = (socket.clone(), expect.clone());
                std::thread::spawn(move || storm(socket, c, cycle, expect))
            })
            .collect();
        std::thread::sleep(Duration::from_micros(20_000 + random_below(200_000)));
        d.kill9();
        let acked: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        total_acked += acked;

        // The store opens (recovering the last commit) and every record in
        // it decrypts: nothing torn, nothing corrupt.
        let vault = Vault::open(&d.state_dir(), &kek)
            .unwrap_or_else(|e| panic!("cycle {cycle}: vault does not open after kill -9: {e}"));
        let mut e = expect.lock().unwrap();
        let stored_names = vault.list(Scope::User(0));
        for m in &stored_names {
            vault
                .decrypt(Scope::User(0), &m.name)
                .unwrap_or_else(|err| panic!("cycle {cycle}: {} does not decrypt: {err}", m.name));
            assert!(
                e.contains_key(&m.name),
                "cycle {cycle}: {} was never written",
                m.name
            );
        }
        let in_flight = e.values().filter(|x| x.in_flight.is_some()).count();
        if in_flight > 0 {
            killed_mid_write += 1;
        }
        eprintln!("cycle {cycle}: {acked} writes acknowledged, {in_flight} in flight at the kill");
        // Every acknowledged write is there.
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
        // Dropped here: the daemon takes the store's lock at its next start.
        drop(vault);
    }
    assert!(
        total_acked >= cycles as u64,
        "the storms made progress ({total_acked} acknowledged writes)"
    );
    assert!(
        killed_mid_write * 2 >= cycles,
        "the kill met a write in flight in only {killed_mid_write} of {cycles} cycles"
    );
}

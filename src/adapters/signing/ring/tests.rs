//! Tests of the key ring: its JWKS, its files on disk and `keys rotate`.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use super::*;
use crate::adapters::signing::ring_files;
use crate::adapters::signing::signing_key::tests::{claims, verify_with_jwk};

const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);
const HOUR: Duration = Duration::from_secs(3600);
const ALL: [SigningAlgorithm; 3] = SigningAlgorithm::ALL;
const ES256: SigningAlgorithm = SigningAlgorithm::ES256;

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

fn at(offset: Duration) -> OffsetDateTime {
    T0 + offset
}

/// A fresh, not yet existing key directory inside a temporary directory.
fn key_dir() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("keys");
    (temp, dir)
}

fn ttl_10m(_: SigningAlgorithm) -> Duration {
    minutes(10)
}

fn kid(ring: &KeyRing, alg: SigningAlgorithm, role: KeyRole) -> Option<String> {
    ring.key(alg, role).map(|key| key.kid().to_owned())
}

fn jwks_kids(ring: &KeyRing, now: OffsetDateTime) -> Vec<String> {
    let jwks = ring.jwks(now);
    jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|jwk| jwk["kid"].as_str().expect("kid").to_owned())
        .collect()
}

fn pem_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".pem"))
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn rings_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeyRing>();
    assert_send_sync::<Arc<SigningKey>>();
}

#[test]
fn in_memory_ring_has_current_and_next_per_algorithm_and_signs() {
    let ring = KeyRing::in_memory(&[ES256, SigningAlgorithm::EdDSA, ES256], T0).expect("ring");
    assert_eq!(ring.generation(), 0);
    assert_eq!(
        ring.algorithms().collect::<Vec<_>>(),
        [ES256, SigningAlgorithm::EdDSA]
    );
    assert_eq!(ring.jwks(T0)["keys"].as_array().map(Vec::len), Some(4));
    assert!(ring.current(SigningAlgorithm::RS256).is_none());
    let current = ring.current(ES256).expect("current ES256");
    let token = current.sign_jwt(&claims()).expect("sign");
    let jwks = ring.jwks(T0);
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|jwk| jwk["kid"] == current.kid())
        .expect("current key is published");
    verify_with_jwk(&token, jwk);
}

#[test]
fn generate_save_load_round_trip_keeps_keys_and_signatures() {
    let (_temp, dir) = key_dir();
    let created = KeyRing::load_or_create(&dir, &ALL, T0).expect("create");
    assert_eq!(created.generation(), 1);
    assert!(created.warnings().is_empty(), "{:?}", created.warnings());

    let loaded = KeyRing::load(&dir).expect("load");
    assert_eq!(loaded.generation(), 1);
    for alg in ALL {
        for role in [KeyRole::Current, KeyRole::Next] {
            assert!(kid(&created, alg, role).is_some());
            assert_eq!(
                kid(&loaded, alg, role),
                kid(&created, alg, role),
                "{alg} {role}"
            );
        }
        let token = loaded
            .current(alg)
            .expect("current")
            .sign_jwt(&claims())
            .expect("sign");
        verify_with_jwk(&token, created.current(alg).expect("current").public_jwk());
    }
    assert_eq!(loaded.jwks(T0), created.jwks(T0));
    assert_eq!(pem_files(&dir).len(), 6);

    // A second start changes nothing on disk.
    let again = KeyRing::load_or_create(&dir, &ALL, at(HOUR)).expect("reload");
    assert_eq!(again.generation(), 1);
    assert_eq!(again.jwks(T0), created.jwks(T0));
}

#[test]
fn key_files_are_0600_in_a_0700_directory_and_loose_modes_are_reported() {
    let (_temp, dir) = key_dir();
    let ring = KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    assert_eq!(mode(&dir), 0o700);
    let current_pem = dir.join(format!(
        "{}.pem",
        kid(&ring, ES256, KeyRole::Current).expect("kid")
    ));
    for name in pem_files(&dir) {
        assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
    }
    assert!(KeyRing::load(&dir).expect("load").warnings().is_empty());

    fs::set_permissions(&current_pem, fs::Permissions::from_mode(0o644)).expect("chmod");
    let loaded = KeyRing::load(&dir).expect("load still works");
    assert_eq!(
        loaded.warnings(),
        [format!(
            "{} is accessible by group or others (mode 0644); run `chmod 600 {}`",
            current_pem.display(),
            current_pem.display()
        )]
    );
}

#[test]
fn adding_an_algorithm_keeps_existing_keys_and_bumps_the_generation() {
    let (_temp, dir) = key_dir();
    let first = KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    let second =
        KeyRing::load_or_create(&dir, &[ES256, SigningAlgorithm::EdDSA], T0).expect("add EdDSA");
    assert_eq!(second.generation(), 2);
    assert_eq!(
        kid(&second, ES256, KeyRole::Current),
        kid(&first, ES256, KeyRole::Current)
    );
    assert!(second.current(SigningAlgorithm::EdDSA).is_some());
    assert_eq!(KeyRing::load(&dir).expect("load").generation(), 2);
}

#[test]
fn jwks_lists_current_next_and_unretired_previous_per_algorithm() {
    let (_temp, dir) = key_dir();
    let ring =
        KeyRing::load_or_create(&dir, &[ES256, SigningAlgorithm::RS256], T0).expect("create");
    let jwks = ring.jwks(T0);
    let keys = jwks["keys"].as_array().expect("keys");
    let described: Vec<(String, String)> = keys
        .iter()
        .map(|jwk| {
            (
                jwk["alg"].as_str().expect("alg").to_owned(),
                jwk["kid"].as_str().expect("kid").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [ES256, SigningAlgorithm::RS256]
        .into_iter()
        .flat_map(|alg| {
            [KeyRole::Current, KeyRole::Next]
                .map(|role| (alg.to_string(), kid(&ring, alg, role).expect("kid")))
        })
        .collect();
    assert_eq!(described, expected);
    assert!(keys.iter().all(|jwk| jwk["use"] == "sig"));

    let report = rotate(&dir, HOUR, false, &ttl_10m, at(HOUR)).expect("rotate");
    let rotated = KeyRing::load(&dir).expect("load");
    let es = &report.algorithms[0];
    assert_eq!(
        jwks_kids(&rotated, at(HOUR))[..3],
        [
            es.new_current.clone(),
            es.new_next.clone(),
            es.old_current.clone()
        ]
    );
    assert_eq!(jwks_kids(&rotated, at(HOUR)).len(), 6);
}

#[test]
fn rotation_is_refused_until_next_has_been_published_for_min_publish() {
    let (_temp, dir) = key_dir();
    let ring = KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    let next = kid(&ring, ES256, KeyRole::Next).expect("next");

    let err = rotate(&dir, HOUR, false, &ttl_10m, at(minutes(12))).expect_err("too soon");
    assert_eq!(
        err.to_string(),
        format!(
            "next ES256 key kid {next} has been published for 12m; keys.min_publish is 1h; \
             wait 48m or use --force"
        )
    );
    // Nothing was written.
    assert_eq!(KeyRing::load(&dir).expect("load").generation(), 1);
    assert_eq!(pem_files(&dir).len(), 2);

    // Exactly min_publish later it goes through.
    let report = rotate(&dir, HOUR, false, &ttl_10m, at(HOUR)).expect("rotate");
    assert_eq!(report.algorithms[0].new_current, next);
}

#[test]
fn force_rotates_at_once_and_reports_every_kid() {
    let (_temp, dir) = key_dir();
    let ring = KeyRing::load_or_create(&dir, &ALL, T0).expect("create");
    let now = at(Duration::from_secs(5));
    let report = rotate(&dir, HOUR, true, &ttl_10m, now).expect("forced rotation");
    assert_eq!(report.generation, 2);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let rotated = KeyRing::load(&dir).expect("load");
    for (rotation, alg) in report.algorithms.iter().zip(ALL) {
        assert_eq!(rotation.alg, alg);
        assert_eq!(
            Some(rotation.old_current.clone()),
            kid(&ring, alg, KeyRole::Current)
        );
        assert_eq!(
            Some(rotation.new_current.clone()),
            kid(&ring, alg, KeyRole::Next)
        );
        assert_eq!(
            Some(rotation.new_current.clone()),
            kid(&rotated, alg, KeyRole::Current)
        );
        assert_eq!(
            Some(rotation.new_next.clone()),
            kid(&rotated, alg, KeyRole::Next)
        );
        assert_eq!(
            Some(rotation.old_current.clone()),
            kid(&rotated, alg, KeyRole::Previous)
        );
        assert_eq!(rotation.previous_retire_at, "2025-03-01T12:10:05Z");
        assert_eq!(rotation.retired, None);
    }
    let printed = report.to_string();
    assert!(
        printed.starts_with("rotated signing keys (generation 2)\n"),
        "{printed}"
    );
    assert!(printed.contains(&format!(
        "ES256: current {} -> {}; next {}; previous {} published until 2025-03-01T12:10:05Z\n",
        report.algorithms[0].old_current,
        report.algorithms[0].new_current,
        report.algorithms[0].new_next,
        report.algorithms[0].old_current
    )));
}

#[test]
fn unretired_previous_blocks_rotation_unless_forced() {
    let (_temp, dir) = key_dir();
    KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    let two_hours = |_: SigningAlgorithm| 2 * HOUR;
    rotate(&dir, HOUR, false, &two_hours, at(HOUR)).expect("first rotation");
    let ring = KeyRing::load(&dir).expect("load");
    let previous = kid(&ring, ES256, KeyRole::Previous).expect("previous");

    // Next has been published long enough, but tokens of previous live until 15:00.
    let err = rotate(&dir, HOUR, false, &two_hours, at(2 * HOUR)).expect_err("blocked");
    assert_eq!(
        err.to_string(),
        format!(
            "previous ES256 key kid {previous} must stay published until \
             2025-03-01T15:00:00Z, when the last token it signed expires; rotating now \
             would remove it and break those tokens; wait 1h or use --force"
        )
    );
    assert_eq!(KeyRing::load(&dir).expect("load").generation(), 2);

    let report = rotate(&dir, HOUR, true, &two_hours, at(2 * HOUR)).expect("forced");
    assert_eq!(
        report.algorithms[0].retired,
        Some(RetiredKey {
            kid: previous.clone(),
            before_expiry: true
        })
    );
    assert!(!pem_files(&dir).contains(&format!("{previous}.pem")));
}

#[test]
fn the_longest_wait_is_reported_when_several_things_block() {
    let (_temp, dir) = key_dir();
    KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    rotate(&dir, HOUR, false, &ttl_10m, at(HOUR)).expect("rotate");
    // 5 minutes later: previous retires in 5m, next needs 55m more.
    let err = rotate(&dir, HOUR, false, &ttl_10m, at(HOUR + minutes(5))).expect_err("blocked");
    assert!(
        err.to_string().ends_with("wait 55m or use --force"),
        "{err}"
    );
}

#[test]
fn previous_leaves_the_jwks_at_retire_at_and_its_file_at_the_next_save() {
    let (_temp, dir) = key_dir();
    KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    rotate(&dir, HOUR, false, &ttl_10m, at(HOUR)).expect("rotate");
    let ring = KeyRing::load(&dir).expect("load");
    let previous = kid(&ring, ES256, KeyRole::Previous).expect("previous");

    assert!(jwks_kids(&ring, at(HOUR + minutes(9))).contains(&previous));
    assert!(!jwks_kids(&ring, at(HOUR + minutes(10))).contains(&previous));
    assert_eq!(jwks_kids(&ring, at(HOUR + minutes(10))).len(), 2);
    // Loading never writes: the retired key's file stays until the next save.
    assert!(pem_files(&dir).contains(&format!("{previous}.pem")));

    let report = rotate(&dir, HOUR, false, &ttl_10m, at(2 * HOUR)).expect("second rotation");
    assert_eq!(
        report.algorithms[0].retired,
        Some(RetiredKey {
            kid: previous.clone(),
            before_expiry: false
        })
    );
    assert!(!pem_files(&dir).contains(&format!("{previous}.pem")));
    assert_eq!(pem_files(&dir).len(), 3);
}

#[test]
fn any_save_drops_retired_keys_and_their_files() {
    let (_temp, dir) = key_dir();
    KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    rotate(&dir, HOUR, false, &ttl_10m, at(HOUR)).expect("rotate");
    let previous = kid(
        &KeyRing::load(&dir).expect("load"),
        ES256,
        KeyRole::Previous,
    )
    .expect("previous");

    let ring = KeyRing::load_or_create(&dir, &[ES256, SigningAlgorithm::EdDSA], at(2 * HOUR))
        .expect("add EdDSA");
    assert_eq!(kid(&ring, ES256, KeyRole::Previous), None);
    assert!(!pem_files(&dir).contains(&format!("{previous}.pem")));
    assert_eq!(
        kid(
            &KeyRing::load(&dir).expect("load"),
            ES256,
            KeyRole::Previous
        ),
        None
    );
}

#[test]
fn generation_increases_with_every_saved_change() {
    let (_temp, dir) = key_dir();
    let mut generations = vec![
        KeyRing::load_or_create(&dir, &[ES256], T0)
            .expect("create")
            .generation(),
    ];
    for n in 1..=3u32 {
        generations.push(
            rotate(&dir, HOUR, false, &ttl_10m, at(n * HOUR))
                .expect("rotate")
                .generation,
        );
        assert_eq!(
            KeyRing::load(&dir).expect("load").generation(),
            generations[n as usize]
        );
    }
    assert_eq!(generations, [1, 2, 3, 4]);
}

#[test]
fn a_running_service_picks_up_a_rotation_done_by_another_process() {
    let (_temp, dir) = key_dir();
    let serving = KeyRing::load_or_create(&dir, &ALL, T0).expect("service starts");
    let old_next = kid(&serving, ES256, KeyRole::Next);

    // `tokenmint keys rotate` in another process.
    rotate(&dir, HOUR, false, &ttl_10m, at(HOUR)).expect("rotate");

    let reloaded = KeyRing::load(&dir).expect("reload");
    assert!(reloaded.generation() > serving.generation());
    assert_eq!(kid(&reloaded, ES256, KeyRole::Current), old_next);
    // The old snapshot is untouched and still signs with the old current key.
    assert_eq!(serving.generation(), 1);
    let token = serving
        .current(ES256)
        .expect("current")
        .sign_jwt(&claims())
        .expect("sign");
    let jwks = reloaded.jwks(at(HOUR));
    let previous_jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|jwk| jwk["kid"] == serving.current(ES256).expect("current").kid())
        .expect("old current is published as previous");
    verify_with_jwk(&token, previous_jwk);
}

#[test]
fn a_stale_save_is_refused() {
    let (_temp, dir) = key_dir();
    let stale = KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    rotate(&dir, HOUR, true, &ttl_10m, T0).expect("rotate elsewhere");
    let err = ring_files::write(&dir, &stale, 1).expect_err("generation moved on");
    assert_eq!(
        err.to_string(),
        format!(
            "{} was changed by another process while this one was updating it \
             (generation 1 became 2); run the command again",
            dir.join("keys.json").display()
        )
    );
}

#[test]
fn corrupt_or_missing_files_give_errors_naming_the_path() {
    let (_temp, dir) = key_dir();
    let ring = KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    let manifest = dir.join("keys.json");
    let good = fs::read_to_string(&manifest).expect("read manifest");

    fs::write(&manifest, "{ not json").expect("write");
    let err = KeyRing::load(&dir).expect_err("corrupt manifest");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "{}: not a valid key manifest: ",
            manifest.display()
        )),
        "{message}"
    );
    let err = rotate(&dir, HOUR, true, &ttl_10m, T0).expect_err("rotate refuses too");
    assert!(
        err.to_string().starts_with(&manifest.display().to_string()),
        "{err}"
    );
    let err = KeyRing::load_or_create(&dir, &[ES256], T0).expect_err("never overwritten");
    assert!(
        err.to_string().starts_with(&manifest.display().to_string()),
        "{err}"
    );

    fs::write(&manifest, &good).expect("restore");
    let current = kid(&ring, ES256, KeyRole::Current).expect("current");
    let next = kid(&ring, ES256, KeyRole::Next).expect("next");
    let current_pem = dir.join(format!("{current}.pem"));
    let next_pem = dir.join(format!("{next}.pem"));

    // The next key's file under the current key's name.
    fs::copy(&next_pem, &current_pem).expect("copy");
    let err = KeyRing::load(&dir).expect_err("swapped key");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: holds the key with thumbprint {next}, but keys.json lists it as {current}",
            current_pem.display()
        )
    );

    fs::write(
        &current_pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let err = KeyRing::load(&dir).expect_err("garbage key");
    assert!(
        err.to_string().starts_with(&format!(
            "{}: invalid ES256 private key: the PKCS#8 document is not a usable ES256 key",
            current_pem.display()
        )),
        "{err}"
    );

    fs::remove_file(&current_pem).expect("remove");
    let err = KeyRing::load(&dir).expect_err("missing key file");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {}: ", current_pem.display())),
        "{err}"
    );

    let err = KeyRing::load(&dir.join("nowhere")).expect_err("no directory");
    assert!(
        err.to_string()
            .contains(&dir.join("nowhere").display().to_string()),
        "{err}"
    );
}

#[test]
fn manifest_records_roles_and_times_and_no_secrets() {
    let (_temp, dir) = key_dir();
    KeyRing::load_or_create(&dir, &[ES256], T0).expect("create");
    rotate(&dir, HOUR, false, &ttl_10m, at(HOUR)).expect("rotate");
    let ring = KeyRing::load(&dir).expect("load");
    let text = fs::read_to_string(dir.join("keys.json")).expect("read");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["generation"], 2);
    let keys = manifest["keys"].as_array().expect("keys");
    let roles: Vec<(&str, &str, &str, &str)> = keys
        .iter()
        .map(|key| {
            (
                key["kid"].as_str().expect("kid"),
                key["role"].as_str().expect("role"),
                key["published_at"].as_str().expect("published_at"),
                key["retire_at"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    let current = kid(&ring, ES256, KeyRole::Current).expect("current");
    let next = kid(&ring, ES256, KeyRole::Next).expect("next");
    let previous = kid(&ring, ES256, KeyRole::Previous).expect("previous");
    assert_eq!(
        roles,
        [
            (current.as_str(), "current", "2025-03-01T12:00:00Z", "-"),
            (next.as_str(), "next", "2025-03-01T13:00:00Z", "-"),
            (
                previous.as_str(),
                "previous",
                "2025-03-01T12:00:00Z",
                "2025-03-01T13:10:00Z"
            ),
        ]
    );
    assert!(keys.iter().all(|key| key["alg"] == "ES256"));
    assert!(!text.contains("PRIVATE"));
    assert!(!format!("{ring:?}").contains("PRIVATE"));
}

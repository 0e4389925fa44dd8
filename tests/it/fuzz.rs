//! Property-based fuzzing of the two parsers that take untrusted input:
//! the client frame decoder and the settings (TOML file + flags). Neither
//! may panic on any input, and what decodes must mean what was sent.
//!
//! `PROPTEST_CASES=200000 cargo test --release --test it fuzz::` is the long run
//! recorded in docs/security.md; the default (256 cases per property) keeps
//! the suite fast.

use proptest::prelude::*;
use switchboard::config::{Cli, FileSettings, Settings};
use switchboard::protocol::{decode, Command};

/// JSON-ish text: fragments of real frames glued with arbitrary characters,
/// so that the decoder gets past `{` often, not only random bytes.
fn frameish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(r#"{"type":"#.to_owned()),
        Just(r#""publish""#.to_owned()),
        Just(r#""subscribe""#.to_owned()),
        Just(r#","channel":"#.to_owned()),
        Just(r#","data":"#.to_owned()),
        Just(r#","id":"#.to_owned()),
        Just(r#","since":{"offset":1,"epoch":"e"}"#.to_owned()),
        Just("}".to_owned()),
        Just("\"".to_owned()),
        "[ -~]{0,8}",
        "\\PC{0,4}",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn decoding_any_text_never_panics(text in "\\PC{0,200}") {
        let _ = decode(&text);
    }

    #[test]
    fn decoding_frame_like_text_never_panics(text in frameish()) {
        if let Err(e) = decode(&text) {
            prop_assert!(!e.error.message.is_empty());
        }
    }

    #[test]
    fn publish_frames_round_trip(
        id in any::<u64>(),
        channel in "[A-Za-z0-9_.:@/=-]{1,40}",
        text in "\\PC{0,60}",
        n in any::<i64>(),
    ) {
        let data = serde_json::json!({"text": text, "n": n});
        let frame = serde_json::json!({"type": "publish", "id": id, "channel": channel, "data": data}).to_string();
        let request = decode(&frame).expect("a well-formed publish decodes");
        prop_assert_eq!(request.id, Some(id));
        match request.command {
            Command::Publish { channel: c, data: raw, .. } => {
                prop_assert_eq!(c.as_str(), channel.as_str());
                let back: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
                prop_assert_eq!(back, data);
            }
            other => prop_assert!(false, "decoded as {:?}", other),
        }
    }

    #[test]
    fn settings_files_never_panic(text in "\\PC{0,200}") {
        if let Ok(file) = toml::from_str::<FileSettings>(&text) {
            let _ = Settings::resolve(Cli::default(), file);
        }
    }

    #[test]
    fn settings_values_are_validated_not_trusted(
        heartbeat in any::<u64>(),
        timeout in any::<u64>(),
        outbox in any::<usize>(),
        max_bytes in any::<usize>(),
        listen in "\\PC{0,30}",
    ) {
        let text = format!(
            "heartbeat_interval_ms = {}\nheartbeat_timeout_ms = {}\noutbox_capacity = {}\nmax_message_bytes = {}\nlisten = {:?}\n",
            heartbeat.min(i64::MAX as u64), timeout.min(i64::MAX as u64), outbox.min(i64::MAX as usize), max_bytes.min(i64::MAX as usize), listen
        );
        if let Ok(file) = toml::from_str::<FileSettings>(&text) {
            if let Ok(s) = Settings::resolve(Cli::default(), file) {
                // Whatever was accepted obeys the documented bounds.
                prop_assert!(s.heartbeat_timeout > s.heartbeat_interval);
                prop_assert!((1..=1_000_000).contains(&s.outbox_capacity));
                prop_assert!((128..=16 << 20).contains(&s.max_message_bytes));
            }
        }
    }
}

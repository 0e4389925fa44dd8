//! The registry's bookkeeping and fan-out, without sockets.

use super::*;

/// A queued frame's text.
fn text(frame: WireFrame) -> String {
    String::from_utf8(frame.payload().to_vec()).unwrap()
}

fn client(conn: &str) -> Arc<ClientInfo> {
    Arc::new(ClientInfo {
        conn: conn.into(),
        user: "u".into(),
        node: "n".into(),
        info: crate::presence::ConnInfo { connected_at: 0 },
    })
}

fn member(cap: usize) -> (Member, Arc<Outbox>) {
    let outbox = Arc::new(Outbox::new(cap));
    (
        Member {
            outbox: outbox.clone(),
            closer: Arc::new(Closer::default()),
        },
        outbox,
    )
}

#[tokio::test]
async fn full_outbox_closes_only_that_connection() {
    let hub = Hub::new(Arc::default());
    let topic = Topic::Channel("c".into());
    let (fast, fast_rx) = member(8);
    let (slow, _slow_rx) = member(1);
    let (a, b): (ConnId, ConnId) = ("a".into(), "b".into());
    hub.register(a.clone(), client("a"), fast.clone());
    hub.register(b.clone(), client("b"), slow.clone());
    assert_eq!(hub.add(&a, &topic), Ok(true));
    assert_eq!(hub.add(&b, &topic), Ok(false));
    assert_eq!(hub.add(&b, &topic), Err(HubError::AlreadySubscribed));

    for i in 0..3 {
        hub.dispatch(&topic, &ByteString::from(format!("m{i}")), None);
    }
    assert_eq!(slow.closer.closed().await, Disconnect::SlowConsumer);
    assert!(fast.closer.reason.get().is_none());
    for i in 0..3 {
        assert_eq!(text(fast_rx.recv().await.unwrap()), format!("m{i}"));
    }
    assert_eq!(hub.metrics.slow_consumer_closes.get(), 1);
}

#[test]
fn last_member_out_releases_the_topic() {
    let hub = Hub::new(Arc::default());
    let topic = Topic::Channel("c".into());
    let (m, _rx) = member(1);
    let a: ConnId = "a".into();
    hub.register(a.clone(), client("a"), m);
    hub.add(&a, &topic).unwrap();
    assert!(!hub.release_if_empty(&topic, || panic!("has a member")));
    assert_eq!(hub.remove(&a, &topic), Ok(true));
    assert_eq!(hub.remove(&a, &topic), Err(HubError::NotSubscribed));
    let mut released = false;
    assert!(hub.release_if_empty(&topic, || released = true));
    assert!(released);
    hub.add(&a, &topic).unwrap();
    let gone = hub.unregister(&a);
    assert_eq!(gone.emptied, vec![topic]);
    assert_eq!(gone.channels, vec!["c".to_owned()]);
    assert_eq!(gone.client.unwrap().conn, "a");
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test]
async fn a_held_subscription_gets_only_what_recovery_did_not_cover() {
    let hub = Hub::new(Arc::default());
    let topic = Topic::Channel("c".into());
    let (held, held_rx) = member(8);
    let (live, live_rx) = member(8);
    let (a, b): (ConnId, ConnId) = ("a".into(), "b".into());
    hub.register(a.clone(), client("a"), held);
    hub.register(b.clone(), client("b"), live);
    hub.add_held(&a, &topic).unwrap();
    hub.add(&b, &topic).unwrap();
    for (offset, frame) in [
        (Some(("e", 5)), "m5"),
        (None, "join"),
        (Some(("e", 6)), "m6"),
        (Some(("e", 7)), "m7"),
    ] {
        hub.dispatch(&topic, &ByteString::from(frame), offset);
    }
    // Held back from `a`, live for `b`.
    assert_eq!(held_rx.try_recv().map(text), None);
    assert_eq!(live_rx.try_recv().map(text).as_deref(), Some("m5"));
    // Recovery delivered up to 6: the rest follows, in order, then live.
    hub.release(&a, &topic, Some(("e", 6)));
    hub.dispatch(&topic, &ByteString::from("m8"), Some(("e", 8)));
    let got: Vec<_> = std::iter::from_fn(|| held_rx.try_recv().map(text)).collect();
    assert_eq!(got, ["join", "m7", "m8"]);
}

/// The node's pub/sub delivery may lag behind the history read of a
/// recovering subscription: messages recovery already sent that arrive
/// after the release are dropped, until a later one (or one of another
/// epoch: the channel was reset) comes.
#[tokio::test]
async fn messages_recovery_covered_that_arrive_after_the_release_are_dropped() {
    let hub = Hub::new(Arc::default());
    let topic = Topic::Channel("c".into());
    let (m, rx) = member(8);
    let a: ConnId = "a".into();
    hub.register(a.clone(), client("a"), m);
    hub.add_held(&a, &topic).unwrap();
    hub.dispatch(&topic, &ByteString::from("m4"), Some(("e", 4)));
    // Recovery delivered up to 6; 5 and 6 were not delivered live yet.
    hub.release(&a, &topic, Some(("e", 6)));
    for (at, frame) in [
        (Some(("e", 5)), "m5"),
        (None, "join"),
        (Some(("e", 6)), "m6"),
        (Some(("e", 7)), "m7"),
        (Some(("f", 1)), "f1"),
    ] {
        hub.dispatch(&topic, &ByteString::from(frame), at);
    }
    let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().map(text)).collect();
    assert_eq!(got, ["join", "m7", "f1"]);

    // A reset channel: offsets of the new epoch are not duplicates.
    let b: ConnId = "b".into();
    let (m, rx) = member(8);
    hub.register(b.clone(), client("b"), m);
    hub.add_held(&b, &topic).unwrap();
    hub.release(&b, &topic, Some(("e", 6)));
    hub.dispatch(&topic, &ByteString::from("resync"), None);
    hub.dispatch(&topic, &ByteString::from("f2"), Some(("f", 2)));
    let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().map(text)).collect();
    assert_eq!(got, ["resync", "f2"]);
}

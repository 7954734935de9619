//! The endpoint's exchange rules against peers on loopback: Debian's libcoap
//! server for what a real device does, and a scripted UDP peer for what a
//! broken or lossy one does (dropped requests, separate and duplicate
//! responses, garbage, replies to tokens never sent, out-of-order
//! notifications), which no real server can be told to do on cue.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use tokio::net::UdpSocket;
use vigil_coap::{CoapError, Endpoint, Method, Notice, Request, Timing};

fn fast() -> Timing {
    Timing {
        ack_timeout: Duration::from_millis(100),
        ack_random_factor: 1.5,
        max_retransmit: 4,
        response_wait: Duration::from_secs(2),
    }
}

async fn endpoint() -> Endpoint {
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), fast())
        .await
        .unwrap()
}

/// A GET in flight, answered by whatever the test's peer does.
fn ask(
    ep: &Endpoint,
    at: SocketAddr,
    path: &'static str,
) -> tokio::task::JoinHandle<Result<vigil_coap::Response, CoapError>> {
    let ep = ep.clone();
    tokio::spawn(async move { ep.request(at, Request::get(path)).await })
}

async fn peer() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

async fn recv(s: &UdpSocket) -> (Packet, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
        .await
        .expect("the endpoint sent nothing within 5 s")
        .unwrap();
    (Packet::from_bytes(&buf[..n]).unwrap(), from)
}

fn reply(to: &Packet, kind: MessageType, mid: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.header.message_id = mid;
    p.set_token(to.get_token().to_vec());
    p.payload = payload.to_vec();
    p.to_bytes().unwrap()
}

#[tokio::test]
async fn a_lost_request_is_sent_again_until_answered() {
    let ep = endpoint().await;
    let (dev, at) = peer().await;
    let ask = ask(&ep, at, "/a");
    // Drop two transmissions; answer the third, piggybacked.
    let (first, _) = recv(&dev).await;
    let (second, _) = recv(&dev).await;
    let (third, from) = recv(&dev).await;
    assert_eq!(
        first.header.message_id, second.header.message_id,
        "a retransmission keeps its message id"
    );
    assert_eq!(first.get_token(), third.get_token());
    assert_eq!(third.header.get_type(), MessageType::Confirmable);
    let path: Vec<_> = third
        .get_option(CoapOption::UriPath)
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert_eq!(path, vec![b"a".to_vec()]);
    dev.send_to(
        &reply(
            &third,
            MessageType::Acknowledgement,
            third.header.message_id,
            b"42",
        ),
        from,
    )
    .await
    .unwrap();
    let r = ask.await.unwrap().unwrap();
    assert_eq!(
        (r.code_text().as_str(), r.payload.as_slice()),
        ("2.05", &b"42"[..])
    );
    assert_eq!(
        ep.counters()
            .retransmissions
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn silence_ends_in_a_timeout_after_max_retransmit() {
    let ep = endpoint().await;
    let (dev, at) = peer().await;
    let started = std::time::Instant::now();
    let e = ep.request(at, Request::get("/quiet")).await.unwrap_err();
    assert!(matches!(e, CoapError::Timeout { tries: 5, .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("no answer from {at} after 5 transmission(s)")),
        "{e}"
    );
    // Waits of t, 2t, 4t, 8t, 16t with t in [100, 150] ms: 3.1 s to 4.65 s.
    assert!(
        started.elapsed() >= Duration::from_millis(3100),
        "{:?}",
        started.elapsed()
    );
    let mut n = 0;
    let mut buf = [0u8; 512];
    while dev.try_recv_from(&mut buf).is_ok() {
        n += 1;
    }
    assert_eq!(n, 5);
}

#[tokio::test]
async fn a_separate_response_is_acknowledged_and_its_duplicate_handled_once() {
    let ep = endpoint().await;
    let (dev, at) = peer().await;
    let ask = tokio::spawn({
        let ep = ep.clone();
        async move {
            ep.request(
                at,
                Request {
                    method: Method::Put,
                    path: "/cfg".into(),
                    query: vec![],
                    payload: b"7".to_vec(),
                    content_format: Some(0),
                },
            )
            .await
        }
    });
    let (req, from) = recv(&dev).await;
    assert_eq!(req.payload, b"7");
    // Empty ACK now, the response later as its own CON, sent twice.
    let mut ack = Packet::new();
    ack.header.set_type(MessageType::Acknowledgement);
    ack.header.message_id = req.header.message_id;
    dev.send_to(&ack.to_bytes().unwrap(), from).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await; // past several ACK timeouts: no resend
    let separate = reply(&req, MessageType::Confirmable, 0x7777, b"done");
    dev.send_to(&separate, from).await.unwrap();
    let (a1, _) = recv(&dev).await;
    dev.send_to(&separate, from).await.unwrap();
    let (a2, _) = recv(&dev).await;
    for a in [&a1, &a2] {
        assert_eq!(a.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(a.header.message_id, 0x7777);
    }
    let r = ask.await.unwrap().unwrap();
    assert_eq!(r.payload, b"done");
    let c = ep.counters();
    assert_eq!(c.duplicates.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        c.retransmissions.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn garbage_and_strangers_get_nothing_or_a_reset_and_the_endpoint_keeps_working() {
    let ep = endpoint().await;
    let (dev, at) = peer().await;
    let me = ep.local_addr();
    // Truncated header; a bad option delta (nibble 15 outside the payload
    // marker); a token length of 9.
    for junk in [
        &[0x40u8, 0x01][..],
        &[0x40, 0x45, 0, 1, 0xf1, 0x00],
        &[0x49, 0x45, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    ] {
        dev.send_to(junk, me).await.unwrap();
    }
    // A confirmable response to a token never sent: RST.
    let mut stranger = Packet::new();
    stranger.header.set_type(MessageType::Confirmable);
    stranger.header.code = MessageClass::Response(ResponseType::Content);
    stranger.header.message_id = 0x1234;
    stranger.set_token(vec![9, 9, 9]);
    dev.send_to(&stranger.to_bytes().unwrap(), me)
        .await
        .unwrap();
    let (rst, _) = recv(&dev).await;
    assert_eq!(
        (rst.header.get_type(), rst.header.message_id),
        (MessageType::Reset, 0x1234)
    );
    // Still answers.
    let ask = ask(&ep, at, "/ok");
    let (req, from) = recv(&dev).await;
    dev.send_to(
        &reply(
            &req,
            MessageType::Acknowledgement,
            req.header.message_id,
            b"fine",
        ),
        from,
    )
    .await
    .unwrap();
    assert_eq!(ask.await.unwrap().unwrap().payload, b"fine");
    let c = ep.counters();
    assert_eq!(c.malformed.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(c.unknown.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_reset_fails_the_request_in_words() {
    let ep = endpoint().await;
    let (dev, at) = peer().await;
    let ask = ask(&ep, at, "/x");
    let (req, from) = recv(&dev).await;
    let mut rst = Packet::new();
    rst.header.set_type(MessageType::Reset);
    rst.header.message_id = req.header.message_id;
    dev.send_to(&rst.to_bytes().unwrap(), from).await.unwrap();
    let e = ask.await.unwrap().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{at} refused the request with a reset (RST)")
    );
}

#[tokio::test]
async fn notifications_are_taken_in_observe_order_and_dropping_deregisters() {
    let ep = endpoint().await;
    let (dev, at) = peer().await;
    let obs = tokio::spawn({
        let ep = ep.clone();
        async move { ep.observe(at, "/t").await }
    });
    let (reg, from) = recv(&dev).await;
    assert_eq!(reg.get_observe_value().unwrap().unwrap(), 0);
    let notify = |n: u32, kind: MessageType, mid: u16, body: &str| {
        let mut p = Packet::from_bytes(&reply(&reg, kind, mid, body.as_bytes())).unwrap();
        p.set_observe_value(n);
        p.to_bytes().unwrap()
    };
    dev.send_to(
        &notify(5, MessageType::Acknowledgement, reg.header.message_id, "a"),
        from,
    )
    .await
    .unwrap();
    let mut o = obs.await.unwrap().unwrap();
    assert_eq!(
        (o.first.observe, o.first.payload.as_slice()),
        (Some(5), &b"a"[..])
    );
    dev.send_to(&notify(3, MessageType::NonConfirmable, 10, "stale"), from)
        .await
        .unwrap();
    dev.send_to(&notify(7, MessageType::Confirmable, 11, "b"), from)
        .await
        .unwrap();
    let (ack, _) = recv(&dev).await;
    assert_eq!(
        (ack.header.get_type(), ack.header.message_id),
        (MessageType::Acknowledgement, 11)
    );
    match tokio::time::timeout(Duration::from_secs(5), o.notices.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Notice::Notification(r) => {
            assert_eq!((r.observe, r.payload.as_slice()), (Some(7), &b"b"[..]))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ep.counters()
            .stale_notifications
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(o);
    let (dereg, _) = recv(&dev).await;
    assert_eq!(dereg.get_observe_value().unwrap().unwrap(), 1);
    assert_eq!(dereg.get_token(), reg.get_token());
    // A notification after that is refused, which ends it at the server too.
    dev.send_to(&notify(8, MessageType::NonConfirmable, 12, "late"), from)
        .await
        .unwrap();
    let (rst, _) = recv(&dev).await;
    assert_eq!(
        (rst.header.get_type(), rst.header.message_id),
        (MessageType::Reset, 12)
    );
}

/// Debian's libcoap server on a free loopback port, stopped on drop.
struct Libcoap(Child, SocketAddr);

impl Libcoap {
    fn start(extra: &[&str]) -> Libcoap {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("coap-server-notls")
            .args(["-A", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coap-server-notls (Debian's libcoap3-bin; `make deps` installs it)");
        Libcoap(child, format!("127.0.0.1:{port}").parse().unwrap())
    }
}

impl Drop for Libcoap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn until_up(ep: &Endpoint, at: SocketAddr) -> vigil_coap::Response {
    for _ in 0..50 {
        if let Ok(r) = ep.request(at, Request::get("/.well-known/core")).await {
            return r;
        }
    }
    panic!("libcoap never answered at {at}");
}

#[tokio::test]
async fn libcoap_lists_its_resources_answers_puts_and_notifies_in_order() {
    let server = Libcoap::start(&["-d", "5"]);
    let ep = endpoint().await;
    let core = until_up(&ep, server.1).await;
    assert_eq!(core.content_format, Some(40));
    let resources = vigil_coap::link::resources(&core.payload).unwrap();
    let time = resources
        .iter()
        .find(|r| r.path == "/time")
        .expect("/time listed");
    assert!(time.obs, "{resources:?}");
    // A resource made by PUT (-d), read back.
    let put = Request {
        method: Method::Put,
        path: "/made/here".into(),
        query: vec![],
        payload: b"21.5".to_vec(),
        content_format: Some(0),
    };
    let r = ep.request(server.1, put).await.unwrap();
    assert_eq!(r.code_text(), "2.01");
    let r = ep
        .request(server.1, Request::get("/made/here"))
        .await
        .unwrap();
    assert_eq!(r.payload, b"21.5");
    // /time notifies every second.
    let mut o = ep.observe(server.1, "/time").await.unwrap();
    let first = o.first.observe.expect("registered");
    let mut last = first;
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), o.notices.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Notice::Notification(n) => {
                let v = n.observe.unwrap();
                assert!(vigil_coap::observe::is_newer(
                    last,
                    std::time::Instant::now(),
                    v,
                    std::time::Instant::now()
                ));
                last = v;
            }
            other => panic!("{other:?}"),
        }
    }
    let e = ep
        .request(server.1, Request::get("/no/such"))
        .await
        .unwrap();
    assert_eq!(e.code_text(), "4.04");
}

#[tokio::test]
async fn an_observation_is_renewed_when_max_age_runs_out_without_a_notification() {
    let ep = endpoint().await;
    let (dev, at) = peer().await;
    let obs = tokio::spawn({
        let ep = ep.clone();
        async move { ep.observe(at, "/slow").await }
    });
    let (reg, from) = recv(&dev).await;
    // Registered, with Max-Age 1 s; then silence.
    let mut p = Packet::from_bytes(&reply(
        &reg,
        MessageType::Acknowledgement,
        reg.header.message_id,
        b"1",
    ))
    .unwrap();
    p.set_observe_value(2);
    p.add_option(CoapOption::MaxAge, vec![1]);
    dev.send_to(&p.to_bytes().unwrap(), from).await.unwrap();
    let mut o = obs.await.unwrap().unwrap();
    let started = std::time::Instant::now();
    // Max-Age and the grace after it (5 s) later: the same GET, Observe 0, same token.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (again, from) = recv(&dev).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    assert_eq!(again.get_observe_value().unwrap().unwrap(), 0);
    assert_eq!(again.get_token(), reg.get_token());
    assert_eq!(again.header.get_type(), MessageType::Confirmable);
    // Its answer is taken even with the same number (a server repeats its
    // current one when nothing changed).
    let mut p = Packet::from_bytes(&reply(
        &again,
        MessageType::Acknowledgement,
        again.header.message_id,
        b"2",
    ))
    .unwrap();
    p.set_observe_value(2);
    dev.send_to(&p.to_bytes().unwrap(), from).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), o.notices.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Notice::Notification(r) => assert_eq!(r.payload, b"2"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_ignores_block2_requests_is_refused_in_words() {
    let ep = endpoint().await;
    let (dev, at) = peer().await;
    let ask = ask(&ep, at, "/big");
    // Block 0 of several, twice: the second time when asked for block 1.
    for _ in 0..2 {
        let (req, from) = recv(&dev).await;
        let mut p = Packet::from_bytes(&reply(
            &req,
            MessageType::Acknowledgement,
            req.header.message_id,
            &[b'x'; 16],
        ))
        .unwrap();
        p.add_option(CoapOption::Block2, vec![0x08]); // num 0, more, 16 bytes
        dev.send_to(&p.to_bytes().unwrap(), from).await.unwrap();
    }
    let e = ask.await.unwrap().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{at} answered block 0 when asked for block 1")
    );
}

#[tokio::test]
async fn an_ack_carrying_another_tokens_response_leaves_the_request_waiting_then_timing_out() {
    let ep = endpoint().await;
    let (dev, at) = peer().await;
    let ask = ask(&ep, at, "/x");
    let (req, from) = recv(&dev).await;
    let mut wrong = Packet::new();
    wrong.header.set_type(MessageType::Acknowledgement);
    wrong.header.code = MessageClass::Response(ResponseType::Content);
    wrong.header.message_id = req.header.message_id;
    wrong.set_token(vec![1, 2, 3]);
    dev.send_to(&wrong.to_bytes().unwrap(), from).await.unwrap();
    // No hang: the separate response it implies never comes (2 s here).
    let e = tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .expect("the request ended")
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, CoapError::Timeout { .. }), "{e}");
}

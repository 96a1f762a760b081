//! Must-show 2: a VP8 keyframe sent by a client comes back from the
//! snapshot endpoint as a WebP that `image-webp` decodes to its size.

mod common;

use common::{vp8enc, wait_for, Client, ClientCmd, Node};
use proto::token::SfuRole;
use std::io::Cursor;
use std::time::Duration;

fn decode(webp: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut d = image_webp::WebPDecoder::new(Cursor::new(webp)).expect("valid WebP container");
    let (w, h) = d.dimensions();
    let mut buf = vec![0u8; d.output_buffer_size().expect("size")];
    d.read_image(&mut buf).expect("VP8 data decodes");
    (w, h, buf)
}

#[test]
fn test_encoder_makes_a_decodable_keyframe() {
    let f = vp8enc::grey_keyframe(96, 64);
    let (w, h, _) = decode(&sfu::vp8::webp_from_keyframe(&f));
    assert_eq!((w, h), (96, 64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_returns_the_sent_keyframe_as_webp() {
    let node = Node::start().await;
    node.admit("S", SfuRole::User).await;
    let r = node.get("/internal/v1/participants/S/snapshot").await;
    assert_eq!(r.status(), 404, "no keyframe yet");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "no_snapshot");

    let s = Client::connect(&node, "S", false).await;
    s.wait_connected().await;
    let frame = vp8enc::grey_keyframe(176, 144);
    // Small packets, so the depacketizer has to reassemble.
    s.cmd
        .send(ClientCmd::Frame {
            frame: frame.clone(),
            mtu: 40,
        })
        .await
        .unwrap();

    let mut webp = Vec::new();
    for _ in 0..250 {
        let r = node.get("/internal/v1/participants/S/snapshot").await;
        if r.status() == 200 {
            assert_eq!(r.headers()["content-type"], "image/webp");
            webp = r.bytes().await.unwrap().to_vec();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!webp.is_empty(), "snapshot never appeared");
    assert_eq!(&webp[0..4], b"RIFF");
    assert_eq!(&webp[8..16], b"WEBPVP8 ");
    assert_eq!(
        &webp[20..20 + frame.len()],
        &frame[..],
        "the keyframe itself, no transcoding"
    );
    let (w, h, pixels) = decode(&webp);
    assert_eq!((w, h), (176, 144));
    assert!(!pixels.is_empty());

    let list: serde_json::Value = node.get("/internal/v1/participants").await.json().await.unwrap();
    assert!(list["participants"][0]["snapshot_age_ms"].is_u64());

    // Periodic keyframe requests: off by default, on when set.
    let plis = s.state.lock().unwrap().plis;
    let r = node
        .http
        .put(format!("{}/internal/v1/keyframe-interval", node.internal))
        .bearer_auth(common::INTERNAL_TOKEN)
        .json(&serde_json::json!({"interval_ms": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wait_for("periodic PLIs", Duration::from_secs(10), || {
        s.state.lock().unwrap().plis >= plis + 2
    })
    .await;
    assert!(node.metric("duet_sfu_keyframe_requests_total", Some(("cause", "periodic"))) >= 2.0);
    s.stop().await;
    node.shutdown.cancel();
}

//! Media: uploads (direct, and reserved then uploaded), authenticated and legacy downloads,
//! real thumbnails, safe serving, limits.

use std::io::Cursor;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Server, assert_error};

pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 90])
    });
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

struct Fetched {
    status: StatusCode,
    content_type: String,
    disposition: String,
    bytes: Vec<u8>,
}

async fn fetch(server: &Server, path: &str, token: Option<&str>) -> Fetched {
    let mut request = server.http.get(format!("{}{path}", server.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, disposition) = (header("content-type"), header("content-disposition"));
    let status = response.status();
    if status.is_success() {
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    Fetched {
        status,
        content_type,
        disposition,
        bytes: response.bytes().await.unwrap().to_vec(),
    }
}

pub async fn upload(
    server: &Server,
    token: &str,
    bytes: Vec<u8>,
    content_type: &str,
    name: &str,
) -> (StatusCode, Value) {
    let response = server
        .http
        .post(format!(
            "{}/_matrix/media/v3/upload?filename={name}",
            server.base
        ))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

pub fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).expect("an image");
    (image.width(), image.height())
}

#[tokio::test]
async fn uploads_downloads_and_thumbnails() {
    let server = Server::start(&[("KITH_MEDIA__MAX_UPLOAD_SIZE", "4000000")]);
    let (_, alice) = server.user("alice").await;
    let (_, bob) = server.user("bob").await;
    let picture = png(1000, 750);
    let (status, uploaded) = upload(&server, &alice, picture.clone(), "image/png", "cat.png").await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    let uri = uploaded["content_uri"].as_str().unwrap();
    let id = uri.strip_prefix("mxc://").expect("an mxc URI");

    // Authenticated download: the same bytes, inline, with the name.
    let path = format!("/_matrix/client/v1/media/download/{id}");
    let got = fetch(&server, &path, Some(&bob)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, picture);
    assert_eq!(got.content_type, "image/png");
    assert_eq!(got.disposition, "inline; filename*=utf-8''cat.png");
    assert_eq!(
        fetch(&server, &path, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let named = fetch(&server, &format!("{path}/other%20name.png"), Some(&bob)).await;
    assert_eq!(
        named.disposition,
        "inline; filename*=utf-8''other%20name.png"
    );
    // The legacy route, for older clients, needs no token.
    let legacy = fetch(&server, &format!("/_matrix/media/v3/download/{id}"), None).await;
    assert_eq!(
        (legacy.status, legacy.bytes.len()),
        (StatusCode::OK, picture.len())
    );

    // Thumbnails come in the spec's recommended sizes, the smallest covering the request:
    // cropped to fill, scaled to fit, never enlarged (past the largest, the original).
    let thumb = |query: &str| format!("/_matrix/client/v1/media/thumbnail/{id}?{query}");
    let sized = |query: &'static str| {
        let (server, bob, path) = (&server, bob.clone(), thumb(query));
        async move {
            let got = fetch(server, &path, Some(&bob)).await;
            assert_eq!(got.status, StatusCode::OK, "{query}");
            (dimensions(&got.bytes), got)
        }
    };
    let ((w, h), crop) = sized("width=32&height=32&method=crop").await;
    assert_eq!(
        ((w, h), crop.content_type.as_str()),
        ((32, 32), "image/png")
    );
    assert_eq!(sized("width=50&height=50&method=crop").await.0, (96, 96));
    assert_eq!(sized("width=32&height=32&method=scale").await.0, (320, 240));
    assert_eq!(
        sized("width=700&height=500&method=scale").await.0,
        (800, 600)
    );
    let (size, original) = sized("width=2000&height=2000&method=scale").await;
    assert_eq!((size, original.bytes == picture), ((1000, 750), true));
    let (_, again) = sized("width=32&height=32&method=crop").await;
    assert_eq!(again.bytes, crop.bytes, "made once, kept");
    let legacy = fetch(
        &server,
        &format!("/_matrix/media/v3/thumbnail/{id}?width=32&height=32"),
        None,
    )
    .await;
    assert_eq!(dimensions(&legacy.bytes), (320, 240));

    // A page someone uploads is never served as one.
    let (_, page) = upload(
        &server,
        &alice,
        b"<script>alert(1)</script>".to_vec(),
        "text/html",
        "x.html",
    )
    .await;
    let page_id = page["content_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://");
    let got = fetch(
        &server,
        &format!("/_matrix/client/v1/media/download/{page_id}"),
        Some(&bob),
    )
    .await;
    assert!(
        got.disposition.starts_with("attachment"),
        "{}",
        got.disposition
    );
    let result = server
        .get(
            &format!("/_matrix/client/v1/media/thumbnail/{page_id}?width=32&height=32"),
            Some(&bob),
        )
        .await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_UNKNOWN");

    // Limits, unknown media, bad parameters.
    let path = "/_matrix/client/v1/media/download/kith.test/nothing";
    let result = server.get(path, Some(&bob)).await;
    assert_error(&result, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Another server's media is asked of it; one that cannot be reached is 502, as Synapse.
    let path = "/_matrix/client/v1/media/download/elsewhere.invalid/abc";
    let result = server.get(path, Some(&bob)).await;
    assert_error(&result, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    let result = server.get(&thumb("width=0&height=32"), Some(&bob)).await;
    assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let result = server.get(&thumb("height=32"), Some(&bob)).await;
    assert_eq!(result.0, StatusCode::BAD_REQUEST, "{}", result.1);

    // The same bytes uploaded again are kept once on disk: the picture, the page and four
    // thumbnails (32 and 96 cropped, 320x240 and 800x600 scaled).
    let (_, twice) = upload(&server, &bob, picture.clone(), "image/png", "same.png").await;
    assert_ne!(twice["content_uri"], uploaded["content_uri"]);
    let files = walk(&server.data.join("media"));
    assert_eq!(files, 6, "content-addressed files");
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() { walk(&path) } else { 1 }
        })
        .sum()
}

#[tokio::test]
async fn reserved_ids_are_uploaded_once_by_their_maker() {
    let server = Server::start(&[("KITH_MEDIA__MAX_UPLOAD_SIZE", "2048")]);
    let (_, alice) = server.user("alice").await;
    let (_, bob) = server.user("bob").await;
    // Past the configured size: 413, as the config endpoint says.
    let (status, too_big) = upload(
        &server,
        &alice,
        vec![0; 2049],
        "application/octet-stream",
        "big",
    )
    .await;
    assert_eq!(
        (status, &too_big["errcode"]),
        (StatusCode::PAYLOAD_TOO_LARGE, &json!("M_TOO_LARGE"))
    );
    let (_, config) = server
        .get("/_matrix/client/v1/media/config", Some(&bob))
        .await;
    assert_eq!(config["m.upload.size"], 2048);

    let (status, created) = server
        .post("/_matrix/media/v1/create", Some(&alice), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert!(created["unused_expires_at"].is_u64());
    let id = created["content_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://")
        .to_owned();
    let download = format!("/_matrix/client/v1/media/download/{id}");
    let result = server.get(&download, Some(&bob)).await;
    assert_error(&result, StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED");

    let put = |token: &str, body: &'static [u8]| {
        let request = server
            .http
            .put(format!("{}/_matrix/media/v3/upload/{id}", server.base))
            .bearer_auth(token.to_owned())
            .header("content-type", "text/plain")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    assert_error(
        &put(&bob, b"mine now").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(put(&alice, b"hello").await.0, StatusCode::OK);
    assert_error(
        &put(&alice, b"again").await,
        StatusCode::CONFLICT,
        "M_CANNOT_OVERWRITE_MEDIA",
    );
    let got = fetch(&server, &download, Some(&bob)).await;
    assert_eq!(
        (got.bytes.as_slice(), got.content_type.as_str()),
        (&b"hello"[..], "text/plain")
    );
    let unknown = format!("{}/_matrix/media/v3/upload/kith.test/unknown", server.base);
    let response = server
        .http
        .request(Method::PUT, unknown)
        .bearer_auth(&alice)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// A user can make kith fetch only so many files from other servers (`[rate_limits]
/// remote_media`, here 2): then 429, for that user only; what is here is served as ever.
#[tokio::test]
async fn remote_fetches_are_limited_per_user() {
    let server = Server::start(&[("KITH_RATE_LIMITS__REMOTE_MEDIA__BURST", "2")]);
    let (_, alice) = server.user("alice").await;
    let (_, bob) = server.user("bob").await;
    let remote = |n: u32| format!("/_matrix/client/v1/media/download/elsewhere.invalid/file{n}");
    for n in 0..2 {
        let result = server.get(&remote(n), Some(&alice)).await;
        assert_error(&result, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    }
    let limited = server.get(&remote(2), Some(&alice)).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let thumbnail = "/_matrix/client/v1/media/thumbnail/elsewhere.invalid/file3?width=32&height=32";
    let limited = server.get(thumbnail, Some(&alice)).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let other = server.get(&remote(4), Some(&bob)).await;
    assert_error(&other, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    let (status, uploaded) = upload(&server, &alice, png(8, 8), "image/png", "a.png").await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    let local = uploaded["content_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://");
    let response = server
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{local}",
            server.base
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "this server's own media is not counted"
    );
}

/// Every file under a media directory (`<sha256 prefix>/<sha256>`).
fn media_files(server: &Server) -> Vec<String> {
    let dir = server.data.join("media");
    let Ok(prefixes) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    prefixes
        .flatten()
        .flat_map(|prefix| {
            std::fs::read_dir(prefix.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|file| file.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect()
}

/// `[media] remote_retention` (here about 4 s): a file fetched from another server is
/// forgotten, on disk too, once older than that; this server's own uploads stay; asked
/// for again, the remote file is fetched again.
#[tokio::test]
async fn remote_media_is_purged_after_its_retention_and_fetched_again() {
    let (a, _) = Server::federated(&[]);
    let (b, _) = Server::federated(&[("KITH_MEDIA__REMOTE_RETENTION", "0.00005")]);
    let (_, alice) = a.user("alice").await;
    let (_, bob) = b.user("bob").await;
    let remote_bytes = png(16, 16);
    let (status, uploaded) = upload(&a, &alice, remote_bytes.clone(), "image/png", "r.png").await;
    assert_eq!(status, StatusCode::OK, "{uploaded}");
    let remote = uploaded["content_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://")
        .to_owned();
    let (status, own) = upload(&b, &bob, png(24, 24), "image/png", "own.png").await;
    assert_eq!(status, StatusCode::OK, "{own}");
    let path = format!("/_matrix/client/v1/media/download/{remote}");

    let got = fetch(&b, &path, Some(&bob)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, remote_bytes);
    assert_eq!(
        media_files(&b).len(),
        2,
        "bob's upload and the fetched file"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while media_files(&b).len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the fetched file was never purged"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(b.log().contains("purged remote media"), "{}", b.log());
    let own = own["content_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://");
    let kept = fetch(
        &b,
        &format!("/_matrix/client/v1/media/download/{own}"),
        Some(&bob),
    )
    .await;
    assert_eq!(
        kept.status,
        StatusCode::OK,
        "this server's own upload stays"
    );

    let again = fetch(&b, &path, Some(&bob)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.bytes, remote_bytes, "fetched again from its server");
}

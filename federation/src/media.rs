//! The multipart form of federation media answers (`/_matrix/federation/v1/media/...`):
//! a JSON part (metadata, `{}` for now) and then the file itself, each with its headers.

/// A media answer: its `Content-Type` header and its body.
pub fn encode_multipart(content_type: &str, bytes: &[u8], boundary: &str) -> (String, Vec<u8>) {
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n").as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/mixed; boundary={boundary}"), body)
}

/// The longest boundary RFC 2046 allows; a longer one is not a multipart body.
const MAX_BOUNDARY: usize = 70;

/// The file part of a media answer: its content type and bytes. `None` if the answer is
/// not such a multipart body (or redirects elsewhere, which is not followed). The body
/// is searched in linear time, whatever boundary another server chose.
pub fn decode_multipart(content_type: &str, body: &[u8]) -> Option<(Option<String>, Vec<u8>)> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    let boundary = params.split(';').find_map(|p| {
        let (name, value) = p.trim().split_once('=')?;
        name.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"').to_owned())
    })?;
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let mut parts = split(body, delimiter.as_bytes()).into_iter().skip(1);
    let _metadata = parts.next()?;
    let file = parts.next()?;
    // Each part: CRLF, headers, a blank line, the content, then the CRLF before the next
    // delimiter.
    let file = file.strip_prefix(b"\r\n").unwrap_or(file);
    let split_at = find(file, b"\r\n\r\n")?;
    let headers = std::str::from_utf8(&file[..split_at]).ok()?;
    let mut content = &file[split_at + 4..];
    content = content.strip_suffix(b"\r\n").unwrap_or(content);
    let mut file_type = None;
    for line in headers.split("\r\n") {
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("location") {
            return None;
        }
        if name.trim().eq_ignore_ascii_case("content-type") {
            file_type = Some(value.trim().to_owned());
        }
    }
    Some((file_type, content.to_vec()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// The body cut at its first three delimiters: the preamble, the metadata part, the file
/// part, and the uncut rest (the closing delimiter onwards).
fn split<'a>(body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let finder = memchr::memmem::Finder::new(delimiter);
    let mut parts = Vec::new();
    let mut rest = body;
    while parts.len() < 3
        && let Some(at) = finder.find(rest)
    {
        parts.push(&rest[..at]);
        rest = &rest[at + delimiter.len()..];
    }
    parts.push(rest);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_survives_the_round_trip_even_with_crlf_inside() {
        let bytes = b"\r\n\x89PNG\r\n--not-the-boundary\r\n\x00\xff".to_vec();
        let (content_type, body) = encode_multipart("image/png", &bytes, "b0undary");
        let (kind, decoded) = decode_multipart(&content_type, &body).unwrap();
        assert_eq!(kind.as_deref(), Some("image/png"));
        assert_eq!(decoded, bytes);
        assert!(decode_multipart("application/json", &body).is_none());
        let redirect = b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: https://x/y\r\n\r\n\r\n--b--";
        assert!(decode_multipart("multipart/mixed; boundary=b", redirect).is_none());
    }

    /// A boundary longer than RFC 2046's 70 characters is refused before any search; a
    /// 70-character one that almost matches everywhere is searched in linear time.
    #[test]
    fn hostile_boundaries_are_refused_or_searched_linearly() {
        let long = "a".repeat(71);
        let (content_type, body) = encode_multipart("text/plain", b"hi", &long);
        assert!(decode_multipart(&content_type, &body).is_none());
        let near_miss = format!("{}b", "a".repeat(69));
        let (content_type, _) = encode_multipart("text/plain", b"hi", &near_miss);
        let body = vec![b'a'; 8 << 20];
        assert!(decode_multipart(&content_type, &body).is_none());
        let (content_type, body) = encode_multipart("text/plain", b"hi", &near_miss);
        let (_, decoded) = decode_multipart(&content_type, &body).unwrap();
        assert_eq!(decoded, b"hi");
    }
}

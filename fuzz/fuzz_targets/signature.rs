//! `SignatureVerifier::sipgate().verify(body, Some(signature))` on arbitrary
//! bodies and headers, and on the two real signed sipgate pushes with the
//! body or the header changed. Never panics; accepts exactly the signatures
//! sipgate made (a header that decodes to a real vector's signature, with
//! that vector's body) and refuses everything else.

#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use sipgate_sidecar::sipgate::signature::{SignatureError, SignatureVerifier};

const VECTORS: [(&[u8], &str); 2] = [
    (
        include_bytes!("../../tests/fixtures/sipgate-vector-1.body"),
        include_str!("../../tests/fixtures/sipgate-vector-1.sig"),
    ),
    (
        include_bytes!("../../tests/fixtures/sipgate-vector-2.body"),
        include_str!("../../tests/fixtures/sipgate-vector-2.sig"),
    ),
];

static VERIFIER: LazyLock<SignatureVerifier> = LazyLock::new(SignatureVerifier::sipgate);

static SIGNATURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    VECTORS
        .iter()
        .map(|(_, sig)| {
            base64::engine::general_purpose::STANDARD
                .decode(sig.trim())
                .expect("the fixture signatures are base64")
        })
        .collect()
});

/// The first byte picks the case, the rest is its data (so the seeds stay
/// readable files):
/// - 0: anything at all: the body, a NUL, the header (after the last NUL);
/// - 1: a real body (second byte picks which) with the rest as the header;
/// - 2: a real header (second byte picks which) with the rest as the body;
/// - 3: a real pair (second byte picks which) with bits flipped: each further
///   3 bytes are a position (its top bit: in the body or the signature) and
///   a mask.
fn case(data: &[u8]) -> Option<(Vec<u8>, String)> {
    let (&mode, rest) = data.split_first()?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Some(match mode % 4 {
        0 => match rest.iter().rposition(|b| *b == 0) {
            Some(nul) => (rest[..nul].to_vec(), text(&rest[nul + 1..])),
            None => (rest.to_vec(), String::new()),
        },
        mode => {
            let (&which, rest) = rest.split_first()?;
            let (body, header) = VECTORS[usize::from(which & 1)];
            match mode {
                1 => (body.to_vec(), text(rest)),
                2 => (rest.to_vec(), header.to_string()),
                _ => {
                    let mut body = body.to_vec();
                    let mut signature = SIGNATURES[usize::from(which & 1)].clone();
                    for flip in rest.chunks_exact(3) {
                        let at = usize::from(u16::from_be_bytes([flip[0], flip[1]]));
                        let bytes = if at & 0x8000 == 0 {
                            &mut body
                        } else {
                            &mut signature
                        };
                        let len = bytes.len();
                        bytes[(at & 0x7fff) % len] ^= flip[2];
                    }
                    let header = base64::engine::general_purpose::STANDARD.encode(signature);
                    (body, header)
                }
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((body, header)) = case(data) else {
        return;
    };
    let result = VERIFIER.verify(&body, Some(&header));
    let decoded = base64::engine::general_purpose::STANDARD.decode(header.trim());
    let genuine = decoded.as_ref().is_ok_and(|signature| {
        VECTORS
            .iter()
            .zip(SIGNATURES.iter())
            .any(|((real_body, _), real_signature)| {
                body == *real_body && signature == real_signature
            })
    });
    match result {
        Ok(()) => assert!(genuine, "accepted a signature sipgate did not make"),
        Err(SignatureError::Missing) => assert!(header.trim().is_empty()),
        Err(SignatureError::Malformed) => assert!(decoded.is_err()),
        Err(SignatureError::Invalid) => {
            assert!(decoded.is_ok() && !genuine, "refused a real signature")
        }
        Err(SignatureError::BadKey(_)) => panic!("the built-in key is fixed"),
    }
});

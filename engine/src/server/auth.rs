//! Client tokens: who may use a connection, and whether it may write.
//!
//! The config lists named clients (`[[clients]]`), each with the SHA-256 of its token
//! (`token_sha256`, 64 hex digits) and a `read_only` flag. The daemon never holds a token,
//! only hashes: a copy of the config file lets no one in. A client shows its token in the
//! handshake (`docs/PROTOCOL.md` §3); [`ClientAuth::authenticate`] hashes it and compares
//! the hash with every configured one in constant time, so the time taken says nothing
//! about which bytes matched or which client it was.
//!
//! With no client configured, no token is needed and one that is sent is ignored: every
//! connection may read and write, as before tokens existed.
//!
//! `settled token` makes a token with [`new_token`] and prints the config lines for it.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a token made by [`new_token`]: 256 bits, beyond any guessing.
pub const TOKEN_RANDOM_BYTES: usize = 32;

/// One configured client, its hash decoded.
#[derive(Clone, Debug)]
struct Authorized {
    name: Arc<str>,
    token_sha256: [u8; 32],
    read_only: bool,
}

/// Who a connection authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The configured client's name; `None` when the server requires no token.
    pub name: Option<Arc<str>>,
    /// Creates are answered `forbidden`.
    pub read_only: bool,
}

impl Identity {
    /// A connection on a server that lists no clients: may do everything.
    pub fn anonymous() -> Identity {
        Identity {
            name: None,
            read_only: false,
        }
    }
}

/// Why a handshake's token was refused (the message of the `unauthorized` Error frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The handshake carried no token.
    Missing,
    /// The token's hash matches no configured client.
    Unknown,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::Missing => {
                "unauthorized: this server requires a client token in the handshake"
            }
            Refused::Unknown => "unauthorized: the token matches no configured client",
        }
    }
}

/// The configured clients, ready to check tokens against.
#[derive(Clone, Debug, Default)]
pub struct ClientAuth {
    clients: Vec<Authorized>,
}

impl ClientAuth {
    /// `clients`: (name, SHA-256 of the token, read_only), already validated by the config.
    pub fn new(clients: impl IntoIterator<Item = (String, [u8; 32], bool)>) -> ClientAuth {
        let clients = clients
            .into_iter()
            .map(|(name, token_sha256, read_only)| Authorized {
                name: name.into(),
                token_sha256,
                read_only,
            })
            .collect();
        ClientAuth { clients }
    }

    /// Whether a handshake must carry a token.
    pub fn is_required(&self) -> bool {
        !self.clients.is_empty()
    }

    /// The identity `token` proves, or why it proves none.
    pub fn authenticate(&self, token: Option<&[u8]>) -> Result<Identity, Refused> {
        if !self.is_required() {
            return Ok(Identity::anonymous());
        }
        let hash = token_sha256(token.ok_or(Refused::Missing)?);
        // Every entry is compared, whatever matched before: the time taken is the same for
        // every token. Config validation refuses two clients with one hash.
        let mut found = None;
        for client in &self.clients {
            if bool::from(client.token_sha256.ct_eq(&hash)) {
                found = Some(client);
            }
        }
        let client = found.ok_or(Refused::Unknown)?;
        Ok(Identity {
            name: Some(Arc::clone(&client.name)),
            read_only: client.read_only,
        })
    }
}

/// SHA-256 of the token's bytes as sent in the handshake.
pub fn token_sha256(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// A new token: [`TOKEN_RANDOM_BYTES`] from the operating system's random source, in
/// lowercase hex (64 characters, sent as those ASCII bytes).
pub fn new_token() -> Result<String, rand::rand_core::OsError> {
    use rand::TryRngCore;
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
    Ok(hex(&bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The 32 bytes written as exactly 64 hex digits (either case), or `None`.
pub fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        // Both digits are below 16, so the byte cannot overflow.
        *byte = (high * 16 + low) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> ClientAuth {
        ClientAuth::new([
            ("payouts".to_string(), token_sha256(b"payouts-token"), false),
            ("reports".to_string(), token_sha256(b"reports-token"), true),
        ])
    }

    #[test]
    fn without_clients_every_connection_may_do_everything() {
        let open = ClientAuth::default();
        assert!(!open.is_required());
        assert_eq!(open.authenticate(None), Ok(Identity::anonymous()));
        assert_eq!(
            open.authenticate(Some(b"ignored")),
            Ok(Identity::anonymous())
        );
    }

    #[test]
    fn a_token_proves_its_client_and_nothing_else() {
        let auth = auth();
        assert!(auth.is_required());
        let payouts = auth.authenticate(Some(b"payouts-token")).unwrap();
        assert_eq!(
            (payouts.name.as_deref(), payouts.read_only),
            (Some("payouts"), false)
        );
        let reports = auth.authenticate(Some(b"reports-token")).unwrap();
        assert_eq!(
            (reports.name.as_deref(), reports.read_only),
            (Some("reports"), true)
        );
        assert_eq!(auth.authenticate(None), Err(Refused::Missing));
        assert_eq!(
            auth.authenticate(Some(b"payouts-token ")),
            Err(Refused::Unknown)
        );
        assert_eq!(auth.authenticate(Some(b"")), Err(Refused::Unknown));
    }

    #[test]
    fn hashes_are_written_and_read_as_64_hex_digits() {
        // SHA-256 of "abc", FIPS 180-2's first example.
        let hash = token_sha256(b"abc");
        let text = hex(&hash);
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_sha256_hex(&text), Some(hash));
        assert_eq!(parse_sha256_hex(&text.to_uppercase()), Some(hash));
        assert_eq!(parse_sha256_hex(&text[..62]), None);
        assert_eq!(parse_sha256_hex(&format!("{}zz", &text[..62])), None);
        assert_eq!(parse_sha256_hex(&format!("{}é", &text[..62])), None);
    }

    #[test]
    fn new_tokens_are_64_hex_digits_and_differ() {
        let first = new_token().unwrap();
        let second = new_token().unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }
}
